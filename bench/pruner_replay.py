"""What stage 1's pruning rules cost and save, replayed on finished searches' curves.

For each search folder, the trials the study's median pruner judges (stage 1 of a staged search,
every trial otherwise) are judged again, in number order as one worker ran them, as Optuna's
``MedianPruner`` judges: from the epoch ``--warmups`` names on, once ``--startups``' count of trials
has completed, a trial whose best so far is under the median of the completed trials at that epoch
stops. ``--reach`` adds a rule the search does not have: from the warm-up on, a trial whose best so
far is that many standard errors under the best completed trial's best by the same epoch stops too,
start-up or not. A trial the replay stops no longer counts as completed for those after it.
``--hyperband MIN ...`` replays Optuna's ``HyperbandPruner`` (up to the search's ``max_epochs``,
reduction factor 3) with each of those first rungs, in epochs, instead of the median pruner;
``--pruner hyperband`` runs it with 2 (``make_sampler_and_pruner``). The trials the search itself
stopped still end where they did. Prints, per rule, the epochs those trials would have trained, how
many stop, and whether the trial stage 2 slimmed (or, unstaged, the top trial) would have been
stopped, and at which epoch; with several folders, a table of the sums.

What it cannot tell: a trial stopped earlier gives the sampler another value, so the trials
after the first changed verdict would have been sampled differently. The epochs and verdicts
are those of the recorded trials; a search run with the rule is the measurement.

Run: python bench/pruner_replay.py OUT [OUT ...] [--warmups 0 1 2 3] [--startups 1 3]
[--reach 3 5] [--hyperband 2 5] (each besides the rule as run)
"""

from __future__ import annotations

import argparse
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.pruners import HyperbandPruner
from optuna.trial import FrozenTrial, TrialState

from autotune.config import SearchSettings
from autotune.search.record import TrialRecord
from autotune.search.selection import exported_trial, standard_error
from autotune.search.study import (
    WarmedMedianPruner,
    load_study,
    start_up,
    study_record,
    warmup_epochs,
)


@dataclass(frozen=True)
class Rule:
    """A pruning rule to replay: the median pruner's start-up and warm-up, and maybe the reach
    rule's standard errors (``reach``)."""

    startup: int
    warmup: int
    reach: float | None = None

    def label(self, as_run: Rule) -> str:
        changed = [
            f"start-up {self.startup}" if self.startup != as_run.startup else "",
            f"warm-up {self.warmup}" if self.warmup != as_run.warmup else "",
            f"reach {self.reach:g} SE" if self.reach is not None else "",
        ]
        return ", ".join(c for c in changed if c) or "as run"


@dataclass
class Replayed:
    """One rule's verdicts on the judged trials."""

    epochs: int = 0
    stopped: dict[int, int] = field(default_factory=dict)
    """Trial number: the epoch after which the replay (or the search itself) stopped it."""
    by_rule: set[int] = field(default_factory=set)
    """The trials of ``stopped`` that the replayed rule stopped (not the search alone)."""

    def add(self, t: FrozenTrial, curve: list[tuple[int, float]], ends: int | None) -> bool:
        """Judged trial ``t``'s verdict: the rule stopped it after epoch ``ends`` (None: it did
        not). Whether it completes: a trial the search itself stopped ends where its curve does."""
        if ends is not None:
            self.by_rule.add(t.number)
        elif t.state != TrialState.COMPLETE:
            ends = curve[-1][0]
        self.epochs += len([s for s, _ in curve if ends is None or s <= ends])
        if ends is not None:
            self.stopped[t.number] = ends
        return ends is None


def judged(trials: list[FrozenTrial], staged: bool) -> list[FrozenTrial]:
    """The trials the study's median pruner judged, in number order."""
    kept = [t for t in trials if t.intermediate_values and t.state != TrialState.RUNNING]
    if staged:
        kept = [t for t in kept if TrialRecord.from_trial(t).stage == 1]
    return sorted(kept, key=lambda t: t.number)


def out_of_reach(
    best: float, step: int, completed: list[dict[int, float]], rule: Rule, samples: int | None
) -> bool:
    """The reach rule: ``best`` is ``rule.reach`` standard errors under the best that a
    completed trial had reached by ``step``."""
    if rule.reach is None or not samples:
        return False
    leads = [max(v for s, v in c.items() if s <= step) for c in completed if c and min(c) <= step]
    if not leads:
        return False
    lead = max(leads)
    return best < lead - rule.reach * standard_error(lead, samples)


