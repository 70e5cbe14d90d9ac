"""How much of a search's result is the luck of its pick: every trial's held-out test accuracy.

For finished searches (``autotune search`` output folders, e.g. those ``bench/peers.py
--workdir W`` leaves as ``W/<task>-autotune*-s<seed>``), this rebuilds every completed trial's
model the way ``autotune export`` would (from its checkpoint, else retrained with its seed: the
same model on one CPU thread) and scores it on the validation and test splits. Then it applies
selection rules that read only validation scores and sizes, and reports the test accuracy each
rule's pick has, beside the best trial in hindsight (the oracle, which no rule can know) and the
mean over all trials. It is a diagnostic of selection noise: it never feeds back into a search.

Rules:
- best: the search's top trial (``search.study.rank_key``: validation accuracy, ties to the lower
  validation loss);
- loss: the lowest validation loss;
- one-se: ``search.selection.simplest``, what ``--select simplest`` exports without a size
  budget: the smallest model whose validation accuracy is within one standard error of the top
  one's and no lower than the recipe's. Size budgets are not applied here.

Run: python bench/selection.py OUT [OUT ...] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import torch


def trial_rows(out: Path) -> list[dict[str, Any]]:
    """Validation and test scores, size and stage of every completed trial of the search in
    ``out``."""
    from optuna.trial import TrialState

    from autotune.config import SearchSettings
    from autotune.load.job import Job
    from autotune.results.export import Workspace, rebuild
    from autotune.search.selection import simplest
    from autotune.search.study import load_study, metric_sign, rank_key, space_of, study_record
    from autotune.trial.fit import evaluate

    study = load_study(None, out)
    record = study_record(study)
    # The bench wrote these studies itself: what they name is its own code.
    job = Job.from_record(record, trust_model=True)
    settings = SearchSettings(
        out=out, study_name=study.study_name, device="cpu", **record["settings"]
    )
    work = Workspace.create(job, space_of(record), settings, study)
    trials = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not t.user_attrs.get("baseline")
    ]
    # The search's own ranking and one-standard-error pick, size budgets not applied.
    ranked = sorted(trials, key=lambda t: rank_key(t, metric_sign(study)), reverse=True)
    top, one_se = (ranked[0].number, simplest(ranked).number) if ranked else (None, None)
    rows = []
    for trial in trials:
        rebuilt = rebuild(work, study, trial)
        data = rebuilt.data
        val = evaluate(rebuilt.model, data.x_val, data.y_val)
        test = evaluate(rebuilt.model, data.x_test, data.y_test)
        rows.append(
            {
                "trial": trial.number,
                "stage": 2 if "parent" in trial.user_attrs else 1,
                "recipe": bool(trial.user_attrs.get("recipe")),
                "val_accuracy": val.accuracy,
                "val_loss": val.loss,
                "stored_val": trial.values[0],
                "test_accuracy": test.accuracy,
                "params": int(trial.user_attrs.get("total_params") or 0),
                "n_val": len(data.y_val),
                "top": trial.number == top,
                "one_se": trial.number == one_se,
            }
        )
    return rows


def pick(rows: list[dict[str, Any]], rule: str) -> dict[str, Any]:
    """The trial ``rule`` (see the module's docstring) chooses from ``rows``."""
    if rule == "best":
        return next(r for r in rows if r["top"])
    if rule == "loss":
        return min(rows, key=lambda r: (r["val_loss"], r["trial"]))
    if rule == "one-se":
        return next(r for r in rows if r["one_se"])
    raise ValueError(rule)


RULES = ("best", "loss", "one-se")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outs", type=Path, nargs="+", help="output folders of searches")
    parser.add_argument("--json", type=Path, help="write every trial's scores here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    per_run: dict[str, list[dict[str, Any]]] = {}
    for out in args.outs:
        per_run[out.name] = trial_rows(out)
        print(f"{out.name}: {len(per_run[out.name])} trials rebuilt", file=sys.stderr, flush=True)
    if args.json:
        args.json.write_text(json.dumps(per_run, indent=1))
    header = ["search", "trials", "all trials: mean test", "oracle test"]
    header += [f"{rule}: test (params)" for rule in RULES]
    print("| " + " | ".join(header) + " |")
    print("| " + " | ".join(["---"] + ["---:"] * (len(header) - 1)) + " |")
    for name, rows in per_run.items():
        if not rows:
            continue
        tests = [r["test_accuracy"] for r in rows]
        cells = [name, str(len(rows)), f"{100 * statistics.mean(tests):.1f}"]
        cells.append(f"{100 * max(tests):.1f}")
        for rule in RULES:
            chosen = pick(rows, rule)
            cells.append(f"{100 * chosen['test_accuracy']:.1f} ({chosen['params']})")
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
