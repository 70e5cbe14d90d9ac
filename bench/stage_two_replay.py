"""What stage 2's out-of-reach rule stops, replayed on finished searches' recorded curves.

For each search folder, every stage-2 trial's validation accuracy per epoch (Optuna's
``intermediate_values``) is judged as ``stages.OutOfReach`` judges it during a search: after the
warm-up, against the top trial among those finished before it (one worker: trials run in
number order), at ``--margin`` standard errors, and where that top trial is a stage-2 child, at
each epoch no higher than the best it had reached by the same epoch (its pace). Beside it, the
verdict of the fixed floor alone (the rule until 2026-12-08). Prints, per child, both verdicts
and where it ended against the band the export picks from at the end (the top trial's
validation accuracy minus one standard error), and the stage-2 epochs each rule would leave
untrained. Where the search stopped a child, its curve ends there: a verdict of "goes on" then
says only that it would have trained longer.

Run: python bench/stage_two_replay.py OUT [OUT ...] [--margin 3]
     (OUT: a search's output folder, or a study kept as ``*.journal.gz`` under
     ``bench/results/real-scale/``)
"""

from __future__ import annotations

import argparse
import gzip
import tempfile
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from autotune.config import SearchSettings
from autotune.paths import study_file
from autotune.search.record import TrialRecord
from autotune.search.selection import exported_trial, under_top
from autotune.search.stages import OutOfReach
from autotune.search.study import LIMITS, feasible, load_study, study_record, warmup_epochs


def _top(trials: list[FrozenTrial]) -> FrozenTrial:
    return max(trials, key=lambda t: t.values[0])


def best_by(curve: dict[int, float], epoch: int) -> float:
    return max(v for e, v in curve.items() if e <= epoch)


def stop_epoch(reach: OutOfReach, curve: dict[int, float]) -> int | None:
    """The epoch at which ``reach`` stops ``curve`` (told every epoch in order), or None."""
    return next((e for e, v in sorted(curve.items()) if reach.stops(e, v)), None)


def replay(out: Path, margin: float) -> None:
    if out.name.endswith(".journal.gz"):  # a kept study: read in a folder of its own
        with tempfile.TemporaryDirectory() as folder:
            with gzip.open(out) as kept:
                study_file(Path(folder)).write_bytes(kept.read())
            return replay_study(load_study(None, Path(folder)), out, margin)
    return replay_study(load_study(None, out), out, margin)


def replay_study(study: optuna.Study, out: Path, margin: float) -> None:
    settings = study_record(study).get("settings", {})
    warmup = warmup_epochs(SearchSettings(max_epochs=settings.get("max_epochs") or 20))
    # Within the study's size budgets, as the search ranks them: under --max-params no trial
    # of stage 1 is, and a child is judged only once another child has finished.
    limits = study.user_attrs.get(LIMITS)
    done = [
        t
        for t in study.trials
        if t.state == TrialState.COMPLETE and t.values and feasible(t, limits)
    ]
    final = _top(done)
    samples = TrialRecord.from_trial(final).samples
    band = under_top(final)
    assert band is not None, f"{out}: its trials did not record their validation sample count"
    print(
        f"{out}: warm-up {warmup} epochs, {samples} validation samples, "
        f"band {band:.4f} (top trial {final.number}), exported trial {exported_trial(study)}"
    )
    total = children = 0
    left = {"pace": 0, "fixed": 0}
    stopped = {"pace": 0, "fixed": 0}
    for t in study.trials:
        curve = t.intermediate_values
        if TrialRecord.from_trial(t).stage != 2 or not curve:
            continue
        before = [u for u in done if u.number < t.number]
        top = _top(before) if before else None
        floor = None if top is None else under_top(top, margin)
        rec = TrialRecord.from_trial(top) if top is not None else TrialRecord()
        pace = dict(top.intermediate_values) if top is not None and rec.stage == 2 else {}
        number = None if top is None else top.number
        judged = OutOfReach(floor, warmup, pace, int(rec.samples or 0), number, margin)
        verdicts = {
            "pace": stop_epoch(judged, curve),
            "fixed": stop_epoch(OutOfReach(floor, warmup, margin=margin), curve),
        }
        total, children = total + len(curve), children + 1
        for rule, at in verdicts.items():
            left[rule] += 0 if at is None else len(curve) - at
            stopped[rule] += at is not None
        said = {r: "goes on" if at is None else f"stops at {at}" for r, at in verdicts.items()}
        ended = max(curve.values())
        print(
            f"  trial {t.number:3d}: {len(curve):2d} epochs, best by epoch {warmup} "
            f"{best_by(curve, warmup):.3f}; "
            + (
                "no trial within the budgets to judge it by yet; "
                if floor is None
                else f"against trial {number}'s pace "
                f"{'(a stage-2 child)' if pace else '(none: stage 1)'}: {said['pace']}; "
                f"the fixed floor {floor:.3f}: {said['fixed']}; "
            )
            + f"ended {ended:.3f}, "
            f"{100 * (ended - band):+.1f} points from the band, "
            f"{TrialRecord.from_trial(t).total_params or 0:,} params"
        )
    print(
        f"  {children} children trained, {total} epochs; stopped with the pace "
        f"{stopped['pace']} ({left['pace']} epochs trained after the stop), with the fixed "
        f"floor {stopped['fixed']} ({left['fixed']})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outs", type=Path, nargs="+", help="output folders of finished searches")
    parser.add_argument("--margin", type=float, default=3.0, help="standard errors under the top")
    args = parser.parse_args()
    for out in args.outs:
        replay(out, args.margin)


if __name__ == "__main__":
    main()
