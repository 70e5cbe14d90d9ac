"""Where a small search's time goes: one profiled ``autotune.search`` on a task of bench/peers.py,
plus the one-off costs every process pays (importing shap, AdamW's first step).

Run (after ``python bench/peers.py --tasks tabular --workdir runs/peers/new`` built the task):
    python bench/fixed_cost.py --model runs/peers/new/tabular-model.pt \\
        --arch bench/peer_tasks.py:TabularMLP --data runs/peers/new/tabular-data.pt [--write ...]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from _shared import emit

PHASES = {
    "fine-tuning (trial/fit.py fine_tune)": ("fit.py", "fine_tune"),
    "  of which building the optimizers (make_optimizer)": (
        "fit.py",
        "make_optimizer",
    ),
    "    of which the first one's import of torch._dynamo (once a process)": (
        "torch/_dynamo/__init__.py",
        "<module>",
    ),
    "reporting epochs to the pruner (objective on_epoch)": ("objective.py", "on_epoch"),
    "sampling parameters (space.suggest)": ("space.py", "suggest"),
    "analyses (prepare.run_analyses)": ("prepare.py", "run_analyses"),
    "export (results/export.py export_trial)": ("export.py", "export_trial"),
    "charts, dashboard files, report (api._publish)": ("api.py", "_publish"),
    "  of which the parameter importances (optuna's, importing scikit-learn)": (
        "_param_importances.py",
        "plot_param_importances",
    ),
    "waiting for SQLite to commit (every storage write)": (
        "~",
        "<method 'commit' of 'sqlite3.Connection' objects>",
    ),
}


def one_off(code: str) -> float:
    """Seconds a fresh interpreter spends on ``code`` after importing torch."""
    timed = f"import time, torch; t = time.perf_counter(); {code}; print(time.perf_counter() - t)"
    return float(subprocess.run([sys.executable, "-c", timed], capture_output=True, text=True,
                                check=True).stdout)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--arch")
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--write", type=Path, help="append the results to this Markdown file")
    args = parser.parse_args()
    import torch
    from rich.console import Console

    import autotune
    from autotune.load.job import DataSpec, ModelSpec

    torch.set_num_threads(1)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        # An empty cache, so the analyses are computed as on a first run.
        os.environ["AUTOTUNE_CACHE_DIR"] = str(Path(tmp) / "cache")
        profile = cProfile.Profile()
        profile.enable()
        autotune.search(
            ModelSpec(args.model, arch=args.arch), DataSpec(args.data), trials=args.trials,
            out=Path(tmp) / "out", console=Console(file=io.StringIO()),
        )  # fmt: skip
        profile.disable()
    total = time.perf_counter() - started
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    rows = []
    for label, (file, name) in PHASES.items():
        seconds = sum(v[3] for k, v in stats.items() if k[0].endswith(file) and k[2] == name)
        rows.append(f"| {label} | {seconds:.1f} |")
    shap_import = one_off("import shap")
    adamw = one_off(
        "m = torch.nn.Linear(3, 3); o = torch.optim.AdamW(m.parameters()); "
        "m(torch.ones(1, 3)).sum().backward(); o.step()"
    )
    emit(
        [
            f"### Where a small search's time goes ({date.today()})",
            "",
            f"Command: `python bench/fixed_cost.py --model {args.model} --arch {args.arch} "
            f"--data {args.data} --trials {args.trials}`  ",
            f"One torch thread, under cProfile (which slows Python-heavy parts); "
            f"the search {total:.1f} s (empty cache); `import autotune` in a fresh process "
            f"{one_off('import autotune'):.1f} s after torch.",
            "",
            "| phase | seconds |",
            "| --- | ---: |",
            *rows,
            f"| one-off, fresh process: `import shap` (off the search path) | {shap_import:.1f} |",
            f"| one-off, fresh process: AdamW's first step (P1 and P2 pay it too) | {adamw:.1f} |",
        ],
        args.write,
    )


if __name__ == "__main__":
    main()
