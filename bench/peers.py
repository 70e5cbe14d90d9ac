"""autotune against what a user would do without it, side by side, on three shifted tasks.

Methods, each run as its own subprocess whose whole wall time is measured (imports and set-up
count), with one torch thread, on the same tasks and seeds:

- P0: the source model as it is.
- P1: the standard fine-tune: AdamW lr 1e-3, weight decay 0.01 on >=2-D parameters, every layer,
  batch 32, cross-entropy, up to 50 epochs, early stopping (patience 5) on validation accuracy,
  best-validation weights restored. Written out plainly below: it is not autotune's loop.
- P2: a plain Optuna script as in Optuna's documentation: TPESampler(seed), MedianPruner, the
  same number of trials as autotune, sampling lr, weight decay, optimizer (AdamW, or SGD with
  momentum 0.9), dropout and batch size; each trial is P1's loop; the best trial by validation
  accuracy is kept in memory and tested.
- P3: L1-magnitude structural pruning (torch-pruning, classifier ignored) down to the parameter
  count of autotune's ``--max-params 0.5`` model of the same task and seed (50% of the source
  when that is unknown), the ratio found by bisection, then P1's fine-tune.
- autotune: ``autotune search`` through the CLI with its default space, and with
  ``--max-params 0.5`` in the slimming space named in SLIM_SPACE; results from
  ``OUT/best/config.yaml``.

Tasks are built deterministically into the work folder first (not timed): ``demo`` (autotune's
own demo), ``tabular`` (breast_cancer with a magnification shift and 20 noise columns, an MLP)
and ``resnet18`` (torchvision resnet18 trained briefly on digits at 3x32x32, target rotated and
blurred). Parameters, MACs and latency of the P-methods' models are measured afterwards in a
separate, untimed process, the same way for the source: the median of repeated forward passes of
a batch of 32 after warm-up.

Run: python bench/peers.py [--seeds 0 1 2] [--trials 30] [--tasks demo tabular resnet18]
         [--methods p0 p1 p2 p3 autotune autotune-refit autotune-slim autotune-finalists
                    autotune-slim-finalists] [--quick] [--results FILE]
         [--write BENCHMARKS.md]
     python bench/peers.py --table-only FILE [--write BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import copy
import importlib.metadata
import importlib.util
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

# --- Settings -------------------------------------------------------------------------------

DEFAULT_SPACE: str | None = None
"""``--space`` of the "autotune default" runs; None passes none (autotune's own default)."""
SLIM_SPACE: dict[str, str | None] = {"demo": None, "tabular": None, "resnet18": None}
"""``--space`` of the ``--max-params 0.5`` runs, per task; None passes none: autotune then picks
the space by model (``vision`` for conv nets, ``tabular`` for feature vectors)."""
MAX_PARAMS = "0.5"
FINALISTS = 3
"""``--finalists`` of the *-finalists methods."""
COLD_CACHE = True
"""Give every autotune run its own empty cache folder (the demo's files copied in, untimed):
autotune caches SHAP analyses by model and data, so otherwise every run after the first of a
task would skip the analysis that P-methods never get to skip."""

TASKS = ("demo", "tabular", "resnet18")
TASK_SEED = 0
"""Seed the tasks are built with; the run seeds vary only the methods."""
METHODS = (
    "p0", "p1", "p2", "p3", "autotune", "autotune-refit", "autotune-slim",
    "autotune-finalists", "autotune-slim-finalists",
)  # fmt: skip
LABELS = {
    "p0": "P0 source model",
    "p1": "P1 standard fine-tune",
    "p2": "P2 plain Optuna",
    "p3": "P3 L1 prune + fine-tune",
    "autotune": "autotune default",
    "autotune-refit": "autotune --refit",
    "autotune-slim": f"autotune --max-params {MAX_PARAMS}",
    "autotune-finalists": f"autotune --finalists {FINALISTS}",
    "autotune-slim-finalists": f"autotune --max-params {MAX_PARAMS} --finalists {FINALISTS}",
}
# at-slim runs before p3, which prunes to its parameter count.
RUN_ORDER = (*METHODS[:3], *(m for m in METHODS if m.startswith("autotune")), "p3")

MAX_EPOCHS, PATIENCE = 50, 5
QUICK = {"trials": 4, "seeds": [0], "max_epochs": 8, "patience": 3}
"""``--quick``: a smoke run. autotune gets the same ``--epochs`` and ``--patience``."""
LATENCY_BATCH, LATENCY_WARMUP, LATENCY_REPEATS = 32, 3, 20
SPLITS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")

TARGETS = [
    "default search: mean test accuracy >= max(P1, P2) on every task, >= 1 point above on two",
    f"--max-params {MAX_PARAMS}: within 1 point of P2 at <= 50% params on every task and seed, "
    "and above P3",
    "wall time: autotune <= P2 on resnet18, <= 2x P2 on the tiny tasks (demo, tabular)",
]
"""The issue's targets, printed next to the numbers; nothing here is tuned toward them."""

BENCH = Path(__file__).resolve().parent


# --- The user's side: plain PyTorch, Optuna and torch-pruning -----------------------------------


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        hits = sum(
            (model(x[i : i + 256]).argmax(1) == y[i : i + 256]).sum().item()
            for i in range(0, len(x), 256)
        )
    return hits / len(x)


def fine_tune(
    model: nn.Module,
    data: dict[str, torch.Tensor],
    *,
    lr: float,
    weight_decay: float,
    optimizer: str,
    batch_size: int,
    max_epochs: int,
    patience: int,
    seed: int,
    report: Callable[[float, int], None] | None = None,
) -> float:
    """Train every layer with early stopping on validation accuracy; keep the best epoch.

    Returns the best validation accuracy. ``report(accuracy, epoch)`` is called every epoch.
    """
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    opt: torch.optim.Optimizer
    if optimizer == "adamw":
        opt = torch.optim.AdamW(groups, lr=lr)
    else:
        opt = torch.optim.SGD(groups, lr=lr, momentum=0.9)
    x, y = data["x_train"], data["y_train"]
    best, best_state, stale = -1.0, copy.deepcopy(model.state_dict()), 0
    for epoch in range(max_epochs):
        model.train()
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), batch_size):
            idx = order[i : i + batch_size]
            if len(idx) < 2:  # BatchNorm cannot train on a single sample
                continue
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        val = accuracy(model, data["x_val"], data["y_val"])
        if report is not None:
            report(val, epoch)
        if val > best:
            best, best_state, stale = val, copy.deepcopy(model.state_dict()), 0
        else:
            stale += 1
            if stale >= patience:
                break
    model.load_state_dict(best_state)
    return best


