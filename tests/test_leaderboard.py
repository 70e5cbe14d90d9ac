from __future__ import annotations

import io
import random
import re
from pathlib import Path

import optuna
import pytest
import torch
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial
from rich.console import Console

from autotune.load.tasks import TaskData
from autotune.results.cells import pack
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


def _rows(text: str) -> list[list[str]]:
    return [[c.strip() for c in line.split("│")[1:-1]] for line in text.splitlines() if "│" in line]


def test_table_ranks_trials_and_shows_gain_over_the_baseline() -> None:
    board = Leaderboard.from_study(_study(), "accuracy")
    out = io.StringIO()
    Console(file=out, width=140).print(board)
    text = out.getvalue()
    rows = _rows(text)
    # rank, trial, state, metric, gain, fixed/broken, size, trained, epochs, time, parameters
    # (no trial has a MAC count, and none was timed: those columns are left out)
    assert "MACs" not in text and "latency" not in text
    first = ["1", "1", "ok", "0.91", "+0.6100", "40/2", "1.0k 100%"]
    assert rows[0] == [*first, "600", "12", "3.5s", "lr=0.003"]
    assert [row[1] for row in rows] == ["1", "2", "0"]  # the failed trial is not ranked
    assert rows[1][-1] == "lr=0.02"  # what differs from the first trained trial
    assert rows[2][2:5] == ["src", "0.3", ""]
    assert rows[2][-1] == "="  # the source model: nothing changed
    assert "ok: trained · src: the source model" in text
    assert "trials 3 done: 2 complete, 0 stopped early, 1 failed, 0 running" in text
    assert "best accuracy 0.91 (trial 1)" in text


def _big_study(n: int = 14) -> optuna.Study:
    """A demo-sized study: many trials, seven parameters, costs and latency ratios."""
    study = optuna.create_study(direction="maximize")
    source = {"total_params": 40_710, "macs": 650_300, "latency_ms": 1.1}
    study.add_trial(
        create_trial(
            value=0.6,
            user_attrs={"baseline": True, "trainable_params": 0, "epochs": 0, **source},
        )
    )
    space = {
        "lr": FloatDistribution(1e-4, 1e-1, log=True),
        "optimizer": CategoricalDistribution(["adam", "sgd"]),
        "unfreeze": IntDistribution(0, 6),
        "prune": FloatDistribution(0, 0.9),
        "batch_size": CategoricalDistribution([32, 64, 128]),
        "weight_decay": FloatDistribution(1e-6, 1e-2, log=True),
        "loss": CategoricalDistribution(["ce", "focal"]),
    }
    rnd = random.Random(0)
    for _ in range(n):
        params = {
            name: rnd.choice(d.choices)
            for name, d in space.items()
            if isinstance(d, CategoricalDistribution)
        }
        params |= {
            "lr": 10 ** rnd.uniform(-4, -1),
            "unfreeze": rnd.randint(0, 6),
            "prune": rnd.uniform(0, 0.9),
            "weight_decay": 10 ** rnd.uniform(-6, -2),
        }
        keep = 1 - params["prune"]
        study.add_trial(
            create_trial(
                value=0.5 + rnd.uniform(0, 0.45),
                params=params,
                distributions=space,
                user_attrs={
                    "trainable_params": int(28_497 * keep),
                    "total_params": int(40_710 * keep),
                    "macs": int(650_300 * keep),
                    "latency_ms": 1.1 * keep,
                    "latency_ratio": 0.4 + 0.6 * keep,
                    "latency_ratio_spread": 0.03,
                    "epochs": rnd.randint(3, 20),
                    "seconds": rnd.uniform(2, 4000),
                },
            )
        )
    return study


def _render(width: int, top: int = 12) -> str:
    board = Leaderboard.from_study(_big_study(), "accuracy", top=top)
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(board)
    return console.export_text()


COMMON = ["#", "trial", "state", "accuracy", "gain", "size"]


