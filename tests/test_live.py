"""The live view: plain lines in logs, and a view redrawn in place in a real terminal."""

from __future__ import annotations

import io
import os
import re
import select
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import optuna
from optuna.trial import create_trial
from rich.console import Console

from autotune.results.live import LiveLeaderboard

ROOT = Path(__file__).resolve().parents[1]


def _study() -> optuna.Study:
    study = optuna.create_study(direction="maximize")
    study.add_trial(
        create_trial(
            value=0.3,
            user_attrs={"baseline": True, "total_params": 100, "trainable_params": 0, "epochs": 0},
        )
    )
    return study


def _add(study: optuna.Study, value: float, seconds: float) -> None:
    attrs = {"total_params": 100, "trainable_params": 50, "epochs": 2, "seconds": seconds}
    study.add_trial(create_trial(value=value, user_attrs=attrs))


def test_plain_lines_with_progress_and_eta_when_not_a_terminal() -> None:
    out = io.StringIO()
    live = LiveLeaderboard(Console(file=out, width=200), "accuracy", planned=3)
    study = _study()
    with live.session(study):
        live.progress(1, "epoch 1/4, accuracy 0.5000")  # not printed: no bars in a log
        _add(study, 0.8, seconds=10.0)
        live.finished(study, study.trials[-1])
        # The two trials left take the mean time of the finished ones, less what the
        # current one has run.
        assert live.eta(now=live.last_end) == 20.0
        assert live.eta(now=live.last_end + 5) == 15.0
        _add(study, 0.9, seconds=20.0)
        live.finished(study, study.trials[-1])
        assert live.eta(now=live.last_end) == 15.0
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("trials 0/3 done")
    assert len(lines) == 3 and "epoch 1/4" not in out.getvalue()
    assert lines[1].startswith("trial   1 complete accuracy=0.8")
    assert re.search(r"\[1/3 · elapsed \d+\.\ds · ETA 20\.0s · best accuracy 0\.8000", lines[1])
    assert re.search(r"\[2/3 · .* · best accuracy 0\.9000 \(trial 2\)\]", lines[2])


SCRIPT = """
import time
import optuna
from optuna.trial import create_trial
from rich.console import Console
from autotune.results.live import LiveLeaderboard

optuna.logging.set_verbosity(optuna.logging.ERROR)
study = optuna.create_study(direction="maximize")
study.add_trial(create_trial(value=0.3, user_attrs={"baseline": True, "total_params": 100}))
live = LiveLeaderboard(Console(), "accuracy", 2)
with live.session(study):
    for n in (1, 2):
        for epoch in (1, 2):
            live.progress(n, f"epoch {epoch}/2, accuracy 0.{n}{epoch}")
            time.sleep(0.4)
        attrs = {"total_params": 100, "trainable_params": 50, "epochs": 2, "seconds": 0.8}
        study.add_trial(create_trial(value=0.5 + n / 10, user_attrs=attrs))
        live.finished(study, study.trials[-1])
        time.sleep(0.4)
print("search done")
"""

_CONTROL = re.compile(r"\x1b\[([0-9;?]*)([A-Za-z])|\r|\n|[^\x1b\r\n]", re.S)


def _screen(raw: str) -> list[str]:
    """What a terminal shows after ``raw``: text, newlines, carriage returns, cursor up and
    erased lines (what rich's live display uses); colours and cursor visibility ignored."""
    rows: dict[int, list[str]] = {}
    r = c = 0
    for m in _CONTROL.finditer(raw):
        text, (arg, op) = m.group(0), m.groups()
        if op == "A":
            r = max(r - int(arg or 1), 0)
        elif op == "K" and arg == "2":
            rows[r] = []
        elif text == "\r":
            c = 0
        elif text == "\n":
            r, c = r + 1, 0
        elif op is None:
            line = rows.setdefault(r, [])
            line.extend(" " * (c + 1 - len(line)))
            line[c] = text
            c += 1
    return ["".join(rows.get(i, [])).rstrip() for i in range(max(rows, default=0) + 1)]