def standard_fine_tune(
    model: nn.Module, data: dict[str, torch.Tensor], seed: int, fit: dict[str, int]
) -> float:
    """P1: AdamW lr 1e-3, weight decay 0.01, batch 32, every layer."""
    return fine_tune(
        model,
        data,
        lr=1e-3,
        weight_decay=0.01,
        optimizer="adamw",
        batch_size=32,
        seed=seed,
        max_epochs=fit["max_epochs"],
        patience=fit["patience"],
    )


def last_linear(model: nn.Module) -> str:
    """Dotted name of the model's last nn.Linear: the classifier."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise ValueError(f"the model has no nn.Linear classifier: {type(model).__name__}")
    return names[-1]


def with_dropout(model: nn.Module, p: float) -> nn.Module:
    """Set p on every nn.Dropout, or insert one before the classifier when there is none."""
    drops = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    for m in drops:
        m.p = p
    if not drops:
        name = last_linear(model)
        parent, _, child = name.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        setattr(owner, child, nn.Sequential(nn.Dropout(p), getattr(owner, child)))
    return model


def optuna_search(
    model: nn.Module, data: dict[str, torch.Tensor], seed: int, trials: int, fit: dict[str, int]
) -> tuple[nn.Module, dict[str, Any]]:
    """Optuna's documented recipe around P1's loop; the best trial's model stays in memory."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    kept: dict[str, Any] = {"value": -1.0, "model": None, "epochs": 0}

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("lr", 1e-5, 1e-1, log=True)
        weight_decay = trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True)
        optimizer = trial.suggest_categorical("optimizer", ["adamw", "sgd"])
        dropout = trial.suggest_float("dropout", 0.0, 0.5)
        batch_size = trial.suggest_categorical("batch_size", [32, 64, 128])
        net = with_dropout(copy.deepcopy(model), dropout)

        def report(value: float, epoch: int) -> None:
            kept["epochs"] += 1  # the training work, to set beside autotune's
            trial.report(value, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()

        value = fine_tune(
            net, data, lr=lr, weight_decay=weight_decay, optimizer=str(optimizer),
            batch_size=int(batch_size), seed=seed, report=report,
            max_epochs=fit["max_epochs"], patience=fit["patience"],
        )  # fmt: skip
        if value > kept["value"]:  # the first best, as study.best_trial picks it
            kept.update(value=value, model=net)
        return value

    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(),
    )
    study.optimize(objective, n_trials=trials)
    found = {"best_trial": study.best_trial.number, "best_params": study.best_params}
    return kept["model"], {**found, "epochs_trained": kept["epochs"]}


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def l1_prune(model: nn.Module, example: torch.Tensor, target: int) -> tuple[nn.Module, float]:
    """Uniform L1-magnitude channel pruning, the ratio bisected to the largest model <= target."""
    import torch_pruning as tp
    from torchvision.models.vision_transformer import VisionTransformer

    classifier = last_linear(model)
    # torchvision's ViT as torch-pruning's own torchvision example prunes it: widths rounded to
    # a multiple of the heads, and the hidden_dim its forward reshapes with set afterwards.
    vit = isinstance(model, VisionTransformer)

    def pruned(ratio: float) -> nn.Module:
        net = copy.deepcopy(model).eval()
        if ratio > 0:
            tp.pruner.MagnitudePruner(
                net,
                example,
                importance=tp.importance.MagnitudeImportance(p=1),
                pruning_ratio=ratio,
                ignored_layers=[net.get_submodule(classifier)],
                round_to=net.encoder.layers[0].num_heads if vit else None,
            ).step()
            if vit:
                net.hidden_dim = net.conv_proj.out_channels
        return net

    if count_params(model) <= target:
        return copy.deepcopy(model), 0.0
    low, high = 0.0, 0.95
    best = pruned(high)
    if count_params(best) > target:
        raise ValueError(f"pruning 95% of the channels leaves {count_params(best)} > {target=}")
    for _ in range(14):
        mid = (low + high) / 2
        net = pruned(mid)
        if count_params(net) <= target:
            high, best = mid, net
        else:
            low = mid
    return best, high


