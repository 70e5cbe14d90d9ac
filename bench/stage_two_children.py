"""What stage 2's slimmed children were, by how much of their parent they kept.

For each finished staged search, every stage-2 child is put in a group by its parameter count
against its parent's: near copies (95% or more kept), light (50-95%) and heavy (under 50%).
Prints per group, summed over the searches: the children, the epochs they trained, how many
ended in the band the export picks from (the top trial's validation accuracy less one standard
error), how many were exported and how many were the top trial, whose score sets that band.

Run: python bench/stage_two_children.py OUT [OUT ...]
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from optuna.trial import FrozenTrial, TrialState

from autotune.search.record import TrialRecord
from autotune.search.selection import exported_trial, under_top
from autotune.search.study import load_study

GROUPS = (("near copy, >= 95% kept", 0.95), ("light, 50-95% kept", 0.5), ("heavy, < 50% kept", 0.0))
"""Each group's name and the smallest share of the parent's parameters it holds."""


def group(child: FrozenTrial, parent: FrozenTrial) -> str:
    kept = child.user_attrs["total_params"] / parent.user_attrs["total_params"]
    return next(name for name, low in GROUPS if kept >= low)


def tally(out: Path, counts: dict[str, Counter[str]]) -> None:
    """Adds one search's children to ``counts`` (group: what is counted)."""
    study = load_study(None, out)
    trials = {t.number: t for t in study.trials}
    done = [t for t in study.trials if t.state == TrialState.COMPLETE and t.values]
    top = max(done, key=lambda t: t.values[0])
    band = under_top(top)
    assert band is not None, f"{out}: its trials did not record their validation sample count"
    export = exported_trial(study)
    for t in study.trials:
        record = TrialRecord.from_trial(t)
        if record.stage != 2 or record.parent is None or "total_params" not in t.user_attrs:
            continue  # not a child, or pruned before it was built
        c = counts.setdefault(group(t, trials[record.parent]), Counter())
        c["children"] += 1
        c["epochs"] += len(t.intermediate_values)
        c["in band"] += t in done and t.values[0] >= band
        c["exported"] += t.number == export
        c["top"] += t.number == top.number


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outs", type=Path, nargs="+", help="output folders of finished searches")
    args = parser.parse_args()
    counts: dict[str, Counter[str]] = {}
    for out in args.outs:
        tally(out, counts)
    epochs = sum(c["epochs"] for c in counts.values())
    print(f"{len(args.outs)} searches, {epochs} stage-2 epochs")
    print("| children | n | epochs | share of stage 2's epochs | in the band | exported | top |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, _ in GROUPS:
        c = counts.get(name, Counter())
        share = c["epochs"] / epochs if epochs else 0.0
        print(
            f"| {name} | {c['children']} | {c['epochs']} | {share:.0%} | {c['in band']} | "
            f"{c['exported']} | {c['top']} |"
        )


if __name__ == "__main__":
    main()
