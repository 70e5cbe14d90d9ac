"""A staged search: first tune the fine-tuning on the full model, then slim the best of it.

Stage 1 ("tune", the first half of the trials, or of the time when ``--timeout`` runs out
first) samples only the fine-tuning parameters (learning rate, optimizer, batch size, loss,
dropout, which layers train) on the full-size model, starting with the standard recipe.
Stage 2 ("slim") takes the best stage-1 model as trained (the adapted model, for which the
user's data is now in-domain), ranks its units on that data, and samples only how far down
those rankings to remove (pruning, feature dropping) before fine-tuning the slimmed copy with
the parent's own hyperparameters. When the space offers a distillation loss,
stage 2 samples the loss again as well: a slimmed child may then learn from its parent, the
full-size model it was cut from (the teacher of a stage-2 trial is its parent).

Why: rankings computed on the source model, which is mostly wrong on the new data, paid off less
than rankings of the adapted model (issue measurements in BENCHMARKS.md), and in one joint space
the slimming trials drag the fine-tuning hyperparameters around.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field

import optuna
from optuna.trial import FrozenTrial, TrialState
from torch import nn

from autotune.config import SearchSettings, TrialConfig, sign
from autotune.load.job import Job
from autotune.rank.analysis import Analysis
from autotune.search.prepare import run_analyses
from autotune.search.record import TrialRecord
from autotune.search.selection import OUT_OF_REACH, reach_floor, standard_error
from autotune.search.space import SearchSpace
from autotune.search.study import rank_key, ranked_trials, warmup_epochs
from autotune.trial.losses import DISTILLATION
from autotune.trial.maker import TrialMaker

SLIMMING = ("prune", "prune_scope", "prune_layers", "prune_width", "drop_features", "importance")
"""Space parameters that remove parts of the model: sampled in stage 2 only."""
LOSS_PARAMS = ("loss", "label_smoothing", "focal_gamma", "distill_weight", "distill_temperature")
"""Re-sampled in stage 2 when the space offers distillation (``distils``)."""
LR_SCALE = ("lr_scale", 0.1, 3.0)
"""Stage 2 samples its learning rate as the parent's times this factor (log scale) when the
space tunes the learning rate: a slimmed copy of an adapted model wants its own step size, and
the parent's was chosen for training from the source model."""
PARENT = "parent"
"""User attribute of a stage-2 trial: the number of the stage-1 trial it slimmed."""
NEAR_COPY = 0.95
"""A stage-2 child that keeps this share of its parent's parameters or more is not trained: it
is its parent trained on at nearly its size, and as the top trial its score raises the band
the export picks the smallest model from (``bench/stage_two_children.py``: exported in 1 of 26
recorded searches, at 99% of the source; up to a third of a search's stage-2 epochs)."""


def is_staged(space: SearchSpace) -> bool:
    """Whether the space both tunes and slims, so that the two stages apply."""
    slims = any(
        space.may_be_nonzero(n) for n in ("prune", "prune_layers", "prune_width", "drop_features")
    )
    fixed = space.fixed_values()
    tunes = any(n not in SLIMMING and n not in fixed for n in space.params)
    return slims and tunes


def tuning_space(space: SearchSpace) -> SearchSpace:
    """Stage 1's space: everything but the slimming parameters (which stay at zero)."""
    return space.without(*SLIMMING)


def distils(space: SearchSpace) -> bool:
    """Whether the space offers a loss that learns from a teacher."""
    return any(v in DISTILLATION for v in space.values_of("loss"))


def stage_two_params(space: SearchSpace) -> tuple[str, ...]:
    """What stage 2 samples: the slimming, and the loss when the space offers distillation."""
    return SLIMMING + (LOSS_PARAMS if distils(space) else ())


def slimming_space(space: SearchSpace) -> SearchSpace:
    """Stage 2's space: only the slimming parameters (and the loss: ``stage_two_params``)."""
    kept = stage_two_params(space)
    return space.without(*(n for n in space.params if n not in kept))


def tuning_trials(settings: SearchSettings) -> int:
    """How many trials stage 1 has: the first half of the study (the baseline not counted)."""
    return math.ceil(settings.trials / 2)


def judged_trials(space: SearchSpace, settings: SearchSettings) -> int | None:
    """How many trials the study's pruner judges: in a staged search stage 1's (stage 2's
    children are judged by ``OutOfReach`` instead); all (None) otherwise."""
    return tuning_trials(settings) if is_staged(space) else None


STAGE_TWO_FROM = "stage_two_from"
"""Study attribute: the first trial that ``--timeout`` moved into stage 2 (``Objective``)."""


@dataclass
class HalfTime:
    """With ``--timeout``, the trial from which stage 2 began because half of this worker's
    time had passed: a search that runs out of time before its trial count must still slim
    (the split by count alone would leave it full size). Kept in the study, so that every
    worker and every rerun continues in stage 2."""

    timeout: float | None
    began: float = field(default_factory=time.monotonic)
    known: int | None = None

    def first(self, trial: optuna.Trial) -> int | None:
        """The first trial of stage 2 by time, if there is one yet."""
        if self.timeout is None:
            return None  # no storage read on the common path
        if self.known is None:
            self.known = trial.study.user_attrs.get(STAGE_TWO_FROM)
        if self.known is None and time.monotonic() - self.began >= self.timeout / 2:
            trial.study.set_user_attr(STAGE_TWO_FROM, trial.number)
            self.known = trial.number
        return self.known


def stage_of(
    number: int, settings: SearchSettings, staged: bool, switched: int | None = None
) -> int:
    """1 or 2: the stage of trial ``number`` (trial 0 is the baseline): 2 after the first half
    of the trials, or from trial ``switched`` on when half the time ran out first."""
    if not staged:
        return 1
    by_time = switched is not None and number >= switched
    return 2 if number > tuning_trials(settings) or by_time else 1