# --- Worker processes -------------------------------------------------------------------------


def import_file(path: str) -> Any:
    """Import a Python file under its stem, as autotune's --arch does (so pickles agree)."""
    stem = Path(path).stem
    if stem in sys.modules:
        return sys.modules[stem]
    spec = importlib.util.spec_from_file_location(stem, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path!r}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[stem] = module
    spec.loader.exec_module(module)
    return module


def load_task(spec: dict[str, Any]) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """The source model and the target data, as a user's own script would load them."""
    if spec["model"] == "demo":
        import autotune

        model = copy.deepcopy(autotune.load_model("demo").module)
        task = autotune.load_data("demo")
        return model.eval(), {k: getattr(task, k) for k in SPLITS}
    where, name = spec["arch"].rsplit(":", 1)
    kwargs = {"num_classes": spec["num_classes"]} if spec.get("num_classes") else {}
    if where == "torchvision":
        import torchvision

        model = torchvision.models.get_model(name, weights=None, **kwargs)
    else:
        model = getattr(import_file(where), name)(**kwargs)
    model.load_state_dict(torch.load(spec["model"], weights_only=True))
    return model.eval(), torch.load(spec["data"], weights_only=True)


def worker(args: argparse.Namespace) -> None:
    """Run one P-method on one task and seed; write its result JSON and its model."""
    torch.set_num_threads(1)
    spec = json.loads(Path(args.task_file).read_text())
    model, data = load_task(spec)
    # On a GPU the P-methods train there too, as autotune does (its --device is auto).
    model = model.to(args.device)
    data = {k: v.to(args.device) for k, v in data.items()}
    fit = {"max_epochs": args.max_epochs, "patience": args.patience}
    result: dict[str, Any] = {}
    if args.worker == "p1":
        result["val_accuracy"] = standard_fine_tune(model, data, args.seed, fit)
    elif args.worker == "p2":
        model, result = optuna_search(model, data, args.seed, args.trials, fit)
        result["val_accuracy"] = accuracy(model, data["x_val"], data["y_val"])
    elif args.worker == "p3":
        target = args.target_params or count_params(model) // 2
        model, ratio = l1_prune(model, data["x_train"][:2], target)
        result.update(prune_ratio=ratio, target_params=target)
        result["val_accuracy"] = standard_fine_tune(model, data, args.seed, fit)
    else:
        result["val_accuracy"] = accuracy(model, data["x_val"], data["y_val"])
    result["test_accuracy"] = accuracy(model, data["x_test"], data["y_test"])
    torch.save(model.cpu(), args.save)
    Path(args.result).write_text(json.dumps(result))


