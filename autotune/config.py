"""The small typed values every step shares: a trial's configuration, a search's settings, the
analysis options, and which way the metric goes."""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from autotune.budget_text import budget_parts, latency_budget
from autotune.errors import AutotuneError

VERSION = "0.1.0"
"""autotune's version (``autotune.__version__``), recorded with every study and export."""
# The choices of the settings, each once: a ``Literal`` type (the CLI's --help lists it) and
# the tuple of its values that the checks read.
Metric = Literal["accuracy", "loss"]
Pruner = Literal["median", "hyperband", "none"]
ParetoAxis = Literal["params", "macs", "flips", "latency"]
AmpMode = Literal["auto", "bf16", "fp16", "off"]
Switch = Literal["auto", "on", "off"]
SelectRule = Literal["simplest", "top"]
Explainer = Literal["gradient", "deep"]
Method = Literal["shap", "taylor", "l1", "random"]
"""The importance methods (``rank.methods``)."""
METRICS: dict[str, Literal["maximize", "minimize"]] = {"accuracy": "maximize", "loss": "minimize"}
PRUNERS: tuple[str, ...] = get_args(Pruner)
BUDGETS = ("params", "macs")
PARETO_AXES: tuple[str, ...] = get_args(ParetoAxis)
"""What ``--pareto`` can set against the metric: a size, the negative flips (``trial.flips``), or
the latency as a ratio of the source's."""
MAX_RATIO = 0.9
"""The largest fraction of a layer's channels (or of the features) a trial may remove."""
AMP_MODES: tuple[str, ...] = get_args(AmpMode)
"""``--amp``: mixed precision of a fit (``trial.accel``); ``auto`` is bf16/fp16 on CUDA only."""
SWITCHES: tuple[str, ...] = get_args(Switch)
MAX_SEED = 2**32 - 1
"""The largest ``--seed``: numpy's generators (the sampler's) take no larger."""
SELECT_RULES: tuple[str, ...] = get_args(SelectRule)
"""``--select``: which trial a search exports (``search.selection``)."""
EXPLAINERS: tuple[str, ...] = get_args(Explainer)
"""Engines of the ``shap`` method: expected gradients (``GradientExplainer``'s algorithm, the
default: better rankings in BENCHMARKS.md) or shap's ``DeepExplainer`` (DeepLIFT)."""


def sign(metric: str) -> float:
    """+1 when ``metric`` is maximised, -1 when minimised: ``sign * (a - b) > 0`` means a wins."""
    return 1.0 if METRICS[metric] == "maximize" else -1.0