def test_the_live_view_updates_in_place_in_a_terminal(tmp_path: Path) -> None:
    script = tmp_path / "live.py"
    script.write_text(textwrap.dedent(SCRIPT))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path]),
        "COLUMNS": "100",
        "LINES": "40",
    }
    env |= {"TERM": "xterm-256color"}
    env.pop("NO_COLOR", None), env.pop("FORCE_COLOR", None), env.pop("TERM_PROGRAM", None)
    primary, secondary = os.openpty()
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdin=secondary, stdout=secondary, stderr=secondary,
        env=env, close_fds=True,
    )  # fmt: skip
    os.close(secondary)
    chunks = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([primary], [], [], 1)
        if not ready:
            if proc.poll() is not None:
                break
            continue
        try:
            data = os.read(primary, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(primary)
    assert proc.wait(timeout=30) == 0
    raw = b"".join(chunks).decode("utf-8", "replace")
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", raw)
    # While it ran: the table and both bars, the trial's epochs and the study's ETA.
    frames = plain.count("autotune leaderboard")
    assert frames >= 4, raw[-2000:]
    assert "trial 1" in plain and "trial 2" in plain and "accuracy 0.12" in plain
    assert re.search(r"trials .*1/2 elapsed [\d.]+s · ETA [\d.]+s", plain)
    # In place: each frame was drawn over the last (cursor up, erase line), and being transient
    # the view is gone at the end, leaving the script's own output only.
    assert "\x1b[2K" in raw and re.search(r"\x1b\[\d*A", raw)
    screen = [line for line in _screen(raw) if line]
    assert screen == ["search done"], screen


def test_the_live_view_keeps_its_bars_on_a_short_screen() -> None:
    study = _study()
    for i in range(14):
        _add(study, 0.5 + i / 100, seconds=2.0)
    console = Console(width=100, height=24, record=True, file=io.StringIO())
    live = LiveLeaderboard(console, "accuracy", planned=20)
    live._refresh(study)
    live.progress(15, "epoch 3/20, accuracy 0.6100")
    console.print(live)
    lines = console.export_text().splitlines()
    assert len(lines) <= 24
    assert re.match(r" *trials .* 14/20 elapsed", lines[-2]), lines[-2:]
    assert re.match(r" *trial 15 .*  3/20 accuracy 0\.6100", lines[-1]), lines[-1]
    text = " ".join(" ".join(lines).split())
    assert "top 6 of 15: --top N" in text
    assert "┃ parameters" not in text  # no trial sampled any: an empty column is left out


def test_a_trial_whose_worker_died_counts_once_when_the_search_continues() -> None:
    import socket

    from autotune.search.trials import fail_orphans

    study = _study()
    _add(study, 0.6, seconds=1.0)
    # As kill -9 leaves trial 2: RUNNING, its worker gone (pid 2**22 + 1 is above pid_max).
    study.ask().set_user_attr("worker", f"{socket.gethostname()}:{2**22 + 1}")
    out = io.StringIO()
    live = LiveLeaderboard(Console(file=out, width=300), "accuracy", planned=3)
    with live.session(study):  # the same command again: 3 trials in the study in all
        assert fail_orphans(study) == [2]  # failed, and queued again as trial 3
        for value in (0.7, 0.8):
            trial = study.ask()
            trial.set_user_attr("seconds", 1.0)
            study.tell(trial, value)
            live.finished(study, study.trials[-1])
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("trials 1/3 done: 1 complete, 0 stopped early, 0 failed")
    assert "1 whose worker died" in lines[0]
    # The retry counts in the dead trial's place: 3 of 3, not 4 of 3.
    counted = [m[1] for line in lines[1:] if (m := re.search(r"\[(\d+/\d+) ·", line))]
    assert len(lines) == 3 and counted == ["2/3", "3/3"]
    board = live.board
    assert board is not None and board.rows[2].state == "RETRIED"
    assert board.progress_line().startswith(
        "trials 3/3 done: 3 complete, 0 stopped early, 0 failed, 0 running, "
        "1 retried after its worker died"
    )
