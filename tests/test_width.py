"""A transformer's width (``rank.width``, ``trial.prune.prune_width``): its residual stream's
channels are ranked inside the LayerNorms that read them, removed together from every layer
that writes or reads them, and the model then gives exactly what gating them gave; a stream
read outside its LayerNorms keeps its width, with a note; a conv net's space never offers it."""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console
from test_zoo import TimmStyleViT, _build
from torch import nn

from autotune.config import TrialConfig
from autotune.errors import AutotuneError
from autotune.load.attention import split_attention
from autotune.load.job import Job
from autotune.load.tasks import from_tensors
from autotune.rank.analysis import Analysis, tables
from autotune.rank.gates import Gated, sites
from autotune.rank.methods import score
from autotune.search.prepare import adapt_space
from autotune.search.size_floor import smallest_params
from autotune.search.space import load_space
from autotune.trial.build import build
from autotune.trial.prune import prune_width


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _gated(model: nn.Module, x: torch.Tensor, closed: list[int]) -> torch.Tensor:
    """``model``'s true-class log-probabilities (class 0) with width channels ``closed``."""
    found = sites(model, x)
    gated = Gated(copy.deepcopy(model), found, features=False)
    gated.bind(x, torch.zeros(len(x), dtype=torch.long))
    gates = [torch.ones(len(x), s.channels) for s in found]
    gates[next(i for i, s in enumerate(found) if s.width)][:, closed] = 0
    with torch.no_grad():
        return gated(*gates).squeeze(1)


def test_removing_width_channels_equals_closing_their_gates_in_the_layernorms() -> None:
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    for name, root in (("vit_small", "conv_proj"), ("timm_style_vit", "patch_embed")):
        model = _build(name)
        split_attention(model, x)  # as a search does when it loads the model
        scores = np.arange(32.0)[::-1].copy()  # channel 31 lowest, then 30, ...
        pruned = copy.deepcopy(model)
        kept = prune_width(pruned, {root: scores}, x[:2], 0.25)
        assert kept == {root: list(range(24))}
        # Every writer and reader of the stream lost the same 8 channels: about a quarter of
        # all the parameters went, and torchvision's record of its width follows.
        assert 0.68 < _params(pruned) / _params(model) < 0.8
        assert getattr(pruned, "hidden_dim", 24) == 24
        with torch.no_grad():
            got = torch.log_softmax(pruned.eval()(x), 1)[:, 0]
        torch.testing.assert_close(got, _gated(model, x, list(range(24, 32))), atol=1e-5, rtol=0)
        # A gate on the stream's channels without the LayerNorms' statistics is not the same.
        with torch.no_grad():
            full = torch.log_softmax(model(x), 1)[:, 0]
        assert not torch.allclose(got, full, atol=1e-3)


