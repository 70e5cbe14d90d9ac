"""What Optuna's storages cost a small search, apart from any training.

The same work as a 30-trial search's storage calls (8 parameters sampled, 10 epochs each
reported with a pruning check, 21 user attributes), against a SQLite file (the default study
file of earlier versions), a journal file (the default now), and memory. Prints seconds to
create the study and to run the trials.

Run: python bench/storage_cost.py [--trials 30] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import optuna
from optuna.storages.journal import JournalFileBackend, JournalStorage


def cost(storage: object, trials: int) -> tuple[float, float]:
    start = time.perf_counter()
    pruner = optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=3)
    study = optuna.create_study(storage=storage, direction="maximize", pruner=pruner)  # type: ignore[arg-type]
    created = time.perf_counter()
    for _ in range(trials):
        trial = study.ask()
        for k in range(8):
            trial.suggest_float(f"p{k}", 0.0, 1.0)
        trial.set_user_attr("worker", "host:1")
        for epoch in range(10):
            trial.report(0.5 + epoch / 100, epoch)
            trial.should_prune()
        for k in range(20):
            trial.set_user_attr(f"a{k}", k)
        study.tell(trial, 0.9)
    return created - start, time.perf_counter() - created


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    folder = args.workdir or Path(tempfile.mkdtemp())
    folder.mkdir(parents=True, exist_ok=True)
    storages = {
        "sqlite file": f"sqlite:///{folder / 'study.db'}",
        "journal file": JournalStorage(JournalFileBackend(str(folder / "journal.log"))),
        "memory": None,
    }
    print("| storage | create s | trials s |\n| --- | ---: | ---: |")
    for name, storage in storages.items():
        created, ran = cost(storage, args.trials)
        print(f"| {name} | {created:.3f} | {ran:.2f} |")


if __name__ == "__main__":
    main()