@dataclass
class OutOfReach:
    """Stage 2's pruning. The median pruner judges stage-1 curves, which start from the source
    model; a child starts from its adapted parent, so it is judged against what the export
    picks from instead: once past ``warmup`` epochs, a child whose best so far is below
    ``floor`` (``selection.reach_floor``) stops.

    When the top trial is itself a child (its curve, like this one's, starts from the parent),
    the line at each epoch is no higher than the best the top had reached by that same epoch,
    ``OUT_OF_REACH`` standard errors under it (``pace``): a child is not stopped for being
    where the top trial was at its age. On the ViT, children still climb after their warm-up
    (the top of seed 0 went from 0.866 after 5 epochs to 0.906), and the fixed floor stopped
    children of its size that stood at 0.859-0.863 then (BENCHMARKS.md, "Stage 2 judges a
    child at its age")."""

    floor: float | None
    warmup: int
    pace: dict[int, float] = field(default_factory=dict)
    """The top trial's validation accuracy by epoch, where it is a stage-2 child."""
    samples: int = 0
    """The validation samples the top trial was scored on (its standard error's)."""
    leader: int | None = None
    """The top trial's number, where ``pace`` is its curve."""
    margin: float = OUT_OF_REACH
    """Standard errors under the top's pace (``bench/stage_two_replay.py`` tries others)."""
    best: float = -math.inf
    line: float | None = None
    """What the child was last judged against."""

    @classmethod
    def of(cls, study: optuna.Study, settings: SearchSettings) -> OutOfReach | None:
        """A stage-2 trial's, the study as it is; None when the search prunes no child."""
        if settings.pruner == "none" or settings.pareto:
            return None  # nothing pruned; multi-objective trials cannot be
        floor, warmup = reach_floor(study), warmup_epochs(settings)
        ranked = ranked_trials(study) if floor is not None else []
        top = TrialRecord.from_trial(ranked[0]) if ranked else None
        if top is None or top.stage != 2 or not top.samples:
            return cls(floor, warmup)
        curve = dict(ranked[0].intermediate_values)
        return cls(floor, warmup, curve, int(top.samples), ranked[0].number)

    def stops(self, epoch: int, value: float) -> bool:
        """Whether the child stops after this epoch (every epoch must be told, for its best)."""
        self.best = max(self.best, value)
        if self.floor is None or epoch < self.warmup:
            return False
        self.line = self._line(epoch)
        return self.best < self.line

    def _line(self, epoch: int) -> float:
        assert self.floor is not None
        reached = [v for e, v in self.pace.items() if e <= epoch]
        if not reached:
            return self.floor
        top = max(reached)
        return min(self.floor, top - self.margin * standard_error(top, self.samples))

    def why(self, epoch: int) -> str:
        """The stop reason the trial records."""
        line, under = self.line if self.line is not None else self.floor, "the top"
        if line is not None and self.floor is not None and line < self.floor:
            under = f"the best trial {self.leader} had reached by epoch {epoch}"
        return (
            f"pruned after epoch {epoch}: its best {self.best:.4f} is out of reach of the "
            f"export (below {line or 0:.4f}, {self.margin:g} standard errors under {under})"
        )


def near_copy(params: int, parent: FrozenTrial, settings: SearchSettings) -> str | None:
    """Why a stage-2 child of ``params`` parameters is not trained (``NEAR_COPY``), or None.
    A Pareto search trains it: every size may join the front."""
    of_parent = parent.user_attrs.get("total_params")
    if settings.pareto or not of_parent or params < NEAR_COPY * of_parent:
        return None
    return (
        f"not trained: a near copy of trial {parent.number}, it keeps {params / of_parent:.0%} "
        f"of its parameters"
    )


def parent_of(study: optuna.Study, metric: str) -> FrozenTrial | None:
    """The best completed stage-1 trial (it is the model stage 2 slims): size budgets ignored,
    but within the flip budget when one is (a slimmed child rarely breaks less than its parent).
    """
    done = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.values and not (rec := TrialRecord.from_trial(t)).baseline and rec.parent is None
    ]
    done = [t for t in done if t.constraints.get("flips", 0.0) <= 0] or done
    if not done:
        return None
    return max(done, key=lambda t: rank_key(t, sign(metric)))


def child_config(
    parent: TrialConfig,
    slim: TrialConfig,
    sampled: tuple[str, ...] = SLIMMING,
    lr_scale: float = 1.0,
) -> TrialConfig:
    """The parent's fine-tuning, on every layer, at ``lr_scale`` times its learning rate, with
    the ``sampled`` parameters (the slimming, and maybe the loss) of the child."""
    values = {name: getattr(slim, name) for name in sampled}
    return dataclasses.replace(
        parent, lr=parent.lr * lr_scale, unfreeze=None, unfreeze_order="output", **values
    )


def suggest_lr_scale(trial: optuna.Trial, space: SearchSpace) -> float:
    """Stage 2's learning-rate factor (``LR_SCALE``): sampled when the space tunes the
    learning rate, else 1."""
    if "lr" not in space.params or "lr" in space.fixed_values():
        return 1.0
    name, low, high = LR_SCALE
    return trial.suggest_float(name, low, high, log=True)


def slimming_maker(
    maker: TrialMaker, adapted: nn.Module, job: Job, space: SearchSpace
) -> TrialMaker:
    """A ``TrialMaker`` whose source is the adapted model, with the rankings of that model."""
    adapted = adapted.cpu().eval()
    analyses: dict[str, Analysis] = {}
    run_analyses(Job.from_objects(adapted, job.data), space, analyses)
    return dataclasses.replace(maker, source=adapted, analyses=analyses)
