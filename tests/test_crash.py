"""Crashes with real processes: kill -9 mid-trial and resume, Ctrl-C, a worker killed, Ctrl-C
to the process group of two workers, the parent of a worker killed."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import pytest
import yaml
from optuna.trial import TrialState
from processes import command, make_job, start, study_in, wait_for

from autotune.search.selection import chosen_trial
from autotune.search.trials import finished

pytestmark = pytest.mark.slow


def _running(out: Path, after: int = 1) -> bool:
    """A trial is running after ``after`` trials have finished (the baseline included), and
    has recorded its worker: killed before that, its resume would wait out ``UNCLAIMED_AFTER``."""
    trials = study_in(out).get_trials(deepcopy=False)
    done = [t for t in trials if t.state.is_finished()]
    running = [t for t in trials if t.state == TrialState.RUNNING and "worker" in t.user_attrs]
    return len(done) > after and bool(running)


def _pid(worker: object) -> int | None:
    """The pid a trial's worker record names (``host:pid`` in studies written before)."""
    if isinstance(worker, dict):
        return int(worker["pid"])
    if isinstance(worker, str) and worker.rpartition(":")[2].isdigit():
        return int(worker.rpartition(":")[2])
    return None


def _exists(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie does not: it has exited)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def test_kill_9_mid_trial_then_the_same_command_resumes(tmp_path: Path) -> None:
    args, env = make_job(tmp_path / "job")
    out, log = tmp_path / "out", tmp_path / "log"
    args += ["--trials", "3", "--out", str(out)]
    process = start(args, env, log)
    wait_for(lambda: _running(out), process, log)
    process.kill()
    process.wait()
    before = study_in(out).get_trials()
    killed = [t.number for t in before if t.state == TrialState.RUNNING]
    kept = {t.number: t.values for t in before if t.state == TrialState.COMPLETE}
    assert len(killed) == 1 and len(kept) >= 2  # the baseline and at least one trial

    again = subprocess.run(command(args), env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    study = study_in(out)
    trials = study.get_trials()
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert {n: trials[n].values for n in kept} == kept  # nothing finished was lost
    assert trials[killed[0]].state == TrialState.FAIL
    assert [t.system_attrs.get("failed_trial") for t in trials].count(killed[0]) == 1
    assert finished(study) == 3
    # What the rerun shows counts the retry in the dead trial's place: never past the 3 asked.
    shown = [int(n) for n in re.findall(r"\[(\d+)/3 ·", again.stdout)]
    assert shown and max(shown) == 3, again.stdout
    assert "1 retried after its worker died" in again.stdout
    best = chosen_trial(study)
    assert best is not None
    config = yaml.safe_load((out / "best" / "config.yaml").read_text())
    assert config["trial"] == best.number


@pytest.mark.parametrize(
    ("signum", "code"),
    [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)],
    ids=["ctrl-c", "sigterm", "sighup"],
)
def test_a_signal_mid_trial_writes_the_results_and_the_same_command_completes_the_total(
    signum: int, code: int, tmp_path: Path
) -> None:
    """Ctrl-C, a scheduler's SIGTERM (SLURM, Kubernetes, docker stop) or a closed terminal's
    SIGHUP: the trial is recorded as interrupted, not counted, and everything is written."""
    args, env = make_job(tmp_path / "job")
    out, log = tmp_path / "out", tmp_path / "log"
    args += ["--trials", "4", "--out", str(out)]
    process = start(args, env, log)
    wait_for(lambda: _running(out, after=2), process, log)  # the baseline and a trial done
    process.send_signal(signum)
    assert process.wait(timeout=120) == code, log.read_text()[-3000:]
    study = study_in(out)
    trials = study.get_trials()
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    stopped = [t for t in trials if t.user_attrs.get("interrupted")]
    assert len(stopped) == 1 and stopped[0].state == TrialState.FAIL
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.number > 0]
    assert finished(study) == len(complete) >= 1
    assert (out / "leaderboard.csv").is_file() and (out / "best" / "config.yaml").is_file()
    assert (out / "report.html").is_file()
    if signum == signal.SIGTERM:  # the others stop the same way: one rerun says it for all
        again = subprocess.run(command(args), env=env, capture_output=True, text=True, timeout=300)
        assert again.returncode == 0, again.stdout + again.stderr
        assert finished(study_in(out)) == 4