def latency_ms(model: nn.Module, x: torch.Tensor) -> float:
    """Median wall time of a forward pass over LATENCY_BATCH samples, after warm-up."""
    batch = x[:LATENCY_BATCH]
    batch = batch.repeat(-(-LATENCY_BATCH // len(batch)), *[1] * (batch.ndim - 1))[:LATENCY_BATCH]
    model.eval()
    times = []
    with torch.no_grad():
        for i in range(LATENCY_WARMUP + LATENCY_REPEATS):
            start = time.perf_counter()
            model(batch)
            if i >= LATENCY_WARMUP:
                times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def measure(args: argparse.Namespace) -> None:
    """Untimed: parameters, MACs and latency of a saved model and of its source, in one process."""
    import torch_pruning as tp

    torch.set_num_threads(1)
    sys.path.insert(0, str(BENCH))
    spec = json.loads(Path(args.task_file).read_text())
    source, data = load_task(spec)
    model = torch.load(args.measure, weights_only=False).eval()
    x = data["x_test"]
    x_model = x[:, args.columns] if args.columns else x  # autotune dropped input features
    out: dict[str, Any] = {}
    for name, net, inputs in (("source", source, x), ("model", model, x_model)):
        with torch.no_grad():
            macs, _ = tp.utils.count_ops_and_params(net, inputs[:1])
        out[f"{name}_params"] = count_params(net)
        out[f"{name}_macs"] = int(macs)
    # Interleaved, so machine noise hits both alike.
    times: dict[str, list[float]] = {"source": [], "model": []}
    for _ in range(3):
        times["source"].append(latency_ms(source, x))
        times["model"].append(latency_ms(model, x_model))
    out["source_latency_ms"] = statistics.median(times["source"])
    out["model_latency_ms"] = statistics.median(times["model"])
    Path(args.result).write_text(json.dumps(out))


# --- The driver -------------------------------------------------------------------------------


def build_tasks(names: list[str], folder: Path) -> dict[str, Path]:
    """Write each task's files and a JSON spec the workers read; return the spec paths."""
    torch.set_num_threads(1)
    sys.path.insert(0, str(BENCH))
    import peer_tasks

    specs = {}
    for name in names:
        start = time.perf_counter()
        if name == "demo":
            import autotune

            autotune.load_model("demo")  # builds and caches the demo outside any timing
            autotune.load_data("demo")
            spec: dict[str, Any] = {"model": "demo", "data": "demo"}
        else:
            spec = getattr(peer_tasks, f"build_{name}")(folder, seed=TASK_SEED)
        specs[name] = folder / f"{name}.json"
        specs[name].write_text(json.dumps(spec))
        print(f"task {name}: built in {time.perf_counter() - start:.1f}s {spec}", flush=True)
    return specs


def search_command(spec: dict[str, Any], out: Path, trials: int, seed: int) -> list[str]:
    """``autotune search`` on a task ``spec`` with one thread, into a fresh ``out`` (a folder
    left from an earlier run would continue its study)."""
    shutil.rmtree(out, ignore_errors=True)
    command = [*autotune_command(), "search", "--model", spec["model"], "--data", spec["data"]]
    if spec.get("arch"):
        command += ["--arch", spec["arch"]]
    if spec.get("num_classes"):
        command += ["--num-classes", str(spec["num_classes"])]
    command += ["--trials", str(trials), "--seed", str(seed), "--threads", "1"]
    return [*command, "--out", str(out)]


def autotune_command() -> list[str]:
    script = Path(sys.executable).parent / "autotune"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "autotune.cli"]


def timed(command: list[str], log: Path, **extra_env: str) -> tuple[int, float]:
    """Run ``command`` with one thread everywhere; its exit code and whole wall time."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    env.update(extra_env)
    with log.open("w") as f:
        start = time.perf_counter()
        rc = subprocess.run(command, stdout=f, stderr=subprocess.STDOUT, env=env).returncode
        return rc, time.perf_counter() - start


def cold_cache(folder: Path) -> Path:
    """An autotune cache folder holding only the demo's model and data (copied, untimed)."""
    import autotune

    shutil.rmtree(folder, ignore_errors=True)
    demo = Path(autotune.load_model("demo").path).parent
    shutil.copytree(demo, folder / demo.name)
    return folder


def tail(log: Path, lines: int = 8) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def run_one(
    method: str,
    task: str,
    spec_path: Path,
    seed: int,
    args: argparse.Namespace,
    work: Path,
    slim_params: int | None,
) -> dict[str, Any]:
    """One method on one task and seed, as its own process; the JSON-lines record."""
    spec = json.loads(spec_path.read_text())
    tag = f"{task}-{method}-s{seed}"
    log, result = work / f"{tag}.log", work / f"{tag}.json"
    record: dict[str, Any] = {"task": task, "method": method, "seed": seed, "trials": args.trials}
    measure_columns: list[int] = []
    if method.startswith("autotune"):
        out = work / tag
        command = search_command(spec, out, args.trials, seed)
        slim = method.startswith("autotune-slim")
        space = SLIM_SPACE.get(task) if slim else DEFAULT_SPACE
        if space:
            command += ["--space", space]
        if slim:
            command += ["--max-params", getattr(args, "max_params", MAX_PARAMS)]
        if method.endswith("-finalists"):
            command += ["--finalists", str(FINALISTS)]
        if method == "autotune-refit":
            command += ["--refit"]
        if args.quick:
            command += ["--epochs", str(args.max_epochs), "--patience", str(args.patience)]
        cache: dict[str, str] = {}
        if COLD_CACHE:
            cache["AUTOTUNE_CACHE_DIR"] = str(cold_cache(work / f"{tag}-cache"))
        rc, wall = timed(command, log, **cache)
        record.update(command=shlex.join(command), rc=rc, wall_s=wall, **cache)
        config_path = out / "best" / "config.yaml"
        if rc != 0 or not config_path.is_file():
            return {**record, "rc": rc or -1, "error": tail(log)}
        import yaml

        config = yaml.safe_load(config_path.read_text())
        structure, metrics = config["structure"], config["metrics"]
        inputs = structure.get("inputs") or {}
        measure_columns = list(inputs.get("indices") or [])
        record.update(
            test_accuracy=metrics.get("test_accuracy"),
            val_accuracy=metrics.get("val_accuracy"),
            params=structure["params"]["model"],
            source_params=structure["params"]["source"],
            macs=structure["macs"]["model"],
            source_macs=structure["macs"]["source"],
            latency_ms=structure["latency_ms"]["model"],
            source_latency_ms=structure["latency_ms"]["source"],
            # Timed alternately with the source: steadier on a loaded machine than the ratio
            # of the two medians, which the table falls back to for older results.
            latency_ratio=structure["latency_ms"].get("ratio"),
            best_trial=config.get("trial"),
            best_params=config.get("params"),
            inputs_kept=len(measure_columns) or None,
            epochs_trained=search_epochs(out),
        )
        saved = out / "best" / "model.pt"
    else:
        saved = work / f"{tag}.pt"
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", method]
        command += ["--task-file", str(spec_path), "--seed", str(seed)]
        command += ["--trials", str(args.trials)]
        command += ["--max-epochs", str(args.max_epochs), "--patience", str(args.patience)]
        command += ["--result", str(result), "--save", str(saved)]
        command += ["--device", getattr(args, "device", "cpu")]
        if method == "p3" and slim_params:
            command += ["--target-params", str(slim_params)]
        result.unlink(missing_ok=True)
        rc, wall = timed(command, log)
        record.update(command=shlex.join(command), rc=rc, wall_s=wall)
        if rc != 0 or not result.is_file():
            return {**record, "rc": rc or -1, "error": tail(log)}
        record.update(json.loads(result.read_text()))
    # The bench's own measurement, for every method alike (untimed).
    command = [sys.executable, str(Path(__file__).resolve()), "--measure", str(saved)]
    command += ["--task-file", str(spec_path), "--result", str(result)]
    if measure_columns:
        command += ["--columns", *map(str, measure_columns)]
    mrc, _ = timed(command, work / f"{tag}-measure.log")
    if mrc == 0:
        measured = json.loads(result.read_text())
        record["bench"] = measured
        if not method.startswith("autotune"):
            record.update(
                params=measured["model_params"],
                source_params=measured["source_params"],
                macs=measured["model_macs"],
                source_macs=measured["source_macs"],
                latency_ms=measured["model_latency_ms"],
                source_latency_ms=measured["source_latency_ms"],
            )
    else:
        record["measure_error"] = tail(work / f"{tag}-measure.log")
    return record


def machine() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    text = cpuinfo.read_text() if cpuinfo.is_file() else ""
    names = [line.split(":", 1)[1].strip() for line in text.splitlines() if "model name" in line]
    cpu = names[0] if names else platform.processor() or "unknown CPU"
    import optuna

    # The installed distribution's version: torch_pruning.__version__ said 1.6.0 in 1.6.1.
    return (
        f"{platform.machine()} {cpu}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"1 torch thread per process, CPU; optuna {optuna.__version__}, "
        f"torch-pruning {importlib.metadata.version('torch-pruning')}"
    )


# --- The table --------------------------------------------------------------------------------


def _mean_std(values: list[float]) -> str:
    if not values:
        return "n/a"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.1f} ± {100 * std:.1f}"