def score_key(metric: str, accuracy: float, loss: float) -> tuple[float, float]:
    """How two validation results rank, larger is better: ``metric`` first, the other score
    breaks ties. Accuracy on a small validation split moves in steps of 1/n (34 samples: 3
    points), so equal accuracies are common, and the lower loss is the more confident model."""
    return (accuracy, -loss) if metric == "accuracy" else (-loss, accuracy)


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
    """``cross_entropy``, ``label_smoothing``, ``focal``, ``distill`` or ``focal_distill`` (the
    last two learn from a teacher as well: the source model, or in a staged search's second
    stage the full-size model being slimmed)."""
    label_smoothing: float = 0.1
    """Epsilon of the ``label_smoothing`` loss."""
    focal_gamma: float = 2.0
    """Gamma of the ``focal`` loss."""
    distill_weight: float = 0.5
    """Share of the distillation term in the ``distill`` losses (0: cross-entropy alone)."""
    distill_temperature: float = 2.0
    """Softmax temperature of the ``distill`` losses."""
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
    prune_width: float = 0.0
    """Fraction of a transformer's width (its residual stream's channels, which every block
    reads and writes) removed, lowest-ranked first (``rank.width``): removes about that
    fraction of all the parameters. Apart from ``prune``: a stream's channels are ranked among
    themselves, and no other layer's scores compare with them."""
    importance: str = "shap"
    """The ranking that ``prune`` and ``drop_features`` remove from the bottom of."""
    drop_features: float = 0.0
    """Fraction of input features dropped, least important first (feature-vector models)."""
    augment: str = "none"
    """Train-time augmentation of image batches: ``none`` or ``light`` (random resized crop and
    horizontal flip, see ``trial.augment``)."""
    average: str = "none"
    """``ema``: the weights evaluated each epoch, and kept, are an exponential moving average of
    the trained ones (time constant one epoch, ``trial.fit``); ``none``: the trained weights."""


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
    explainer: Explainer = "gradient"
    """``gradient`` (expected gradients, shap's GradientExplainer algorithm, batched) or ``deep``
    (shap's DeepExplainer), for ``shap``."""

    def __post_init__(self) -> None:
        if self.explainer not in EXPLAINERS:
            raise AutotuneError(f"unknown explainer {self.explainer!r}: use one of {[*EXPLAINERS]}")
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
    metric: Metric = "accuracy"
    """``accuracy`` (maximised) or ``loss`` (validation cross-entropy, minimised)."""
    seed: int = 0
    """Seeds the sampler and each trial (trial N trains with seed + N)."""
    pruner: Pruner = "median"
    device: str = "auto"
    devices: str | None = None
    """``--devices 0,1,...``: one worker per listed CUDA device (worker i on the i-th, round
    robin when there are more workers than devices); overrides ``device``."""
    threads: int = 1
    """torch intra-op threads on CPU (see ``trial.fit.configure_threads``)."""
    study_name: str = "autotune"
    storage: str | None = None
    """Optuna storage URL or journal file; default: the journal file ``OUT/study.journal``."""
    out: Path = field(default_factory=lambda: Path("runs/autotune"))
    verbose: bool = False
    """Keep Optuna's own log lines (they interleave with the live leaderboard)."""
    max_params: str | float | None = None
    """Parameter budget: a fraction of the original (``0.5``, ``50%``) or a count (``1.5M``)."""
    max_macs: str | float | None = None
    """Multiply-accumulate budget per sample, in the same forms as ``max_params``."""
    max_flips: str | float | None = None
    """Negative-flip budget on the validation split: a rate (``0.01``, ``1%``) or a count."""
    max_latency: str | None = None
    """Latency budget (``config.latency_budget``): ``0.5x`` the source's, or ``5ms`` a batch.
    Trials are timed only with a latency budget or front."""
    latency_batch: int = 32
    """Samples in the batch the latency is timed on."""
    pareto: ParetoAxis | None = None
    """``params``, ``macs``, ``flips`` or ``latency``: a two-objective study (metric vs size,
    negative flips or latency), early stopping only."""
    seed_trials: bool = True
    """Start a new study with configurations read off the rankings (prune the bottom, ...)."""
    refit: bool = False
    """Export the chosen configuration trained again on training + validation samples."""
    finalists: int = 0
    """``--finalists N``: the top N trials on validation (and the standard recipe) each train
    again with ``FINALIST_SEEDS`` fresh seeds; the export is the one with the best mean
    (``results.finalists``). 0: the ``select`` rule's choice (finalists measured no better
    on the peer tasks, see BENCHMARKS.md)."""
    select: SelectRule = "simplest"
    """Which trial is exported without a size budget: ``simplest``, the smallest model within
    one standard error of the top validation accuracy, or ``top`` (``search.selection``)."""
    timeout: float | None = None
    """Stop starting new trials after this many seconds (this worker's; the study keeps all).
    A staged search starts stage 2 at half of it if half the trials are not done by then."""
    checkpoint_every: float | None = None
    """Minutes of a trial's training between its in-trial checkpoints (``trial.resume``), which
    an interrupted trial continues from in the next run; None: none."""
    checkpoint_store: str | Path | None = None
    """A folder all machines share: in-trial checkpoints are copied there (``search.resume_store``)
    for another machine to continue."""
    export_preprocessing: bool = False
    """Put the data's input normalisation inside the exported ``model.pt2``."""
    export: tuple[str, ...] | str = ()
    """``--export onnx``: also write ``model.onnx`` (``results.onnx_export.export_formats``)."""
    amp: AmpMode = "auto"
    """Mixed precision: ``auto`` (bf16, or fp16 with a scaler, on CUDA; off on the CPU),
    ``bf16``, ``fp16`` or ``off``."""
    channels_last: Switch = "auto"
    """Conv nets' memory format: ``auto`` (channels-last on CUDA), ``on`` or ``off``."""
    workers: int = 1
    """Processes running trials on this machine (``search.pool``); they share ``threads``."""
    worker: int = 0
    """This process's index among the machine's workers: offsets the sampler's seed. Only
    worker 0 of machine 0 exports (``search.trials.machine_index``)."""
    allow_changes: bool = False
    """Continue a study made with other settings (epochs, seed, budgets...): the new ones then
    apply to its old trials too."""

    @classmethod
    def of(cls, **fields: Any) -> SearchSettings:
        """``SearchSettings(**fields)`` with a name that is no field refused with the nearest
        one: ``autotune.search`` passes its keywords here, and the CLI's ``--epochs`` is
        ``max_epochs`` in Python."""
        known = [f.name for f in dataclasses.fields(cls)]
        for name in fields.keys() - set(known):
            near = difflib.get_close_matches(name, known, n=1)
            fix = f"did you mean {near[0]}=?" if near else f"the settings are {', '.join(known)}"
            raise TypeError(f"{name}= is not a search setting: {fix}")
        return cls(**fields)

    def resolved(self, fit: dict[str, int]) -> SearchSettings:
        """Checked settings, with epochs and patience filled in from the space's ``fit``."""
        # 0 is a value given (and refused below), not "use the default".
        max_epochs = fit.get("max_epochs", 20) if self.max_epochs is None else self.max_epochs
        patience = fit.get("patience", 5) if self.patience is None else self.patience
        if self.trials < 1:
            # 0 would analyse and train the baseline, then have nothing to export.
            raise AutotuneError(
                f"--trials must be at least 1 (trials searched, the baseline not counted), got "
                f"{self.trials}"
            )
        if not isinstance(self.seed, int) or not 0 <= self.seed <= MAX_SEED:
            raise AutotuneError(
                f"--seed must be an integer from 0 to {MAX_SEED} (2**32-1), got {self.seed!r}"
            )
        choices = {"metric": list(METRICS), "pruner": PRUNERS, "pareto": PARETO_AXES}
        choices |= {"amp": AMP_MODES, "channels_last": SWITCHES, "select": SELECT_RULES}
        for name, allowed in choices.items():
            value = getattr(self, name)
            if value not in allowed and not (name == "pareto" and value is None):
                flag = "--" + name.replace("_", "-")
                raise AutotuneError(f"{flag} must be one of {list(allowed)}, got {value!r}")
        for name, unit in (("timeout", "seconds"), ("checkpoint_every", "minutes")):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int | float) and value > 0):
                flag = "--" + name.replace("_", "-")
                raise AutotuneError(f"{flag} must be a positive number of {unit}, got {value!r}")
        for what in (*BUDGETS, "flips"):
            budget = getattr(self, f"max_{what}")
            if budget is not None:
                budget_parts(budget, what)
        if self.max_latency is not None:
            latency_budget(self.max_latency)
        counts = {"workers": 1, "finalists": 0, "threads": 1, "latency_batch": 1}
        for name, least in counts.items():
            if getattr(self, name) < least:
                flag = "--" + name.replace("_", "-")
                raise AutotuneError(f"{flag} must be at least {least}, got {getattr(self, name)}")
        for flag, count in (("--epochs", max_epochs), ("--patience", patience)):
            if count < 1:
                raise AutotuneError(f"{flag} must be at least 1, got {count}")
        device, workers = self.device, self.workers
        if self.devices is not None:
            ids = _device_ids(self.devices)
            device = f"cuda:{ids[self.worker % len(ids)]}"
            workers = max(workers, len(ids))  # at least one worker per device
        return dataclasses.replace(
            self, max_epochs=max_epochs, patience=patience, out=Path(self.out), device=device,
            workers=workers,
        )  # fmt: skip

    def stored(self) -> dict[str, Any]:
        """The settings that decide what a trial's result is: stored with the study."""
        keep = "max_epochs patience metric seed threads pareto max_params max_macs max_flips"
        keep += " max_latency refit" + (" latency_batch" if self.times_latency else "")
        # latency_batch only when timed: a study made before it continues unchanged.
        return {k: getattr(self, k) for k in keep.split()}

    @property
    def times_latency(self) -> bool:
        """Whether trials are timed: only a latency budget or front uses their latency."""
        return self.max_latency is not None or self.pareto == "latency"


def _device_ids(text: str) -> list[int]:
    """``--devices 0,1,3`` as CUDA device numbers."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    if not parts or not all(p.isdigit() for p in parts) or len(set(parts)) != len(parts):
        raise AutotuneError(f"--devices {text!r} is not a list of CUDA device numbers: write 0,1")
    return [int(p) for p in parts]