def test_a_killed_worker_is_replaced_while_the_other_goes_on(tmp_path: Path) -> None:
    args, env = make_job(tmp_path / "job")
    out, log = tmp_path / "out", tmp_path / "log"
    # Enough trials that the second worker, slower to start, runs some.
    process = start([*args, "--trials", "8", "--workers", "2", "--out", str(out)], env, log)

    def child_running() -> bool:
        running = study_in(out).get_trials(states=(TrialState.RUNNING,))
        return any(_pid(t.user_attrs.get("worker")) not in (None, process.pid) for t in running)

    wait_for(child_running, process, log, seconds=240)
    running = study_in(out).get_trials(states=(TrialState.RUNNING,))
    victim = next(t for t in running if _pid(t.user_attrs.get("worker")) not in (None, process.pid))
    pid = _pid(victim.user_attrs["worker"])
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    assert process.wait(timeout=300) == 0, log.read_text()[-3000:]
    study = study_in(out)
    trials = study.get_trials()
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert trials[victim.number].state == TrialState.FAIL
    assert "died" in trials[victim.number].user_attrs["fail_reason"]
    assert [t.system_attrs.get("failed_trial") for t in trials].count(victim.number) == 1
    assert finished(study) == 8
    assert (out / "best" / "config.yaml").is_file()
    # The second worker read the analysis the first one made, from the cache.
    assert "cached" in (out / "workers" / "worker-1.log").read_text()


def _both_running(out: Path, main: int) -> bool:
    """The first process and its extra worker each run a trial."""
    running = study_in(out).get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    pids = {_pid(t.user_attrs.get("worker")) for t in running} - {None}
    return main in pids and len(pids) == 2


def test_ctrl_c_to_the_process_group_of_two_workers_leaves_no_trial_running(
    tmp_path: Path,
) -> None:
    args, env = make_job(tmp_path / "job")
    out, log = tmp_path / "out", tmp_path / "log"
    args += ["--trials", "20", "--workers", "2", "--out", str(out)]
    with log.open("wb") as f:  # a group of its own, as a terminal's Ctrl-C reaches it
        process = subprocess.Popen(
            command(args), env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_for(lambda: _both_running(out, process.pid), process, log, seconds=240)
        os.killpg(process.pid, signal.SIGINT)
        assert process.wait(timeout=120) == 130, log.read_text()[-3000:]
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    said = log.read_text() + (out / "workers" / "worker-1.log").read_text()
    assert "updated_state" not in said and "Traceback" not in said, said[-3000:]
    assert not study_in(out).get_trials(states=(TrialState.RUNNING,))


def test_a_worker_whose_parent_was_killed_stops_and_leaves_no_trial_running(
    tmp_path: Path,
) -> None:
    import time

    args, env = make_job(tmp_path / "job")
    out, log = tmp_path / "out", tmp_path / "log"
    process = start([*args, "--trials", "20", "--workers", "2", "--out", str(out)], env, log)
    wait_for(lambda: _both_running(out, process.pid), process, log, seconds=240)
    trials = study_in(out).get_trials()
    worker = next(
        p
        for t in trials
        if t.state == TrialState.RUNNING and (p := _pid(t.user_attrs["worker"])) != process.pid
    )
    before = [t for t in trials if _pid(t.user_attrs.get("worker")) == worker]
    process.kill()
    process.wait()
    end = time.monotonic() + 60
    while time.monotonic() < end and _exists(worker):
        time.sleep(0.2)
    if _exists(worker):
        os.kill(worker, signal.SIGKILL)
        raise AssertionError("the worker ran on after its parent was killed")
    trials = study_in(out).get_trials()
    theirs = [t for t in trials if _pid(t.user_attrs.get("worker")) == worker]
    assert not [t for t in theirs if t.state == TrialState.RUNNING]
    # It stopped in its trial, or as it began the next one (which is then interrupted at once).
    assert len(theirs) <= len(before) + 1
    assert all(t.user_attrs.get("interrupted") for t in theirs[len(before) :])
    assert "interrupted" in (out / "workers" / "worker-1.log").read_text()
