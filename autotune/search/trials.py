"""Which trials count toward ``--trials``, and what becomes of trials whose worker died.

``--trials`` is an exact total of finished trials (complete, pruned or failed), the baseline not
counted. A trial whose process died (kill -9, a lost machine) is failed and retried once under
a new number; the dead one then no longer counts, its retry does.

How a dead worker's RUNNING trial is found:
- on this machine, whatever the storage: each trial records its worker (``search.identity``:
  host, pid, a run id of its own, boot id and start time); a RUNNING trial of this host whose
  process is gone (no process with that pid, or one that started at another time or boot) is
  failed at once, before every trial a worker starts;
- from another machine: by Optuna's heartbeat (RDB storages: SQLite, PostgreSQL, MySQL), which
  fails it after the grace period. A journal file has no heartbeat: use it on one machine.

Workers check the total before each trial, counting the ones still running. Two workers that
look in the same instant may both start one: the later one (by start time) is then a surplus,
stopped at once and marked so; it does not count either, nor does a trial stopped by Ctrl-C.

A trial run again keeps its role: the standard recipe's retry is the recipe, and a recipe
trial stopped by Ctrl-C is queued again by the next run (``enqueue_recipe``), so that the
export stays never below it.

A trial stopped by Ctrl-C or a signal after writing an in-trial checkpoint (``--checkpoint-every``,
``trial.resume``) is queued again by the next run with its parameters, to continue from that
checkpoint (``enqueue_resumes``); the retry of a dead worker's trial continues from its
checkpoint too (``continued``).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from typing import Any, TypeVar

import optuna
from optuna.trial import FrozenTrial, TrialState

from autotune.interrupts import allowed
from autotune.search.identity import WORKER, is_local, is_ours, lives
from autotune.search.optuna_internals import frozen, heartbeat_enabled, storage_of, trial_id
from autotune.search.record import TrialRecord

RECIPE = "recipe"
"""Trial user attribute of the standard recipe trial (``search.seeds.recipe``)."""
SURPLUS = "surplus"
"""User attribute of a trial started when the study already had its total."""
INTERRUPTED = "interrupted"
"""User attribute of a trial stopped by Ctrl-C: it does not count (the sampler picks anew)."""
MAX_RETRIES = 1
"""A trial that killed its worker twice is left failed (it may be what kills it)."""
MACHINE_INDEX_VARIABLES = (
    "AUTOTUNE_WORKER_INDEX",
    "SLURM_ARRAY_TASK_ID",
    "SLURM_PROCID",
    "JOB_COMPLETION_INDEX",
)
"""Where a machine's index among several is read from (its own, SLURM's, a Kubernetes Job's)."""
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
T = TypeVar("T")
_EPOCH = datetime.datetime.min
UNCLAIMED_AFTER = datetime.timedelta(minutes=2)
"""A RUNNING trial with no worker recorded this long after it started was abandoned."""


def machine_index() -> int:
    """This machine's index among the machines sharing a study (0 when none is set)."""
    for name in MACHINE_INDEX_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value.isdigit():
            return int(value)
    return 0


def retried(trials: list[FrozenTrial]) -> set[int]:
    """Numbers of the trials that were retried under another number."""
    return {n for t in trials for n in t.system_attrs.get("retry_history", [])}


def counts(trial: FrozenTrial, retried_numbers: set[int]) -> bool:
    """Whether a finished or running trial counts toward ``--trials``."""
    rec = TrialRecord.from_trial(trial)
    return not (rec.baseline or rec.surplus or rec.interrupted or trial.number in retried_numbers)


def has_baseline(study: optuna.Study) -> bool:
    return any(TrialRecord.from_trial(t).baseline for t in study.get_trials(deepcopy=False))


def finished(study: optuna.Study) -> int:
    """Finished trials that count toward ``--trials``."""
    trials = study.get_trials(deepcopy=False)
    again = retried(trials)
    return sum(1 for t in trials if t.state in FINISHED and counts(t, again))


