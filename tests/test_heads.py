"""Attention heads (``rank.heads``, ``trial.heads``): scored one gate per head, removed whole,
lowest first, never the last one; a forward that cannot run with fewer heads is left unpruned
with the reason; a head-pruned model exports a program that loads in a clean process."""

from __future__ import annotations

import copy
import io
from pathlib import Path

import torch
from conftest import assert_program_matches, gated_log_probs, randomise_norms
from rich.console import Console
from test_zoo import Attention, TimmStyleViT, _build
from torch import nn

from autotune.load.anatomy import layers
from autotune.load.attention import SelfAttention, split_attention
from autotune.rank.analysis import Analysis
from autotune.rank.gates import sites
from autotune.rank.methods import score
from autotune.results.deploy import save_model
from autotune.trial.prune import prune


class LegacyAttention(Attention):
    """timm's ``Attention`` before 1.0: head width and output width read off the input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        x = nn.functional.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class NormedAttention(Attention):
    """timm's ``Attention`` with ``qk_norm`` (a LayerNorm over each head's width, shared by the
    heads) or ``scale_norm`` (a LayerNorm over all heads together, before ``proj``)."""

    def __init__(self, dim: int, heads: int, across: bool) -> None:
        super().__init__(dim, heads)
        self.q_norm = nn.LayerNorm(self.head_dim)
        self.k_norm = nn.LayerNorm(self.head_dim)
        self.norm = nn.LayerNorm(self.attn_dim) if across else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        x = nn.functional.scaled_dot_product_attention(self.q_norm(q), self.k_norm(k), v)
        return self.proj(self.norm(x.transpose(1, 2).reshape(b, n, self.attn_dim)))


def _vit_with_a_dead_head(head: int = 2) -> TimmStyleViT:
    model = _build("timm_style_vit")
    attn = model.blocks[0].attn
    with torch.no_grad():  # the head's values are zero: it adds nothing to the output
        start = 2 * attn.attn_dim + head * attn.head_dim  # q, k, v: the head's v rows
        v = slice(start, start + attn.head_dim)
        attn.qkv.weight[v] = 0
        attn.qkv.bias[v] = 0
    return model


def test_a_dead_head_ranks_last_and_goes_first() -> None:
    model = _vit_with_a_dead_head(2)
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    for method in ("shap", "l1"):
        scores = score(method, model, x, torch.arange(8) % 4, background=16, nsamples=4)
        heads = scores.channels["blocks.0.attn"]
        assert len(heads) == 4 and heads.argmin() == 2, (method, heads)
    pruned = copy.deepcopy(model)
    kept = prune(pruned, {"blocks.0.attn": heads}, x[:2], 0.25)
    assert kept == {"blocks.0.attn": [0, 1, 3]}
    assert pruned.blocks[0].attn.num_heads == 3 and pruned.blocks[0].attn.attn_dim == 24
    assert pruned.blocks[0].attn.qkv.out_features == 72
    with torch.no_grad():  # the head added nothing: the outputs stay the same
        torch.testing.assert_close(pruned(x), model(x), atol=1e-5, rtol=1e-5)


def test_the_analysis_table_lists_each_attention_module_s_heads_lowest_first() -> None:
    model = _vit_with_a_dead_head(2)
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    scores = score("l1", model, x, torch.arange(8) % 4)
    channels = {k: [float(v) for v in c] for k, c in scores.channels.items()}
    all_layers = [unit.name for unit in layers(model)]
    analysis = Analysis("l1", channels, None, None, meta={"all_layers": all_layers})
    console = Console(file=io.StringIO(), width=200)
    console.print(analysis)
    row = next(line for line in console.file.getvalue().splitlines() if "blocks.0.attn " in line)
    assert "4 heads" in row and row.split("│")[6].split()[0].startswith("2:")


def test_every_module_keeps_at_least_one_head() -> None:
    model = _build("timm_style_vit")
    x = torch.randn(2, 3, 32, 32)
    scores = {"blocks.0.attn": torch.rand(4).numpy(), "blocks.1.attn": torch.rand(4).numpy()}
    for global_ranking in (False, True):
        pruned = copy.deepcopy(model)
        kept = prune(pruned, scores, x, 0.95, global_ranking=global_ranking)
        assert [len(k) for k in kept.values()] == [1, 1]
        assert [b.attn.num_heads for b in pruned.blocks] == [1, 1]
        assert pruned(x).shape == (2, 4)


def test_a_module_pruned_to_its_last_head_is_still_reported_as_heads() -> None:
    from types import SimpleNamespace

    from autotune.config import TrialConfig
    from autotune.trial.build import build

    x = torch.randn(2, 3, 32, 32)
    scores = {"blocks.0.attn": [0.4, 0.1, 0.3, 0.2], "blocks.1.attn": [0.1, 0.2, 0.3, 0.4]}
    analyses = {"shap": SimpleNamespace(channels=scores)}
    config = TrialConfig(prune=0.95, importance="shap")
    pruned, changes = build(_build("timm_style_vit"), config, analyses, x)  # type: ignore[arg-type]
    # One head left each: what a trial records as heads_kept, not as channels.
    assert changes.heads == {"blocks.0.attn": [0], "blocks.1.attn": [3]}
    assert not set(changes.channels) & set(changes.heads)
    assert [b.attn.num_heads for b in pruned.blocks] == [1, 1]


def test_global_ranking_removes_the_lowest_heads_across_modules() -> None:
    model = _build("timm_style_vit")
    x = torch.randn(2, 3, 32, 32)
    scores = {
        "blocks.0.attn": torch.tensor([0.1, 0.2, 5.0, 6.0]).numpy(),
        "blocks.1.attn": torch.tensor([3.0, 4.0, 0.3, 7.0]).numpy(),
    }
    kept = prune(copy.deepcopy(model), scores, x, 3 / 8, global_ranking=True)
    assert kept == {"blocks.0.attn": [2, 3], "blocks.1.attn": [0, 1, 3]}
    per_layer = prune(copy.deepcopy(model), scores, x, 0.0, per_layer={"blocks.1.attn": 0.5})
    assert per_layer == {"blocks.0.attn": [0, 1, 2, 3], "blocks.1.attn": [1, 3]}


def test_a_forward_that_needs_all_its_heads_is_left_unpruned_with_the_reason() -> None:
    model = _build("timm_style_vit")
    legacy = LegacyAttention(32, 4)
    legacy.load_state_dict(model.blocks[0].attn.state_dict())
    model.blocks[0].attn = legacy
    x = torch.randn(3, 3, 32, 32)
    found = {s.layer: s for s in sites(model, x) if s.heads}
    assert not found["blocks.0.attn"].prunable
    assert "forward needs all its heads" in str(found["blocks.0.attn"].unsupported)
    assert found["blocks.1.attn"].prunable
    scores = score("shap", model, x, torch.arange(3), background=4, nsamples=2)
    assert "blocks.0.attn" not in scores.channels and "blocks.1.attn" in scores.channels
    assert "blocks.0.attn" in scores.unpruned
    pruned = copy.deepcopy(model)
    kept = prune(pruned, scores.channels, x[:2], 0.5)
    assert pruned.blocks[0].attn.num_heads == 4 and kept["blocks.1.attn"] == [
        h for h in range(4) if h not in scores.channels["blocks.1.attn"].argsort()[:2]
    ]


def test_a_norm_within_heads_stays_and_one_across_heads_leaves_them_unpruned() -> None:
    model = _build("timm_style_vit")
    for block, across in zip(model.blocks, (False, True), strict=True):
        normed = NormedAttention(32, 4, across)
        normed.load_state_dict(block.attn.state_dict(), strict=False)
        block.attn = normed
    randomise_norms(model)
    x = torch.randn(3, 3, 32, 32)
    found = sites(model, x)
    heads = {s.layer: s for s in found if s.heads}
    assert heads["blocks.0.attn"].prunable
    assert heads["blocks.1.attn"].unsupported == "attention whose heads pass through LayerNorm"
    scores = score("shap", model, x, torch.arange(3), background=4, nsamples=2)
    pruned = copy.deepcopy(model)
    kept = prune(pruned, scores.channels, x[:2], 0.5)
    assert [b.attn.num_heads for b in pruned.blocks] == [2, 4]
    assert pruned.blocks[0].attn.q_norm.weight.shape == (8,)  # shared by the heads: whole
    with torch.no_grad():
        got = torch.log_softmax(pruned.eval()(x), 1)[:, 0]
    torch.testing.assert_close(got, gated_log_probs(model, found, kept, x), atol=1e-4, rtol=1e-4)


def test_a_head_pruned_model_exports_a_program_that_loads_in_a_clean_process(
    tmp_path: Path,
) -> None:
    model = _build("timm_style_vit")
    x = torch.randn(5, 3, 32, 32)
    scores = score("shap", model, x, torch.arange(5) % 4, background=4, nsamples=2)
    prune(model, scores.channels, x[:2], 0.5)
    assert [b.attn.num_heads for b in model.blocks] == [2, 2]
    files = save_model(model.eval(), x[:2], tmp_path)
    assert (tmp_path / "model.pt2").exists(), files
    with torch.no_grad():
        assert_program_matches(tmp_path / "model.pt2", x, model(x))


class _ThreeAttentions(nn.Module):
    """Self-attention batch-first and sequence-first, and one called with a mask."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.MultiheadAttention(16, 4, batch_first=True)
        self.b = nn.MultiheadAttention(16, 4)
        self.c = nn.MultiheadAttention(16, 4, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.a(x, x, x, need_weights=False)[0]
        t = x.transpose(0, 1)
        x = x + self.b(t, t, t, need_weights=False)[0].transpose(0, 1)
        causal = torch.ones(x.shape[1], x.shape[1], dtype=torch.bool).triu(1)
        return x + self.c(x, x, x, attn_mask=causal, need_weights=False)[0]


def test_torchvision_self_attention_is_split_where_it_is_plain_and_gives_the_same_outputs() -> None:
    torch.manual_seed(0)
    model = _ThreeAttentions().eval()
    x = torch.randn(3, 5, 16)
    with torch.no_grad():
        before = model(x)
    assert split_attention(model, x) == ["a", "b"]
    assert isinstance(model.a, SelfAttention) and isinstance(model.b, SelfAttention)
    assert isinstance(model.c, nn.MultiheadAttention)  # a mask: left as it is
    with torch.no_grad():
        torch.testing.assert_close(model(x), before, atol=1e-6, rtol=0)