@pytest.mark.parametrize(
    ("width", "present", "absent"),
    [
        (80, [*COMMON, "parameters vs trial 1"], ["MACs", "latency", "trained", "epochs", "time"]),
        (100, [*COMMON, "MACs", "parameters vs trial 1"], ["latency", "epochs", "time"]),
        (
            160,
            [*COMMON, "MACs", "latency", "trained", "epochs", "time", "parameters vs trial 1"],
            [],
        ),
    ],
)
def test_the_table_fits_the_width_by_dropping_columns_never_cutting_a_number(
    width: int, present: list[str], absent: list[str]
) -> None:
    text = _render(width)
    lines = text.splitlines()
    assert max(len(line.rstrip()) for line in lines) <= width
    assert "…" not in text
    header = next(line for line in lines if line.startswith("┃"))
    columns = [c.strip() for c in header.split("┃")[1:-1]]
    assert columns == [c for c in columns if c in present] and set(present) <= set(columns)
    assert not set(absent) & set(columns)
    rows = [r for r in _rows(text) if r[0]]  # a row's first line carries its rank
    # Every rank, trial number and figure is whole: ranks past 9, counts with their share.
    assert [r[0] for r in rows] == [str(i) for i in range(1, 13)]
    assert all(re.fullmatch(r"\d+\.\d+k \d+%", r[5]) for r in rows), [r[5] for r in rows]
    assert all(re.fullmatch(r"[+-]\d\.\d{4}", r[4]) for r in rows if r[2] != "src")
    if "latency" in columns:
        i = columns.index("latency")
        assert all(re.fullmatch(r"\d\.\d\dx±0\.03|1x", r[i]) for r in rows)


def test_one_line_per_trial_from_120_columns() -> None:
    for width in (120, 160):
        rows = _rows(_render(width))
        assert all(r[0] for r in rows), f"a trial wraps onto a second line at {width} columns"
        # What did not fit is counted, not cut: every shown parameter is a whole key=value.
        params = [r[-1] for r in rows]
        assert any(re.search(r" \+\d+$", p) for p in params)
        for p in params:
            for word in p.split():
                assert re.fullmatch(r"[a-z_]+=\S+|\+\d+|=", word), word
    narrow = _rows(_render(80))
    assert len(narrow) > 13  # below 120 the parameters may take a second line


def test_top_limits_the_rows_and_says_where_the_rest_are() -> None:
    text = _render(100, top=3)
    ranks = [r[0] for r in _rows(text) if r[0]]
    assert ranks[:3] == ["1", "2", "3"] and len(ranks) == 4  # and the source model
    assert "top 3 of 15: --top N for more, all in leaderboard.csv" in " ".join(text.split())


def test_packing_keeps_whole_words_and_counts_the_rest() -> None:
    assert pack("a=1 b=22 c=333 d=4444", 9, 1) == "a=1 +3"
    assert pack("a=1 b=22 c=333 d=4444", 9, 2) == "a=1 b=22\nc=333 +1"
    assert pack("a=1 b=22", 20, 1) == "a=1 b=22"
    assert pack("long=0.000123 b=2", 5, 1) == "+2"
    # Alone, a word wider than the column stays whole (the column folds it rather than cut it).
    assert pack("long=0.000123", 5, 1) == "long=0.000123"


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


def test_the_frames_rank_is_a_whole_number_and_missing_for_a_trial_not_ranked() -> None:
    import pandas as pd

    frame = Leaderboard.from_study(_study(), "accuracy").to_frame()
    assert frame["rank"].dtype == "Int64"  # 1, 2, 3 rather than 1.0, 2.0, 3.0
    assert frame["rank"].tolist()[:3] == [1, 2, 3]
    assert frame["rank"].tolist()[3] is pd.NA  # the failed trial