def started(study: optuna.Study) -> int:
    """Finished and running trials that count toward ``--trials``."""
    trials = study.get_trials(deepcopy=False)
    again = retried(trials)
    states = (*FINISHED, TrialState.RUNNING)
    return sum(1 for t in trials if t.state in states and counts(t, again))


def is_surplus(study: optuna.Study, number: int, total: int) -> bool:
    """Whether trial ``number`` (running) started after the study already had ``total``."""
    trials = study.get_trials(deepcopy=False)
    again = retried(trials)
    mine = next(t for t in trials if t.number == number)
    states = (*FINISHED, TrialState.RUNNING)
    before = [
        t
        for t in trials
        if t.number != number and t.state in states and counts(t, again) and _when(t) < _when(mine)
    ]
    return len(before) >= total


def _when(t: FrozenTrial) -> tuple[datetime.datetime, int]:
    """Which of two trials started first (by number where the start times tie)."""
    return (t.datetime_start or _EPOCH, t.number)


def continued_already(study: optuna.Study, number: int) -> int | None:
    """The interrupted trial that trial ``number`` (running) continues, when another trial that
    continues it started first and was not stopped: two machines queued it at the same time
    (``enqueue_resumes``). None otherwise."""
    trials = study.get_trials(deepcopy=False)
    mine = next(t for t in trials if t.number == number)
    resumes = TrialRecord.from_trial(mine).resumes
    if resumes is None:
        return None
    for t in trials:
        rec = TrialRecord.from_trial(t)
        stopped = t.state == TrialState.WAITING or rec.interrupted or rec.surplus
        if t.number != number and rec.resumes == resumes and _when(t) < _when(mine) and not stopped:
            return resumes
    return None


class Surplus(Exception):
    """A trial started when the study already had its total, or that another worker runs."""


def within_total(
    objective: Callable[[optuna.Trial], T], study: optuna.Study, total: int
) -> Callable[[optuna.Trial], T]:
    """``objective``, except for a trial that is a surplus: marked and stopped at once."""

    def run(trial: optuna.Trial) -> T:
        reason = None
        if is_surplus(study, trial.number, total):
            reason = f"not run: another worker started the study's last of {total} trials first"
        elif (again := continued_already(study, trial.number)) is not None:
            reason = f"not run: another worker continues trial {again} already"
        if reason is not None:
            trial.set_user_attr("worker", WORKER)
            trial.set_user_attr(SURPLUS, True)
            trial.set_user_attr("fail_reason", reason)
            raise Surplus(reason)
        try:
            with allowed():  # a Ctrl-C held while Optuna started the trial stops it here
                return objective(trial)
        except KeyboardInterrupt:
            if not TrialRecord.from_trial(trial).interrupted:
                trial.set_user_attr(INTERRUPTED, True)
            raise

    return run


def retries_left(trial: FrozenTrial) -> bool:
    """Whether ``retry`` queues ``trial`` again: it is not itself the last retry allowed."""
    return len(trial.system_attrs.get("retry_history", [])) < MAX_RETRIES


def retry(study: optuna.Study, trial: FrozenTrial) -> None:
    """Queue a failed trial's parameters again (Optuna's retry convention: ``failed_trial`` and
    ``retry_history`` system attributes), unless it was retried ``MAX_RETRIES`` times already.

    Unlike Optuna's ``RetryHeartbeatStaleTrialCallback``, the dead trial's user attributes (its
    worker, its results so far) are not copied: they belong to the dead run. Its role is: the
    retry of the recipe trial is the recipe."""
    if not retries_left(trial):
        return
    history = [*trial.system_attrs.get("retry_history", []), trial.number]
    system_attrs: dict[str, Any] = {
        k: v for k, v in trial.system_attrs.items() if not k.startswith("constraints")
    }
    system_attrs.update(failed_trial=history[0], retry_history=history)
    rec = TrialRecord.from_trial(trial)
    # Its in-trial checkpoint, if it continued an interrupted trial, is under that one's number.
    kept: dict[str, Any] = {} if rec.resumes is None else {"resumes": rec.resumes}
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.WAITING,
            params=trial.params,
            distributions=trial.distributions,
            system_attrs=system_attrs,
            user_attrs=kept | ({RECIPE: True} if rec.recipe else {}),
        )
    )