def _ratio(rows: list[dict[str, Any]], key: str) -> list[float]:
    return [r[key] / r[f"source_{key}"] for r in rows if r.get(key) and r.get(f"source_{key}")]


def _acc(rows: list[dict[str, Any]]) -> list[float]:
    return [r["test_accuracy"] for r in rows if r.get("test_accuracy") is not None]


def _mean(values: list[float]) -> float | None:
    return statistics.mean(values) if values else None


def search_epochs(out: Path) -> int | None:
    """The epochs every trial of the search in ``out`` trained, summed; None without its study."""
    if not out.is_dir():
        return None
    import optuna

    from autotune.search.study import load_study

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trials = load_study(None, out).get_trials(deepcopy=False)
    return sum(int(t.user_attrs.get("epochs") or 0) for t in trials)


def run_folder(record: dict[str, Any]) -> Path | None:
    """The output folder an autotune record's command names (``--out``), if it names one."""
    words = shlex.split(record.get("command", ""))
    return Path(words[words.index("--out") + 1]) if "--out" in words[:-1] else None


def with_epochs(record: dict[str, Any]) -> dict[str, Any]:
    """An autotune record with its search's epochs: results written before the bench recorded
    them count them in the run folder its command names, while that folder exists."""
    if not record.get("method", "").startswith("autotune") or "epochs_trained" in record:
        return record
    out = run_folder(record)
    return {**record, "epochs_trained": search_epochs(out)} if out else record