def test_the_frames_whole_number_columns_are_whole_numbers_where_some_rows_have_none() -> None:
    import pandas as pd

    study = _study()  # the baseline and the failed trial have no stage, parent or MACs
    batch = CategoricalDistribution([16, 32])
    for number, (stage, parent) in enumerate(((1, None), (2, 4)), start=4):
        study.add_trial(
            create_trial(
                value=0.8 + number / 100,
                params={"batch_size": 32},
                distributions={"batch_size": batch},
                user_attrs={"stage": stage, "parent": parent, "macs": 5000, "epochs": 7},
            )
        )
    frame = Leaderboard.from_study(study, "accuracy").to_frame().set_index("trial")
    counts = ["parent", "stage", "epochs", "macs", "total_params", "fixed", "param_batch_size"]
    # 4 rather than 4.0, and <NA> rather than NaN where a row has none.
    assert {c: str(frame[c].dtype) for c in counts} == dict.fromkeys(counts, "Int64")
    assert frame.loc[5, ["parent", "stage", "epochs", "macs"]].tolist() == [4, 2, 7, 5000]
    assert frame.loc[3, "epochs"] is pd.NA and frame.loc[0, "parent"] is pd.NA
    assert frame.loc[5, "param_batch_size"] == 32 and frame.loc[0, "param_batch_size"] is pd.NA
    assert frame["value"].dtype == "float64" and frame["feasible"].dtype == "bool"


@pytest.mark.parametrize("metric", ["accuracy", "loss"])
def test_equal_scores_rank_by_the_other_score_as_the_search_does(metric: str) -> None:
    from autotune.search.study import best_trial

    # (accuracy, loss): trials 0 and 1 tie on the metric, trial 1 is better on the other score.
    scores = {
        "accuracy": [(0.9, 0.40), (0.9, 0.30), (0.8, 0.20)],
        "loss": [(0.80, 0.30), (0.85, 0.30), (0.95, 0.40)],
    }[metric]
    study = optuna.create_study(direction="maximize" if metric == "accuracy" else "minimize")
    for accuracy, loss in scores:
        study.add_trial(
            create_trial(
                value=accuracy if metric == "accuracy" else loss,
                user_attrs={"val_accuracy": accuracy, "val_loss": loss, "total_params": 10},
            )
        )
    board = Leaderboard.from_study(study, metric)
    assert [r.number for r in board.ranked()] == [1, 0, 2]
    top = best_trial(study)
    assert top is not None and top.number == 1
    assert f"(trial {top.number})" in board.progress_line()


def test_the_exported_trial_is_marked_in_the_table_and_the_frame() -> None:
    study = _study()
    # The one-standard-error rule exported trial 2, not the top trial 1.
    study.set_user_attr("best_export", {"trial": 2, "test_accuracy": 0.7})
    board = Leaderboard.from_study(study, "accuracy")
    out = io.StringIO()
    Console(file=out, width=140).print(board)
    text = out.getvalue()
    rows = _rows(text)
    assert [row[1:3] for row in rows] == [["1", "ok"], ["2", "exp"], ["0", "src"]]
    assert "exp: exported to best/" in text
    frame = board.to_frame()
    assert frame.loc[frame["exported"], "trial"].tolist() == [2]


def test_the_exported_trials_row_carries_the_latency_its_export_measured() -> None:
    study = _study()  # no trial timed during the search (no latency budget)
    measured = {"model": 1.156, "source": 1.2, "ratio": 0.9622, "ratio_spread": 0.01}
    study.set_user_attr("best_export", {"trial": 2, "latency_ms": measured})
    board = Leaderboard.from_study(study, "accuracy")
    frame = board.to_frame().set_index("trial")
    assert frame.loc[2, ["latency_ms", "latency_ratio"]].tolist() == [1.156, 0.9622]
    assert frame.loc[1, ["latency_ms", "latency_ratio"]].isna().all()  # not exported, not timed
    assert "0.96x±0.01" in str(board)