def continued(trial: FrozenTrial | optuna.Trial) -> int:
    """The number of the trial whose training ``trial`` continues: the interrupted trial it
    resumes, or the dead worker's trial it retries (``retry``), else its own. Its in-trial
    checkpoint is kept under that number."""
    resumes = TrialRecord.from_trial(trial).resumes
    if resumes is not None:
        return resumes
    first = (trial if isinstance(trial, FrozenTrial) else frozen(trial)).system_attrs.get(
        "failed_trial"
    )
    return first if isinstance(first, int) else trial.number


def enqueue_resumes(study: optuna.Study, has_checkpoint: Callable[[int], bool]) -> list[int]:
    """Queue again, to continue from their in-trial checkpoint, the trials stopped by Ctrl-C or
    a signal that wrote one (``has_checkpoint``, by ``continued`` number) and that no later run
    has taken up; returns the numbers queued. The queued trial keeps the role and parameters of
    the one it continues, and counts in its place."""
    latest: dict[int, FrozenTrial] = {}  # the last trial of each continued number
    for t in study.get_trials(deepcopy=False):
        if not TrialRecord.from_trial(t).surplus:  # one queued twice: its twin is the one
            latest[continued(t)] = t
    queued = []
    for number, t in sorted(latest.items()):
        rec = TrialRecord.from_trial(t)
        if t.state != TrialState.FAIL or not rec.interrupted or not has_checkpoint(number):
            continue
        attrs: dict[str, Any] = {"resumes": number} | ({RECIPE: True} if rec.recipe else {})
        study.add_trial(
            optuna.trial.create_trial(
                state=TrialState.WAITING,
                params=t.params,
                distributions=t.distributions,
                user_attrs=attrs,
            )
        )
        queued.append(number)
    return queued


def enqueue_recipe(study: optuna.Study, params: dict[str, Any]) -> None:
    """Queue the standard recipe (``params``) unless the study holds a recipe trial that ran,
    runs or waits to: a new study has none, and one stopped by Ctrl-C (or started when the
    study had its total) did not run."""
    for t in study.get_trials(deepcopy=False):
        rec = TrialRecord.from_trial(t)
        stopped = t.state == TrialState.FAIL and (rec.interrupted or rec.surplus)
        if rec.recipe and not stopped:
            return
    study.enqueue_trial(params, user_attrs={RECIPE: True})


def fail_orphans(study: optuna.Study) -> list[int]:
    """Fail and retry the RUNNING trials whose worker was a process of this machine that is
    gone; returns their numbers."""
    storage = storage_of(study)
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not orphaned(trial):
            continue
        # The reason shows in the leaderboard, which names no host: nor does it.
        try:
            then = "retried" if retries_left(trial) else "not retried: it may be what kills it"
            storage.set_trial_user_attr(trial_id(trial), "fail_reason", f"its worker died; {then}")
            if not storage.set_trial_state_values(trial_id(trial), state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker failed it first
        retry(study, storage.get_trial(trial_id(trial)))
        failed.append(trial.number)
    return failed


def orphaned(trial: FrozenTrial) -> bool:
    """Whether a RUNNING trial's worker was a process of this machine that is gone (what
    ``fail_orphans`` fails; the leaderboard says so rather than "running")."""
    worker = TrialRecord.from_trial(trial).worker
    if worker is None:
        # Killed before its first line: nobody owns it once it is older than a trial's start.
        started_at = trial.datetime_start or datetime.datetime.now()
        return datetime.datetime.now() - started_at >= UNCLAIMED_AFTER
    return not (is_ours(worker) or not is_local(worker) or lives(worker))


def running_elsewhere(study: optuna.Study) -> list[FrozenTrial]:
    """RUNNING trials this process waits for before exporting: those of live local processes,
    and those of other machines when the storage's heartbeat will fail them if they died."""
    heartbeat = heartbeat_enabled(storage_of(study))
    waiting = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = TrialRecord.from_trial(trial).worker
        if is_ours(worker):
            continue
        if lives(worker) if is_local(worker) else heartbeat:
            waiting.append(trial)
    return waiting