def replay(
    trials: list[FrozenTrial], mine: list[FrozenTrial], rule: Rule, samples: int | None = None
) -> Replayed:
    """``rule`` on the recorded curves of the judged trials ``mine``; the other completed
    trials before them (the baseline, which trains no epoch) count toward the start-up as they
    do in Optuna. ``samples``: the validation set's size, for the reach rule."""
    judged_numbers = {t.number for t in mine}
    last = max(judged_numbers)
    completed: list[dict[int, float]] = []
    tally = Replayed()
    for t in sorted(trials, key=lambda t: t.number):
        if t.number > last:
            break
        if t.number not in judged_numbers:
            if t.state == TrialState.COMPLETE:
                completed.append(dict(t.intermediate_values))
            continue
        curve = sorted(t.intermediate_values.items())
        best, ends = -math.inf, None
        for step, value in curve:
            best = max(best, value)
            if step < rule.warmup:
                continue
            at_step = [c[step] for c in completed if step in c]
            median = len(completed) >= rule.startup and at_step
            if (median and best < statistics.median(at_step)) or out_of_reach(
                best, step, completed, rule, samples
            ):
                ends = step
                break
        if tally.add(t, curve, ends):
            completed.append(dict(curve))
    return tally


def replay_pruner(
    trials: list[FrozenTrial], mine: list[FrozenTrial], pruner: optuna.pruners.BasePruner, name: str
) -> Replayed:
    """Optuna's own ``pruner`` on the recorded curves of ``mine``, in an in-memory study named
    ``name`` (Hyperband puts a trial in a bracket by the study's name and the trial's number),
    whose trials keep their numbers: the ones before the last judged trial that it does not
    judge (the baseline) are told as they ended."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=name, direction="maximize", pruner=pruner)
    judged_numbers = {t.number for t in mine}
    tally = Replayed()
    for t in sorted(trials, key=lambda t: t.number):
        if t.number > max(judged_numbers):
            break
        trial = study.ask()
        assert trial.number == t.number, "the replay's trial numbers follow the search's"
        if t.number not in judged_numbers:
            if t.state == TrialState.COMPLETE and t.values:
                study.tell(trial, t.values[0])
            else:
                study.tell(trial, state=TrialState.PRUNED)
            continue
        curve = sorted(t.intermediate_values.items())
        ends = None
        for step, value in curve:
            trial.report(value, step)
            if trial.should_prune():
                ends = step
                break
        if tally.add(t, curve, ends):
            study.tell(trial, max(v for _, v in curve))
        else:
            study.tell(trial, state=TrialState.PRUNED)
    return tally


def _ended(t: FrozenTrial) -> str:
    return f"{max(t.intermediate_values.values()):.3f}"


@dataclass
class Totals:
    """One rule's verdicts summed over the searches replayed."""

    epochs: int = 0
    watched_stopped: int = 0
    finished_cut: int = 0


def rules(as_run: Rule, args: argparse.Namespace) -> list[Rule]:
    """The rule as run, and each variant the options name (one change from it at a time)."""
    variants = [as_run]
    variants += [Rule(as_run.startup, w, None) for w in sorted(set(args.warmups))]
    variants += [Rule(s, as_run.warmup, None) for s in sorted(set(args.startups))]
    variants += [Rule(as_run.startup, as_run.warmup, k) for k in sorted(set(args.reach))]
    return list(dict.fromkeys(variants))


