"""The small typed values every step shares: a trial's configuration, a search's settings, the
analysis options, and which way the metric goes."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from autotune.errors import AutotuneError

VERSION = "0.1.0"
"""autotune's version (``autotune.__version__``), recorded with every study and export."""
METRICS: dict[str, Literal["maximize", "minimize"]] = {"accuracy": "maximize", "loss": "minimize"}
PRUNERS = ("median", "hyperband", "none")
BUDGETS = ("params", "macs")
MAX_RATIO = 0.9
"""The largest fraction of a layer's channels (or of the features) a trial may remove."""
EXPLAINERS = ("gradient", "deep")
"""Engines of the ``shap`` method: expected gradients (``GradientExplainer``'s algorithm, the
default: better rankings in BENCHMARKS.md) or shap's ``DeepExplainer`` (DeepLIFT)."""


def sign(metric: str) -> float:
    """+1 when ``metric`` is maximised, -1 when minimised: ``sign * (a - b) > 0`` means a wins."""
    return 1.0 if METRICS[metric] == "maximize" else -1.0


def better(metric: str, a: float, b: float) -> bool:
    """Whether ``a`` is strictly better than ``b`` on ``metric``."""
    return sign(metric) * (a - b) > 0


def metric_of_direction(maximize: bool) -> str:
    """The metric whose direction is this: ``accuracy`` (maximised) or ``loss``."""
    return "accuracy" if maximize else "loss"


@dataclass(frozen=True)
class TrialConfig:
    """Everything one trial changes about the model and its fine-tuning."""

    lr: float = 1e-3
    """Learning rate."""
    weight_decay: float = 0.0
    """Decoupled weight decay (AdamW) or L2 penalty (SGD), on weight matrices only."""
    optimizer: str = "adamw"
    """``adamw`` or ``sgd``."""
    momentum: float = 0.9
    """SGD momentum."""
    batch_size: int = 32
    """Training batch size."""
    dropout: float | None = None
    """Dropout probability for the model's Dropout modules; None leaves them as they are."""
    loss: str = "cross_entropy"
    """``cross_entropy``, ``label_smoothing`` or ``focal``."""
    label_smoothing: float = 0.1
    """Epsilon of the ``label_smoothing`` loss."""
    focal_gamma: float = 2.0
    """Gamma of the ``focal`` loss."""
    unfreeze: int | None = None
    """How many layers to train (see ``unfreeze_order``); None trains them all."""
    unfreeze_order: str = "output"
    """Which layers ``unfreeze`` counts: ``output`` (from the output backwards) or an importance
    method's error ranking (``shap``, ``taylor``: the layers driving the mistakes first)."""
    prune: float = 0.0
    """Fraction of channels structurally removed (see ``prune_scope``)."""
    prune_scope: str = "layer"
    """``layer``: ``prune`` of every layer's channels; ``global``: ``prune`` of all channels,
    the lowest-ranked across the whole model (for rankings comparable across layers: shap's are
    in nats of log-probability)."""
    prune_layers: dict[str, float] | None = None
    """Per-layer fractions (space key ``prune_layers``, trial params ``prune:<layer>``)."""
    importance: str = "shap"
    """The ranking that ``prune`` and ``drop_features`` remove from the bottom of."""
    drop_features: float = 0.0
    """Fraction of input features dropped, least important first (feature-vector models)."""


