from __future__ import annotations

import io

import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial
from rich.console import Console

from autotune.results.leaderboard import Leaderboard


def _study() -> optuna.Study:
    study = optuna.create_study(direction="maximize")
    study.add_trial(
        create_trial(
            value=0.30,
            user_attrs={"baseline": True, "total_params": 1000, "trainable_params": 0, "epochs": 0},
        )
    )
    lr = FloatDistribution(1e-4, 1e-1, log=True)
    for value, rate, broken in ((0.91, 0.003, 2), (0.75, 0.02, 9)):
        study.add_trial(
            create_trial(
                value=value,
                params={"lr": rate},
                distributions={"lr": lr},
                user_attrs={
                    "trainable_params": 600,
                    "total_params": 1000,
                    "epochs": 12,
                    "seconds": 3.5,
                    "fixed": 40,
                    "broken": broken,
                },
            )
        )
    study.add_trial(
        create_trial(
            state=TrialState.FAIL,
            params={"lr": 0.09},
            distributions={"lr": lr},
            user_attrs={"fail_reason": "training loss became nan in epoch 1"},
        )
    )
    return study


def test_table_ranks_trials_and_shows_gain_over_the_baseline() -> None:
    board = Leaderboard.from_study(_study(), "accuracy")
    out = io.StringIO()
    Console(file=out, width=140).print(board)
    text = out.getvalue()
    rows = [[c.strip() for c in line.split("│")[1:-1]] for line in text.splitlines() if "│" in line]
    assert rows[0] == [
        "1",
        "1",
        "complete",
        "0.91",
        "+0.6100",
        "40/2",
        "600",
        "1.0k (100%)",
        "",
        "",
        "12",
        "3.5s",
        "lr=0.003",
    ]
    assert [row[1] for row in rows] == ["1", "2", "0"]  # the failed trial is not ranked
    assert rows[2][2:5] == ["baseline", "0.3", ""]
    assert "trials 3 done: 2 complete, 0 pruned, 1 failed, 0 running" in text
    assert "best accuracy 0.91 (trial 1)" in text


def test_plain_lines_for_logs() -> None:
    board = Leaderboard.from_study(_study(), "accuracy")
    failed = next(r for r in board.rows if r.state == "FAIL")
    line = board.plain_line(failed)
    assert line.startswith("trial   3 fail")
    assert "(training loss became nan in epoch 1)" in line
    best = board.plain_line(board.ranked()[0])
    assert "accuracy=0.91 gain=+0.6100 params=1.0k(100%) epochs=12 time=3.5s lr=0.003" in best


def test_frame_lists_every_trial_best_first() -> None:
    frame = Leaderboard.from_study(_study(), "accuracy").to_frame()
    assert list(frame["trial"]) == [1, 2, 0, 3]
    assert list(frame["state"]) == ["COMPLETE", "COMPLETE", "BASELINE", "FAIL"]
    assert frame.loc[0, "gain"] == 0.91 - 0.30
