"""Expected gradients over the gates, batched: shap's ``GradientExplainer`` algorithm without
importing shap (several seconds per process) and without its one-sample-at-a-time loop.

For each explained sample j, shap draws ``nsamples`` pairs (a background coalition, a point t on
the path from it to "every unit kept") from ``np.random.seed(seed + j)``; the attribution of a
gate is the mean of gradient x (kept - background) over those points. Here the same draws are
made in the same order, and the gradients of many samples' points are taken in one batch, so
the values equal shap's (``tests/test_importance.py`` checks it) at a fraction of the cost.
"""

from __future__ import annotations

import numpy as np
import torch

from autotune.rank.gates import Gated

ROWS_PER_PASS = 512
"""Interpolated points per forward/backward pass."""


def expected_gradients(
    gated: Gated,
    x: torch.Tensor,
    y: torch.Tensor,
    coalitions: list[torch.Tensor],
    nsamples: int,
    seed: int,
) -> list[np.ndarray]:
    """Per gate group, one row of attributions per sample of ``x``: (samples, gates)."""
    n, n_background = len(x), len(coalitions[0])
    picks = np.empty((n, nsamples), dtype=np.int64)
    alphas = np.empty((n, nsamples), dtype=np.float32)
    for j in range(n):
        rng = np.random.RandomState(seed + j)  # shap's np.random.seed(rseed) stream
        for k in range(nsamples):
            picks[j, k] = rng.choice(n_background)
            alphas[j, k] = rng.uniform()
    device = x.device  # the draws above are the CPU's; the passes run where x is
    rows = torch.from_numpy(picks.reshape(-1))
    t = torch.from_numpy(alphas.reshape(-1, 1))
    # From the background coalition towards "every unit kept" (all gates 1).
    points = [(t + (1 - t) * c[rows]).to(device) for c in coalitions]
    deltas = [(1.0 - c[rows]).double().to(device) for c in coalitions]
    sample_of = torch.arange(n, device=device).repeat_interleave(nsamples)
    sums = [torch.zeros(n, c.shape[1], dtype=torch.float64, device=device) for c in coalitions]
    for start in range(0, len(rows), ROWS_PER_PASS):
        chunk = slice(start, start + ROWS_PER_PASS)
        owner = sample_of[chunk]
        gated.bind(x[owner], y[owner])
        gates = [p[chunk].clone().requires_grad_(True) for p in points]
        # A gate the output does not depend on through autograd (inputs that pass an
        # Embedding's lookup or a .long(), say) has no gradient: it scores 0, not an error.
        grads = torch.autograd.grad(gated(*gates).sum(), gates, allow_unused=True)
        for total, grad, delta in zip(sums, grads, deltas, strict=True):
            if grad is not None:
                total.index_add_(0, owner, grad.double() * delta[chunk])
    return [(total / nsamples).cpu().numpy() for total in sums]