def report(out: Path, args: argparse.Namespace, totals: dict[str, Totals]) -> int:
    """Prints the replay of one search, adds it to ``totals``; the epochs it trained in all."""
    study = load_study(None, out)
    settings = study_record(study).get("settings", {})
    second = [t.number for t in study.trials if TrialRecord.from_trial(t).stage == 2]
    staged = bool(second)
    # The pruner's start-up is a share of the trials it judges: stage 1's (the trials before
    # the first of stage 2, the baseline not counted), or the whole study's.
    as_run = Rule(
        start_up(min(second) - 1 if staged else len(study.trials) - 1),
        warmup_epochs(SearchSettings(max_epochs=settings.get("max_epochs") or 20)),
    )
    mine = judged(study.trials, staged)
    samples = next((TrialRecord.from_trial(t).samples for t in mine), None)
    done = [t for t in mine if t.state == TrialState.COMPLETE and t.values]
    parents = {p for t in study.trials if (p := TrialRecord.from_trial(t).parent) is not None}
    if staged and len(parents) == 1:
        watched, role = parents.pop(), "the parent of stage 2"
    else:
        watched, role = max(done, key=lambda t: t.values[0]).number, "the top"
    print(
        f"{out}: {len(mine)} judged trials, start-up {as_run.startup} completed, warm-up as "
        f"run {as_run.warmup}; their top {max(t.values[0] for t in done):.3f}; export trial "
        f"{exported_trial(study)}; watched trial {watched} ({role})"
    )
    # The replay checked against the search: as run, the rule must stop exactly the trials the
    # search's pruner stopped, after the same epochs.
    pruned = {t.number: max(t.intermediate_values) for t in mine if t.state == TrialState.PRUNED}
    check = replay(study.trials, mine, as_run)
    ruled = {n: check.stopped[n] for n in check.by_rule}
    print(
        "  as run, the replay stops the trials the search stopped"
        if ruled == pruned
        else f"  the replay DIFFERS from the search: it stops {ruled}, the search {pruned}"
    )
    replays = [
        (rule.label(as_run), replay(study.trials, mine, rule, samples))
        for rule in rules(as_run, args)
    ]
    if args.hyperband:
        # The in-study replay checked the same way, with the search's own median pruner.
        median = WarmedMedianPruner(n_startup_trials=as_run.startup, n_warmup_steps=as_run.warmup)
        same = replay_pruner(study.trials, mine, median, study.study_name).by_rule == set(pruned)
        print(f"  in an Optuna study, its median pruner {'agrees' if same else 'DIFFERS'}")
    for low in args.hyperband:
        pruner = HyperbandPruner(min_resource=low, max_resource=settings.get("max_epochs") or 20)
        replays.append(
            (f"hyperband {low}", replay_pruner(study.trials, mine, pruner, study.study_name))
        )
    for label, r in replays:
        fate = r.stopped.get(watched)
        # Trials the search let finish that this rule stops, with the best they went on to.
        cut = "".join(
            f"; {t.number} at {r.stopped[t.number]} (ended {_ended(t)})"
            for t in done
            if t.number in r.stopped
        )
        verdict = "trains on" if fate is None else f"STOPPED after epoch {fate}"
        # Totals by what changed, so that searches run with different warm-ups still add up.
        total = totals.setdefault(label, Totals())
        total.epochs += r.epochs
        total.watched_stopped += fate is not None
        total.finished_cut += sum(t.number in r.stopped for t in done)
        print(
            f"  {label:>12}: {r.epochs:4d} epochs, {len(r.stopped):2d} stopped; "
            f"trial {watched} {verdict}{cut}"
        )
    return sum(len(t.intermediate_values) for t in study.trials)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outs", type=Path, nargs="+", help="output folders of finished searches")
    parser.add_argument(
        "--warmups", type=int, nargs="*", default=[0, 1, 2, 3], help="besides the one as run"
    )
    parser.add_argument(
        "--startups", type=int, nargs="*", default=[], help="besides the one as run"
    )
    parser.add_argument(
        "--reach", type=float, nargs="*", default=[], help="standard errors, for the reach rule"
    )
    parser.add_argument(
        "--hyperband",
        type=int,
        nargs="*",
        default=[],
        help="Optuna's HyperbandPruner, with these first rungs (epochs), instead of the median",
    )
    args = parser.parse_args()
    totals: dict[str, Totals] = {}
    every = sum(report(out, args, totals) for out in args.outs)
    if len(args.outs) > 1:
        print(f"\nover the {len(args.outs)} searches ({every} epochs in all, both stages):")
        print("| rule | judged trials' epochs | searches whose watched trial stops |", end="")
        print(" finished trials stopped |\n| --- | ---: | ---: | ---: |")
        for label, total in totals.items():
            print(f"| {label} | {total.epochs} | {total.watched_stopped} | {total.finished_cut} |")


if __name__ == "__main__":
    main()
