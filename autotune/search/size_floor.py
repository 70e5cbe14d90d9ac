"""The fewest parameters a model of a search space can have, and the refusal of a
``--max-params`` budget below it: every trial would be over such a budget, so the search would
run its analysis and all its trials to export nothing. A ``--max-macs`` or ``--pareto macs``
is checked at the same point (``check_macs_budget``), before the study is stored.

The exact minimum depends on the rankings (a global ranking may leave one layer a single channel
and another most of its own) and on how torch-pruning rounds each layer (a small layer asked to
lose nearly all its channels loses none), so the floor is a bound no trial can go under instead:
a copy of the model loses some of everything the space may remove (input features, channels of
each prunable layer, heads of each attention module, a transformer's width), and each dimension
of a parameter counts as one unit where that copy shortened it (none where it kept none) and in
full where it did not.
What no pruning step touches (the classifier's outputs, layers the space never prunes, kernel
sizes) is so counted in full.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from autotune.budget_text import check_constrains
from autotune.config import MAX_RATIO, SearchSettings
from autotune.errors import AutotuneError
from autotune.load.anatomy import copy_model
from autotune.load.architecture import OWN_NETWORK
from autotune.load.job import Job
from autotune.rank.gates import Site, sites
from autotune.search.prepare import job_sites
from autotune.search.space import SearchSpace
from autotune.search.values import RATIOS
from autotune.trial.cost import count_macs, parse_budget
from autotune.trial.prune import drop_features, prune, prune_width


@dataclass(frozen=True)
class Floor:
    """A lower bound of the parameters of every model a space builds from a source model."""

    params: int
    exact: bool
    """The space removes nothing from this model: every model it builds has ``params``."""


def check_params_budget(
    settings: SearchSettings, job: Job, space: SearchSpace, say: Callable[[str], object] = print
) -> None:
    """Refuse ``settings.max_params`` before the analysis when it allows no parameter (a share
    of the source that comes to less than one), less than ``smallest_params``, or all of the
    source (``check_constrains``); ``space`` is
    the space as the model takes it (``prepare.adapt_space``). A budget above that bound but
    under what pruning every layer by the space's highest ratio leaves gets a note (``say``):
    only a global ranking can then meet it, if any trial does."""
    if settings.max_params is None:
        return
    module, text = job.model.module, settings.max_params
    source = sum(p.numel() for p in module.parameters())
    limit = parse_budget(text, source, "params")
    check_constrains(text, "params", source)
    example, found = job.data.x_val[:2].cpu(), None if removes_nothing(space) else job_sites(job)
    floor = smallest_params(module, space, example, found)
    if floor is None or floor.params <= limit:
        left = pruned_by_highest(module, space, example, found)
        if left is not None and left > limit:
            say(
                f"note: pruning every layer by the space's highest ratio leaves {left:,} "
                f"parameters ({left / source:.1%} of the source), over --max-params {text!r} "
                f"({limit:,}): only trials that rank the channels globally can go under it, "
                "and maybe none does (the search then exports nothing); allow more, or a "
                "higher prune in a space file (docs/search-space.md)"
            )
        return
    allows = f"--max-params {text!r} allows {limit:,} parameters"
    if floor.exact:
        raise AutotuneError(
            f"{allows}, but the search space removes nothing from this model, so every model "
            f"it builds has the source's {source:,}: raise --max-params, or search a space "
            "that prunes"
        )
    raise AutotuneError(
        f"{allows}, fewer than the smallest model this space can build has (at least "
        f"{floor.params:,} of the source's {source:,}, which no pruning step removes): raise "
        "--max-params (a share of the source is written 0.1 or 10%)"
    )


def check_macs_budget(settings: SearchSettings, job: Job, space: SearchSpace) -> int | None:
    """Refuse ``--max-macs`` or ``--pareto macs`` before the analysis where the source's MACs
    cannot be counted (a TorchScript or torch.export program), and a ``--max-macs`` that allows
    no MAC, all of the source's (``check_constrains``) or, for a space that removes nothing,
    fewer than the source has. Returns the source's MACs where either option asks for them,
    else None: the search measures the source with this count rather than count again.

    A space that prunes gets no floor here: the op counter applies each module kind's own
    formula (output positions, an attention's inner width), which the weights' shapes the
    params floor reads do not bound for every kind."""
    if settings.max_macs is None and settings.pareto != "macs":
        return None
    macs = count_macs(job.model.module, job.data.x_val)
    if macs is None:
        kind = OWN_NETWORK.get(job.model.format, "this model")
        why = f"does not apply to model {job.model.path!r} (the MACs of {kind} cannot be counted)"
        if settings.max_macs is None:
            raise AutotuneError(f"--pareto macs {why}: use --pareto params")
        raise AutotuneError(
            f"--max-macs {settings.max_macs!r} {why}: drop --max-macs, or bound the parameters "
            "with --max-params"
        )
    if settings.max_macs is None:
        return macs
    limit = parse_budget(settings.max_macs, macs, "macs")
    check_constrains(settings.max_macs, "macs", macs)
    if limit < macs and removes_nothing(space):
        # What trials do without removing units (dropout, training) leaves the count as it is.
        raise AutotuneError(
            f"--max-macs {settings.max_macs!r} allows {limit:,} MACs, but the search space "
            f"removes nothing from this model, so every model it builds has the source's "
            f"{macs:,}: raise --max-macs, or search a space that prunes"
        )
    return macs


def removes_nothing(space: SearchSpace) -> bool:
    """Whether no trial of ``space`` removes a unit (a channel, a head, an input feature)."""
    return not any(space.may_be_nonzero(name) for name in RATIOS)


def smallest_params(
    module: nn.Module, space: SearchSpace, example: torch.Tensor, found: list[Site] | None = None
) -> Floor | None:
    """A bound no model of ``space`` goes under (see the module's docstring); None when the
    copy cannot be cut down, which the trials that prune then fail on and say why. ``found``:
    the model's sites on ``example``, where they were traced already (``prepare.job_sites``)."""
    source = dict(module.named_parameters())
    total = sum(p.numel() for p in source.values())
    if removes_nothing(space):
        return Floor(total, exact=True)
    try:
        probe = dict(_probe(module, space, example, found).named_parameters())
    except Exception:  # torch-pruning fails on some models: a trial says why, as it always has
        return None
    floor = 0
    for name, param in source.items():
        cut = probe.get(name)
        if cut is None or cut.ndim != param.ndim:
            continue  # gone, or reshaped: no bound to read off it
        # A dimension the probe shortened may keep as little as one unit in some trial (a
        # channel, a head's width, an input feature), never less; none where the probe kept none.
        floor += math.prod(
            d if d == c else min(c, 1) for d, c in zip(param.shape, cut.shape, strict=True)
        )
    return Floor(floor, exact=floor == total)


def pruned_by_highest(
    module: nn.Module, space: SearchSpace, example: torch.Tensor, found: list[Site] | None = None
) -> int | None:
    """The parameters left when every prunable layer (and attention module) loses the space's
    highest ``prune`` ratio, as a trial with ``prune_scope: layer`` at that ratio builds it,
    whatever the rankings (and a transformer's width its highest ``prune_width``); None where
    the space's trials remove units otherwise (per-layer ratios, input features) or the copy
    cannot be cut down. ``found``: as ``smallest_params`` takes it."""
    others = ("prune_layers", "drop_features")
    if not space.may_be_nonzero("prune") or any(map(space.may_be_nonzero, others)):
        return None
    model = copy_model(module).cpu()
    try:
        found = sites(module, example) if found is None else found
        _prune_evenly(model, found, example, highest(space, "prune"), highest(space, "prune_width"))
    except Exception:  # torch-pruning fails on some models: a trial says why, as it always has
        return None
    return sum(p.numel() for p in model.parameters())


def highest(space: SearchSpace, name: str) -> float:
    """The largest fraction ``name`` takes in ``space`` (0 where it is absent)."""
    param = space.params.get(name)
    if param is None or not space.may_be_nonzero(name):
        return 0.0
    values = (param.high,) if param.low is not None else space.values_of(name)
    return min(max(float(v) for v in values if isinstance(v, (int, float))), MAX_RATIO)


def _probe(
    module: nn.Module, space: SearchSpace, example: torch.Tensor, found: list[Site] | None
) -> nn.Module:
    """A copy of ``module`` that lost the most input features a trial drops (where the space
    drops them) and half of each prunable layer's channels and heads (where it prunes): every
    dimension any trial can shorten is shorter here, since a layer of two units or more loses
    one at half, and as short as any trial makes it where that is no unit at all."""
    found = sites(module, example) if found is None else found
    model = copy_model(module).cpu()
    if space.may_be_nonzero("drop_features"):
        count = example.shape[1]
        keep = list(range(round(MAX_RATIO * count), count))  # as ``trial.build`` caps it
        drop_features(model, keep, example)
        example = example[:, keep]
    channels = space.may_be_nonzero("prune") or space.may_be_nonzero("prune_layers")
    _prune_evenly(model, found, example, 0.5 * channels, 0.5 * space.may_be_nonzero("prune_width"))
    return model


def _prune_evenly(
    model: nn.Module, found: list[Site], example: torch.Tensor, ratio: float, width: float = 0.0
) -> None:
    """Prune ``ratio`` of every prunable site's channels (heads) in ``model``, and ``width`` of
    each residual stream's, in place: with equal scores, what a layer loses does not depend on
    any ranking."""
    scores = {s.layer: np.zeros(s.channels) for s in found if s.prunable and not s.width}
    if ratio > 0:
        prune(model, scores, example, ratio=ratio)
    if width > 0:
        streams = {s.layer: np.zeros(s.channels) for s in found if s.width}
        prune_width(model, streams, example, width)