class ReadOutsideTheNorms(TimmStyleViT):
    """The classifier reads the stream's class token directly, without the final LayerNorm:
    a closed channel still reaches it, so removing one is not what gating gives."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1) + self.pos_embed
        x = self.blocks(x)
        return self.head(x[:, 0] + self.norm(x)[:, 0])


def test_a_zero_initialised_head_does_not_hide_a_stream_read_outside_its_norms() -> None:
    """torchvision's ViT starts with a zero head: every input then scores the same, so the
    check compares what the classifier reads, not its scores."""
    x = torch.randn(2, 3, 32, 32)
    leaky = ReadOutsideTheNorms()
    nn.init.zeros_(leaky.head.weight)
    assert not any(s.width for s in sites(leaky, x))
    model = TimmStyleViT()
    nn.init.zeros_(model.head.weight)
    assert [s.layer for s in sites(model, x) if s.width] == ["patch_embed"]


def test_an_analysis_written_before_widths_were_ranked_still_loads(tmp_path: Path) -> None:
    """A study analysed by the previous format (4: no ``width``) still gets its report."""
    path = tmp_path / "shap.json"
    analysis = Analysis("shap", {"a": [0.2, 0.1]}, {"a": 1.0}, None)
    raw = {**analysis.to_dict(), "format_version": 4}
    del raw["width"]
    path.write_text(json.dumps(raw))
    loaded = Analysis.load(path)
    assert loaded.width == {} and loaded.pruning_order("a") == [1, 0]
    path.write_text(json.dumps({**raw, "format_version": 3}))
    with pytest.raises(AutotuneError, match="format 3 is not one this autotune reads"):
        Analysis.load(path)


def _job(model: nn.Module) -> Job:
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(24, 3, 32, 32, generator=gen), torch.arange(24) % 4
    return Job.from_objects(model, from_tensors(x[:16], y[:16], x_val=x[16:], y_val=y[16:]))


def test_a_stream_read_outside_its_layernorms_keeps_its_width_and_the_search_says_so() -> None:
    space = load_space({"prune": {"low": 0.0, "high": 0.5}, "prune_width": {"low": 0, "high": 0.5}})
    x = torch.randn(2, 3, 32, 32)
    assert not any(s.width for s in sites(ReadOutsideTheNorms(), x))
    kept, notes = adapt_space(space, _job(ReadOutsideTheNorms()))
    assert "prune_width" not in kept.params
    assert notes == [
        "its width cannot be removed exactly: the model's residual stream is read outside its "
        "LayerNorms (rank.width); 'prune_width' is left out"
    ]
    # A pre-norm ViT keeps it; a conv net (no LayerNorm, its widths are channels) loses it
    # without a word.
    assert "prune_width" in adapt_space(space, _job(TimmStyleViT()))[0].params
    conv = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    kept, notes = adapt_space(space, _job(nn.Sequential(conv, nn.Linear(8, 4))))
    assert "prune_width" not in kept.params and notes == []


def test_the_analysis_ranks_the_width_and_shows_it_apart_from_the_layers() -> None:
    model = _build("vit_small")
    x = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    split_attention(model, x)
    scores = score("shap", model, x, torch.arange(6) % 4, background=8, nsamples=2)
    width = scores.width["conv_proj"]
    assert width.shape == (32,) and (width > 0).all() and width.std() > 0
    analysis = Analysis("shap", {}, scores.layers, None, width={"conv_proj": list(width)})
    console = Console(file=io.StringIO(), width=200)
    for table in tables(analysis):
        console.print(table)
    row = next(line for line in console.file.getvalue().splitlines() if "(width)" in line)  # type: ignore[attr-defined]
    assert "conv_proj (width)" in row and "32 of the width" in row
    lowest = int(np.argmin(width))
    cells = [c.strip() for c in row.split("│")]
    assert cells[cells.index("32 of the width") + 1].startswith(f"{lowest}:")  # pruned first


def test_no_model_narrowed_by_the_space_is_smaller_than_its_floor() -> None:
    """The parameter floor bounds what width pruning removes too, whatever the rankings."""
    model = _build("timm_style_vit")
    x = torch.randn(2, 3, 32, 32)
    high = {"prune": {"low": 0.0, "high": 0.9}, "prune_scope": ["layer", "global"]}
    without = smallest_params(model, load_space(high), x)
    floor = smallest_params(model, load_space({**high, "prune_width": {"low": 0, "high": 0.9}}), x)
    assert without is not None and floor is not None and floor.params < without.params
    gen = np.random.default_rng(0)
    found = [s for s in sites(model, x) if s.prunable]
    for i in range(3):
        channels = {
            s.layer: list(gen.random(s.channels) ** (1 + 4 * i)) for s in found if not s.width
        }
        width = {s.layer: list(gen.random(s.channels)) for s in found if s.width}
        analysis = Analysis("shap", channels, None, None, width=width)
        for config in (
            TrialConfig(prune=0.9, prune_width=0.9),
            TrialConfig(prune=0.9, prune_scope="global", prune_width=0.9),
            TrialConfig(prune_width=0.5),
        ):
            built, changes = build(model, config, {"shap": analysis}, x)
            assert _params(built) >= floor.params, config
            assert len(changes.width["patch_embed"]) == 32 - int(config.prune_width * 32 + 0.5)


def test_a_search_finds_the_sites_of_its_model_once_before_the_analysis(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The space's adaptation, the size floor, its note and the runner read the same sites:
    each finding traces the model and checks every stream's removal on copies of it. Counted
    inside ``sites`` itself, so that a caller tracing them again on its own is counted too."""
    from autotune import search
    from autotune.rank import gates
    from autotune.search import runner

    model = TimmStyleViT().eval()
    traced: list[nn.Module] = []
    placements = gates.placements

    def counted(module: nn.Module, *args: object, **kwargs: object) -> object:
        traced.append(module)
        return placements(module, *args, **kwargs)  # type: ignore[arg-type]

    class Analysed(Exception):
        pass

    def analysed(*args: object, **kwargs: object) -> None:
        raise Analysed

    monkeypatch.setattr(gates, "placements", counted)
    monkeypatch.setattr(runner, "run_analyses", analysed)
    data = _job(model).data
    space = {"prune": {"low": 0.0, "high": 0.5}, "prune_width": {"low": 0.0, "high": 0.5}}
    with pytest.raises(Analysed):
        search(model, data, space={**space, "lr": 1e-3}, trials=2, out=tmp_path,
               console=Console(file=io.StringIO()), max_params="0.5")  # fmt: skip
    assert len(traced) == 1