def _pair(r: dict[str, Any], key: str) -> tuple[int, Any]:
    """What a run is matched with P2's on: its seed and, for walls, its bench run (``run``,
    which merging results files sets): seconds measured apart on a shared machine do not
    compare; epochs do."""
    return (r["seed"], r.get("run") if key == "wall_s" else None)


def per_seed_ratio(
    runs: list[dict[str, Any]], p2_runs: list[dict[str, Any]], key: str = "wall_s"
) -> float | None:
    """A method's ``key`` against P2's: the mean over the seeds both ran of that seed's ratio
    (walls only where both ran in one bench run)."""
    p2 = {_pair(r, key): r[key] for r in p2_runs if r.get(key)}
    return _mean([r[key] / p2[_pair(r, key)] for r in runs if r.get(key) and _pair(r, key) in p2])


def paired_seeds(
    runs: list[dict[str, Any]], p2_runs: list[dict[str, Any]], key: str = "wall_s"
) -> list[int]:
    """The seeds ``per_seed_ratio`` compares ``key`` on."""
    p2 = {_pair(r, key) for r in p2_runs if r.get(key)}
    return sorted({r["seed"] for r in runs if r.get(key) and _pair(r, key) in p2})


def label(method: str, meta: dict[str, Any]) -> str:
    """A method's name in the table, with the parameter budget its run was given."""
    return LABELS[method].replace(MAX_PARAMS, str(meta.get("max_params", MAX_PARAMS)))


def table(
    records: list[dict[str, Any]],
    meta: dict[str, Any],
    title: str = "autotune against its peers",
    goals: Callable[[list[str], dict[tuple[str, str], list[dict[str, Any]]]], list[str]]
    | None = None,
) -> list[str]:
    """The Markdown section: a table per task, then the issue's targets against the numbers
    (``goals``: the lines that judge them; this bench's ``targets`` by default)."""
    done = next((r for r in records if "done" in r), None)
    runs = [r for r in records if "method" in r]
    lines = [
        f"### {title} ({meta['date']})",
        "",
        f"Command: `{meta['command']}`  ",
        f"Machine: {meta['machine']}.  ",
        f"Seeds {sorted({r['seed'] for r in runs})}, {meta['trials']} trials for P2 and autotune"
        + (f"; whole run {done['done'] / 60:.1f} min" if done else "")
        + ". Test accuracy in % on the held-out test split, mean ± std and min over seeds; "
        "params, MACs and latency (batch of 32, one thread) against the source model; wall: "
        "the method's whole process, mean over seeds (wall / P2: the mean of each seed's ratio, "
        "over the seeds both ran in one bench run; epochs / P2 the same for the epochs its "
        "trials trained, wherever both ran). autotune's latency is the one it reports in "
        "config.yaml (the bench's own measurement of its model.pt in brackets).",
    ]
    tasks = list(dict.fromkeys(r["task"] for r in runs))
    by = {
        (t, m): [r for r in runs if (r["task"], r["method"]) == (t, m)]
        for t in tasks
        for m in METHODS
    }
    ok = {key: [r for r in rows if r.get("rc") == 0] for key, rows in by.items()}
    every_seed = sorted({r["seed"] for r in runs})
    for task in tasks:
        # A task run on fewer seeds than the others says so: its ± and min are over those.
        seeds = {m: sorted({r["seed"] for r in by[(task, m)]}) for m in METHODS}
        uneven = len({tuple(v) for v in seeds.values() if v}) > 1
        ran = sorted({s for v in seeds.values() for s in v})
        notes = [meta["tasks"][task]] if task in meta.get("tasks", {}) else []
        notes += [f"seeds {ran} only"] if ran != every_seed else []
        lines += [
            "",
            f"**{task}**" + (f" ({'; '.join(notes)})" if notes else ""),
            "",
            "| method | test acc % | min % | params % | MACs % | latency x | wall s | wall / P2 "
            "| epochs / P2 | failed |" + (" seeds |" if uneven else ""),
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
            + (" ---: |" if uneven else ""),
        ]  # fmt: skip
        for method in METHODS:
            rows, good = by[(task, method)], ok[(task, method)]
            if not rows:
                continue
            acc = _acc(good)
            params, macs = _ratio(good, "params"), _ratio(good, "macs")
            lat = [
                r.get("latency_ratio") or r["latency_ms"] / r["source_latency_ms"]
                for r in good
                if r.get("latency_ms") and r.get("source_latency_ms")
            ]
            bench_lat = [
                r["bench"]["model_latency_ms"] / r["bench"]["source_latency_ms"]
                for r in good
                if "bench" in r
            ]
            wall = _mean([r["wall_s"] for r in good])
            lat_text = f"{statistics.mean(lat):.2f}" if lat else "n/a"
            if method.startswith("autotune") and bench_lat:
                lat_text += f" ({statistics.mean(bench_lat):.2f})"
            cells = [
                label(method, meta),
                _mean_std(acc),
                f"{100 * min(acc):.1f}" if acc else "n/a",
                f"{100 * statistics.mean(params):.0f}" if params else "n/a",
                f"{100 * statistics.mean(macs):.0f}" if macs else "n/a",
                lat_text,
                f"{wall:.1f}" if wall is not None else "n/a",
                *(
                    f"{ratio:.2f}"
                    if method.startswith("autotune")
                    and (ratio := per_seed_ratio(good, ok[(task, "p2")], key)) is not None
                    else ""
                    for key in ("wall_s", "epochs_trained")
                ),
                f"{len(rows) - len(good)}/{len(rows)}" if len(rows) > len(good) else "",
            ] + ([", ".join(map(str, seeds[method]))] if uneven else [])
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Targets from the issue (reported, never tuned toward):", ""]
    lines += (goals or targets)(tasks, ok)
    return lines