def test_the_pareto_front_column_marks_the_front_the_reports_size_chart_draws() -> None:
    study = optuna.create_study(direction="maximize")  # no --pareto: one objective
    for value, size in ((0.30, 1000), (0.90, 1000), (0.85, 500), (0.80, 800), (0.60, 200)):
        study.add_trial(create_trial(value=value, user_attrs={"total_params": size}))
    frame = Leaderboard.from_study(study, "accuracy").to_frame()
    # 800 parameters for 0.80 is beaten by 500 for 0.85, as 1000 for 0.30 is by all the others.
    assert sorted(frame.loc[frame["pareto_front"], "trial"]) == [1, 2, 4]
    from autotune.results.study_data import size_front

    assert sorted(p[2] for p in size_front(study)) == [1, 2, 4]  # the chart's front


def test_a_pareto_studys_size_chart_places_its_trials_on_its_own_axis() -> None:
    """``--pareto macs``: the front is the study's on MACs, so the chart draws it against MACs
    (against parameters, where MACs and parameters rank trials apart, it did not climb)."""
    from autotune.results.study_data import size_axis, size_front, size_points

    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_user_attr("autotune", {"settings": {"pareto": "macs"}})
    # (accuracy, MACs, parameters): the fewest MACs need not be the fewest parameters.
    for acc, macs, params in ((0.9, 900, 100), (0.8, 300, 900), (0.7, 100, 500), (0.6, 800, 50)):
        study.add_trial(create_trial(values=[acc, macs], user_attrs={"total_params": params}))
    assert size_axis(study) == "MACs"
    assert sorted(p[0] for p in size_points(study)) == [100, 300, 800, 900]
    edge = size_front(study)
    assert [p[2] for p in edge] == [2, 1, 0]  # by MACs, each better than the one before
    assert [p[1] for p in edge] == sorted(p[1] for p in edge)
    board = Leaderboard.from_study(study, "accuracy").to_frame()
    assert sorted(board.loc[board["pareto_front"], "trial"]) == [0, 1, 2]


def test_after_a_tighter_budget_the_leaderboard_report_and_export_agree(
    tmp_path: Path, tiny_model: torch.nn.Module, tiny_data: TaskData
) -> None:
    """``--allow-changes --max-params 50%`` on a study whose trials are all at full size: none
    of them may be exported, so none is shown as within budget or as the best."""
    from autotune import search
    from autotune.search.study import best_trial

    # The space can slim below 50% (else the budget is refused before the search); its one
    # trial, the standard recipe of the first stage, is full size.
    space = {
        "lr": {"low": 1e-3, "high": 1e-2, "log": True},
        "prune": {"low": 0.0, "high": 0.8},
        "importance": ["l1"],
        "fit": {"max_epochs": 1},
    }
    quiet = Console(file=io.StringIO())
    first = search(tiny_model, tiny_data, space=space, trials=1, out=tmp_path, console=quiet)
    assert first.best is not None and first.leaderboard.best() is not None

    again = search(
        tiny_model, tiny_data, space=space, trials=1, out=tmp_path, console=quiet,
        max_params="50%", allow_changes=True,
    )  # fmt: skip
    board = again.leaderboard
    assert again.best is None and best_trial(again.study) is None and board.best() is None
    trained = [r for r in board.rows if r.state == "COMPLETE"]
    assert len(trained) == 1 and not any(r.feasible for r in trained)
    assert "best accuracy" not in board.progress_line()
    console = Console(width=160, record=True, file=io.StringIO())
    console.print(board)
    text = console.export_text()
    # Not within budget; marked as what best/ still holds, from the first run.
    assert " ok " not in text and " exp " in text
    assert again.report is not None and "top trial" not in again.report.read_text()
    # Asked for by number, a trial over the budget is written, and its bundle says so.
    asked = again.export(tmp_path / "asked", trial=1)
    assert asked.config["chosen"].startswith("trial 1 as asked, over the search's budgets (params")
    assert "over the search's budgets" in (tmp_path / "asked" / "README.md").read_text()


