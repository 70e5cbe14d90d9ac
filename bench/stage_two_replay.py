"""What stage 2's out-of-reach rule stops, replayed on finished searches' recorded curves.

For each search folder, every stage-2 trial's validation accuracy per epoch (Optuna's
``intermediate_values``) is judged as ``stages.OutOfReach`` judges it during a search: after the
warm-up, against the top trial among those finished before it (one worker: trials run in
number order), at ``--margin`` standard errors. Prints, per child, whether it would stop and
where it ended against the band the export picks from at the end (the top trial's validation
accuracy minus one standard error), and the stage-2 epochs the rule would leave untrained.
It replays searches made without the rule; on searches made with it, it shows what it did.

``--same-epoch`` adds another rule's verdict: a child judged at each epoch after the warm-up
against the best the top child finished before it had reached by the same epoch (like against
like: both start from a parent), ``--margin`` standard errors under it; against the fixed floor
while no child has finished. Where the search stopped a child, its curve ends there: a verdict
of "goes on" then says only that it would have trained longer.

Run: python bench/stage_two_replay.py OUT [OUT ...] [--margin 3] [--same-epoch]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from optuna.trial import FrozenTrial, TrialState

from autotune.config import SearchSettings
from autotune.search.record import TrialRecord
from autotune.search.selection import exported_trial, standard_error, under_top
from autotune.search.stages import OutOfReach
from autotune.search.study import load_study, study_record, warmup_epochs


def _top(trials: list[FrozenTrial]) -> FrozenTrial:
    return max(trials, key=lambda t: t.values[0])


def best_by(curve: dict[int, float], epoch: int) -> float:
    return max(v for e, v in curve.items() if e <= epoch)


def same_epoch_stop(
    curve: dict[int, float], ref: FrozenTrial | None, floor: float, warmup: int, margin: float
) -> int | None:
    """The epoch at which ``curve`` falls ``margin`` standard errors under ``ref``'s best by
    the same epoch (under ``floor`` without a ``ref``), or None."""
    samples = int(TrialRecord.from_trial(ref).samples or 0) if ref else 0
    for epoch in sorted(e for e in curve if e >= warmup):
        line = floor
        if ref is not None and ref.intermediate_values:
            top = best_by(ref.intermediate_values, epoch)
            line = top - margin * standard_error(top, samples)
        if best_by(curve, epoch) < line:
            return epoch
    return None


def replay(out: Path, margin: float, same_epoch: bool = False) -> None:
    study = load_study(None, out)
    settings = study_record(study).get("settings", {})
    warmup = warmup_epochs(SearchSettings(max_epochs=settings.get("max_epochs") or 20))
    done = [t for t in study.trials if t.state == TrialState.COMPLETE and t.values]
    final = _top(done)
    samples = TrialRecord.from_trial(final).samples
    band = under_top(final)
    assert band is not None, f"{out}: its trials did not record their validation sample count"
    print(
        f"{out}: warm-up {warmup} epochs, {samples} validation samples, "
        f"band {band:.4f} (top trial {final.number}), exported trial {exported_trial(study)}"
    )
    total = untrained = stopped = 0
    stage_two = {t.number for t in study.trials if TrialRecord.from_trial(t).stage == 2}
    for t in study.trials:
        curve = t.intermediate_values
        if TrialRecord.from_trial(t).stage != 2 or not curve:
            continue
        floor = under_top(_top([u for u in done if u.number < t.number]), margin)
        assert floor is not None  # every trial records its sample count, as ``final`` did
        best_at_warmup = best_by(curve, warmup)
        reach = OutOfReach(floor, warmup)  # the search's own rule, told the epochs in order
        stops = any(reach.stops(e, v) for e, v in sorted(curve.items()))
        other = ""
        if same_epoch:
            children = [u for u in done if u.number < t.number and u.number in stage_two]
            ref = _top(children) if children else None
            at = same_epoch_stop(curve, ref, floor, warmup, margin)
            against = f"trial {ref.number}" if ref else "the floor"
            other = f"; same epoch, against {against}: " + (f"stops at {at}" if at else "goes on")
        total += len(curve)
        if stops:
            stopped += 1
            untrained += len(curve) - warmup
        ended = max(curve.values())
        print(
            f"  trial {t.number:3d}: {len(curve):2d} epochs, best by epoch {warmup} "
            f"{best_at_warmup:.3f} against floor {floor:.3f}: "
            f"{'stops' if stops else 'goes on'}; ended {ended:.3f}, "
            f"{100 * (ended - band):+.1f} points from the band, "
            f"{TrialRecord.from_trial(t).total_params or 0:,} params{other}"
        )
    print(
        f"  {stopped} stopped; stage 2 trained {total} epochs, {untrained} of them after the "
        f"warm-up of the children stopped"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outs", type=Path, nargs="+", help="output folders of finished searches")
    parser.add_argument("--margin", type=float, default=3.0, help="standard errors under the top")
    parser.add_argument(
        "--same-epoch",
        action="store_true",
        help="also judge each child against the top child's curve",
    )
    args = parser.parse_args()
    for out in args.outs:
        replay(out, args.margin, args.same_epoch)


if __name__ == "__main__":
    main()