def targets(tasks: list[str], ok: dict[tuple[str, str], list[dict[str, Any]]]) -> list[str]:
    lines = []

    def acc_mean(task: str, method: str) -> float | None:
        return _mean(_acc(ok[(task, method)]))

    above = 0
    parts, met = [], True
    for task in tasks:
        at, peers = acc_mean(task, "autotune"), [acc_mean(task, m) for m in ("p1", "p2")]
        if at is None or None in peers:
            parts.append(f"{task} n/a")
            met = False
            continue
        best = max(p for p in peers if p is not None)
        met &= at >= best
        above += at >= best + 0.01
        parts.append(f"{task} {100 * (at - best):+.1f} pts")
    lines.append(
        f"- {TARGETS[0]}: autotune - max(P1, P2) = {', '.join(parts)}; "
        f"{above} task(s) >= +1 pt: **{'met' if met and above >= 2 else 'not met'}**"
    )

    parts, met = [], True
    for task in tasks:
        p2 = {r["seed"]: r["test_accuracy"] for r in ok[(task, "p2")]}
        slim = ok[(task, "autotune-slim")]
        gaps = [r["test_accuracy"] - p2[r["seed"]] for r in slim if r["seed"] in p2]
        sizes = _ratio(slim, "params")
        s_mean, p3 = acc_mean(task, "autotune-slim"), acc_mean(task, "p3")
        if not gaps or s_mean is None or p3 is None:
            parts.append(f"{task} n/a")
            met = False
            continue
        task_met = min(gaps) >= -0.01 and max(sizes) <= 0.5 and s_mean > p3
        met &= task_met
        parts.append(
            f"{task}: worst seed vs P2 {100 * min(gaps):+.1f} pts, params <= "
            f"{100 * max(sizes):.0f}%, vs P3 {100 * (s_mean - p3):+.1f} pts"
        )
    lines.append(f"- {TARGETS[1]}: {'; '.join(parts)}: **{'met' if met else 'not met'}**")

    parts, met = [], True
    for task in tasks:
        p2_runs = ok[(task, "p2")]
        at_ratio = per_seed_ratio(ok[(task, "autotune")], p2_runs)
        slim_ratio = per_seed_ratio(ok[(task, "autotune-slim")], p2_runs)
        if at_ratio is None:
            parts.append(f"{task} n/a")
            met = False
            continue
        limit = 1.0 if task == "resnet18" else 2.0
        met &= at_ratio <= limit
        slim_text = f", --max-params {slim_ratio:.2f}x" if slim_ratio is not None else ""
        parts.append(f"{task} default {at_ratio:.2f}x{slim_text} (limit {limit:.0f}x)")
    lines.append(
        f"- {TARGETS[2]}: autotune / P2 = {'; '.join(parts)}: "
        f"**{'met' if met else 'not met'}** (default search)"
    )
    return lines