@dataclass(frozen=True)
class AnalysisOptions:
    """How an analysis samples: defaults measured in BENCHMARKS.md (bench/importance.py)."""

    samples: int = 128
    """Validation samples explained."""
    background: int = 32
    """Random unit coalitions the ``shap`` method integrates from."""
    nsamples: int = 16
    """Expected-gradient samples per explained sample (``shap``)."""
    seed: int = 0
    explainer: str = "gradient"
    """``gradient`` (expected gradients, shap's GradientExplainer algorithm, batched) or ``deep``
    (shap's DeepExplainer), for ``shap``."""

    def __post_init__(self) -> None:
        if self.explainer not in EXPLAINERS:
            raise AutotuneError(
                f"unknown explainer {self.explainer!r}: use one of {list(EXPLAINERS)}"
            )
        for name in ("samples", "background", "nsamples"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise AutotuneError(f"analysis {name} must be a positive integer, got {value!r}")


@dataclass
class SearchSettings:
    """How a search runs; the search space says what it samples."""

    trials: int = 20
    """Trials in the study, the baseline not counted: a re-run only runs the missing ones."""
    max_epochs: int | None = None
    """Epochs per trial at most (default: the space's ``fit.max_epochs``, else 20)."""
    patience: int | None = None
    """Epochs without improvement before a trial stops (default: the space's, else 5)."""
    metric: str = "accuracy"
    """``accuracy`` (maximised) or ``loss`` (validation cross-entropy, minimised)."""
    seed: int = 0
    """Seeds the sampler and each trial (trial N trains with seed + N)."""
    pruner: str = "median"
    device: str = "auto"
    threads: int = 1
    """torch intra-op threads on CPU (see ``trial.fit.configure_threads``)."""
    study_name: str = "autotune"
    storage: str | None = None
    """Optuna storage URL or journal file; default: SQLite in the output folder."""
    out: Path = field(default_factory=lambda: Path("runs/autotune"))
    verbose: bool = False
    """Keep Optuna's own log lines (they interleave with the live leaderboard)."""
    max_params: str | float | None = None
    """Parameter budget: a fraction of the original (``0.5``, ``50%``) or a count (``1.5M``)."""
    max_macs: str | float | None = None
    """Multiply-accumulate budget per sample, in the same forms as ``max_params``."""
    pareto: str | None = None
    """``params`` or ``macs``: a two-objective study (metric vs size), early stopping only."""
    seed_trials: bool = True
    """Start a new study with configurations read off the rankings (prune the bottom, ...)."""
    refit: bool = False
    """Export the chosen configuration trained again on training + validation samples."""
    timeout: float | None = None
    """Stop starting new trials after this many seconds (this worker's; the study keeps all)."""
    workers: int = 1
    """Processes running trials on this machine (``search.pool``); they share ``threads``."""
    worker: int = 0
    """This process's index among the machine's workers: offsets the sampler's seed. Only
    worker 0 of machine 0 exports (``search.trials.machine_index``)."""
    allow_changes: bool = False
    """Continue a study made with other settings (epochs, seed, budgets...): the new ones then
    apply to its old trials too."""

    def resolved(self, fit: dict[str, int]) -> SearchSettings:
        """Checked settings, with epochs and patience filled in from the space's ``fit``."""
        max_epochs = self.max_epochs or fit.get("max_epochs", 20)
        patience = self.patience or fit.get("patience", 5)
        if self.trials < 0:
            raise AutotuneError(f"--trials must be >= 0, got {self.trials}")
        if self.metric not in METRICS:
            raise AutotuneError(f"--metric must be one of {list(METRICS)}, got {self.metric!r}")
        if self.pruner not in PRUNERS:
            raise AutotuneError(f"--pruner must be one of {list(PRUNERS)}, got {self.pruner!r}")
        if self.pareto not in (None, *BUDGETS):
            raise AutotuneError(f"--pareto must be one of {list(BUDGETS)}, got {self.pareto!r}")
        if self.timeout is not None and not self.timeout > 0:
            raise AutotuneError(
                f"--timeout must be a positive number of seconds, got {self.timeout}"
            )
        if self.workers < 1:
            raise AutotuneError(f"--workers must be at least 1, got {self.workers}")
        if max_epochs < 1 or patience < 1:
            raise AutotuneError(f"epochs and patience must be >= 1, got {max_epochs}, {patience}")
        return dataclasses.replace(
            self, max_epochs=max_epochs, patience=patience, out=Path(self.out)
        )

    def stored(self) -> dict[str, Any]:
        """The settings that decide what a trial's result is: stored with the study."""
        keep = (
            "max_epochs",
            "patience",
            "metric",
            "seed",
            "threads",
            "pareto",
            "max_params",
            "max_macs",
            "refit",
        )
        return {k: getattr(self, k) for k in keep}