def test_a_trial_over_the_latest_budget_is_marked_over_and_ranked_after_the_rest() -> None:
    from autotune.search.study import LIMITS

    study = _study()  # the baseline and two trials at 1000 parameters
    study.set_user_attr(LIMITS, {"params": 500.0})
    board = Leaderboard.from_study(study, "accuracy")
    console = Console(width=160, record=True, file=io.StringIO())
    console.print(board)
    text = console.export_text()
    assert " ok " not in text and " over " in text
    assert "over: over budget" in board.legend().plain
    assert board.best() is None


def test_the_legend_explains_slims_and_prune(slimmed_study: Path) -> None:
    from autotune.search.study import load_study

    board = Leaderboard.from_study(load_study(None, slimmed_study), "accuracy", top=20)
    text = board.legend().plain
    shown = board.shown()
    # A staged search: stage 2 slims copies of stage 1's best model.
    assert any(r.parent is not None for r in shown) and any("prune" in r.params for r in shown)
    assert "slims N: a copy of trial N's trained model, slimmed" in text
    assert "prune: share of channels removed" in text
    assert "stopped early" in board.progress_line()


def test_an_interrupted_trial_is_neither_failed_nor_counted_in_the_progress() -> None:
    study = _study()  # the baseline, two complete, one failed
    study.add_trial(create_trial(state=TrialState.FAIL, user_attrs={"interrupted": True}))
    board = Leaderboard.from_study(study, "accuracy", planned=4)
    assert board.rows[-1].state == "INTERRUPTED"
    # A rerun runs it again: it is not a third finished trial of the 4, nor a failure.
    assert board.progress_line().startswith(
        "trials 3/4 done: 2 complete, 0 stopped early, 1 failed, 0 running, "
        "1 interrupted and run again"
    )


def test_a_surplus_trial_is_not_counted_and_a_study_past_the_total_says_what_was_asked() -> None:
    study = _study()  # the baseline, two complete, one failed
    reason = "not run: another worker started the study's last of 3 trials first"
    study.add_trial(
        create_trial(state=TrialState.FAIL, user_attrs={"surplus": True, "fail_reason": reason})
    )
    board = Leaderboard.from_study(study, "accuracy", planned=3)
    assert board.rows[-1].state == "SURPLUS" and board.rows[-1].note == reason
    assert board.progress_line().startswith(
        "trials 3/3 done: 2 complete, 0 stopped early, 1 failed, 0 running, "
        "1 not run (two workers took the same one)"
    )
    # Continued with a lower --trials: nothing runs, and the line is no "3/2".
    fewer = Leaderboard.from_study(study, "accuracy", planned=2)
    assert fewer.progress_line().startswith("trials 3 done (2 asked): 2 complete")


def test_printing_the_leaderboard_in_a_script_shows_the_table_autotune_show_prints() -> None:
    board = Leaderboard.from_study(_study(), "accuracy")
    shown = io.StringIO()
    # As `autotune show` prints it to a log or a pipe (pytest's stdout is no terminal).
    Console(file=shown, width=160, soft_wrap=True, color_system=None).print(board)
    text = str(board)
    assert text == shown.getvalue().rstrip("\n")  # plain text: no escape codes, no dataclass fields
    assert [row[1] for row in _rows(text)] == ["1", "2", "0"]
    assert "TrialRow(" not in repr(board) and len(repr(board)) < 200
    assert "accuracy" in repr(board) and "trial 1" in repr(board)


def test_a_trial_not_trained_is_counted_apart_from_those_stopped_early() -> None:
    study = _study()  # the baseline, two complete, one failed
    # Stopped by the pruner after 3 epochs; skipped before any epoch as a near copy.
    study.add_trial(
        create_trial(state=TrialState.PRUNED, intermediate_values={1: 0.5, 2: 0.6, 3: 0.6})
    )
    near = "not trained: a near copy of trial 1, it keeps 98% of its parameters"
    study.add_trial(create_trial(state=TrialState.PRUNED, user_attrs={"stop_reason": near}))
    board = Leaderboard.from_study(study, "accuracy", planned=5)
    assert board.progress_line().startswith(
        "trials 5/5 done: 2 complete, 1 stopped early, 1 not trained, 1 failed, 0 running"
    )