def read_results(path: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    meta = next((r["meta"] for r in records if "meta" in r), None)
    if meta is None:
        raise SystemExit(f"{str(path)!r} holds no meta line: is it a peers.py results file?")
    return records, meta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK}")
    parser.add_argument("--results", type=Path, help="write raw per-run results (JSON lines)")
    parser.add_argument("--table-only", type=Path, help="rebuild the table from a results file")
    parser.add_argument("--workdir", type=Path, help="keep tasks, logs and runs here")
    parser.add_argument("--write", type=Path, help="append the result to this Markdown file")
    # Internal: one worker or measurement process.
    for name in ("--worker", "--measure", "--task-file", "--result", "--save"):
        parser.add_argument(name, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    parser.add_argument("--max-epochs", type=int, default=MAX_EPOCHS, help=argparse.SUPPRESS)
    parser.add_argument("--patience", type=int, default=PATIENCE, help=argparse.SUPPRESS)
    parser.add_argument("--target-params", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--columns", type=int, nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    if args.measure:
        return measure(args)

    if args.table_only:
        records, meta = read_results(args.table_only)
        records = [with_epochs(r) for r in records]
    else:
        records, meta = run(args)
    lines = table(records, meta)
    if args.write is None:
        print("\n".join(lines))
    else:
        from _shared import emit  # it imports autotune's internals: only here, never in workers

        emit(lines, args.write)


def keep(record: dict[str, Any], records: list[dict[str, Any]], results: Path, name: str) -> None:
    """One run's record: into ``records``, appended to the ``results`` file, and a line."""
    records.append(record)
    with results.open("a") as f:
        f.write(json.dumps(record) + "\n")
    acc = record.get("test_accuracy")
    print(
        f"{record['task']} seed {record['seed']} {name}: rc {record['rc']}, "
        f"test {acc if acc is None else round(acc, 4)}, "
        f"params {record.get('params')}, wall {record['wall_s']:.1f}s"
        + (f"\n  {record['error']}" if "error" in record else ""),
        flush=True,
    )


def run(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    if args.quick:
        args.trials, args.seeds = QUICK["trials"], QUICK["seeds"]
        args.max_epochs, args.patience = QUICK["max_epochs"], QUICK["patience"]
    work = args.workdir or Path(tempfile.mkdtemp(prefix="autotune-peers-"))
    work.mkdir(parents=True, exist_ok=True)
    results = args.results or work / "results.jsonl"
    results.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    specs = build_tasks(args.tasks, work)
    meta = {
        "date": time.strftime("%Y-%m-%d"),
        "command": shlex.join(["python", "bench/peers.py", *sys.argv[1:]]),
        "machine": machine(),
        "seeds": args.seeds,
        "trials": args.trials,
        "quick": args.quick,
        "max_epochs": args.max_epochs,
        "patience": args.patience,
        "slim_space": SLIM_SPACE,
        "default_space": DEFAULT_SPACE,
        "tasks": {t: task_note(t, json.loads(specs[t].read_text())) for t in args.tasks},
    }
    records: list[dict[str, Any]] = [{"meta": meta}]
    with results.open("w") as f:
        f.write(json.dumps({"meta": meta}) + "\n")
    print(f"work folder {work}; results {results}", flush=True)
    for task in args.tasks:
        for seed in args.seeds:
            slim_params = None
            for method in (m for m in RUN_ORDER if m in args.methods):
                record = run_one(method, task, specs[task], seed, args, work, slim_params)
                if method == "autotune-slim" and record.get("rc") == 0:
                    slim_params = record.get("params")
                keep(record, records, results, label(method, meta))
    done = {"done": time.perf_counter() - start}
    records.append(done)
    with results.open("a") as f:
        f.write(json.dumps(done) + "\n")
    print(f"whole run {done['done']:.0f}s; raw results in {results}", flush=True)
    if args.workdir is None and args.results is not None:
        shutil.rmtree(work, ignore_errors=True)
    return records, meta


def task_note(task: str, spec: dict[str, Any]) -> str:
    if task == "demo":
        return "autotune's demo: DigitsCNN, digits rotated 30-60 degrees and blurred"
    train, val, test = spec["sizes"]
    what = {
        "tabular": "breast_cancer magnified x1.5 + 20 noise columns, MLP 50-64-32-2",
        "resnet18": "resnet18 on 3x32x32 digits, target rotated 30-60 degrees and blurred",
    }[task]
    return f"{what}; {train}/{val}/{test} train/val/test"


if __name__ == "__main__":
    main()
