from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import blobs
from optuna.trial import TrialState
from rich.console import Console

from autotune import search
from autotune.errors import StorageError
from autotune.load.tasks import TaskData, from_tensors
from autotune.search.storage import open_storage
from autotune.search.trials import SURPLUS
from autotune.trial.fit import evaluate

QUICK = {
    "lr": {"low": 1e-3, "high": 3e-2, "log": True},
    "batch_size": [16, 32],
    "unfreeze": {"low": 1, "high": "all"},
    "fit": {"max_epochs": 4, "patience": 2},
}


def _search(model: torch.nn.Module, data: TaskData, out: Path, **kwargs: Any) -> Any:
    kwargs.setdefault("space", QUICK)
    return search(model, data, out=out, console=Console(file=io.StringIO()), **kwargs)


def test_trial_zero_is_the_untrained_baseline(
    tiny_model: torch.nn.Module, tiny_data: TaskData, tmp_path: Path
) -> None:
    expected = evaluate(tiny_model, tiny_data.x_val, tiny_data.y_val).accuracy
    result = _search(tiny_model, tiny_data, tmp_path, trials=2)
    baseline = result.study.trials[0]
    assert baseline.user_attrs["baseline"] and baseline.params == {}
    assert baseline.value == pytest.approx(expected)
    assert len(result.study.trials) == 3
    best = result.leaderboard.ranked()[0]
    assert best.gain is not None and best.gain > 0


def test_a_failing_trial_is_recorded_and_the_study_goes_on(
    tiny_model: torch.nn.Module, tiny_data: TaskData, tmp_path: Path
) -> None:
    space = {**QUICK, "optimizer": "sgd", "lr": [1.0e30, 1.0e-2]}
    result = _search(tiny_model, tiny_data, tmp_path, trials=6, space=space, pruner="none")
    trials = result.study.trials[1:]
    assert len(trials) == 6
    failed = [t for t in trials if t.state == TrialState.FAIL]
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert failed and done
    assert all(t.params["lr"] == 1.0e30 for t in failed)
    assert all("training loss became nan" in t.user_attrs["fail_reason"] for t in failed)


def test_a_study_where_every_trial_fails_stops_early(
    tiny_model: torch.nn.Module, tiny_data: TaskData, tmp_path: Path
) -> None:
    console = Console(file=io.StringIO(), width=200)
    space = {**QUICK, "optimizer": "sgd", "lr": 1.0e30, "unfreeze": "all"}
    result = search(tiny_model, tiny_data, out=tmp_path, console=console, space=space, trials=20)
    assert len(result.study.trials) == 1 + 5
    said = console.file.getvalue()  # type: ignore[attr-defined]
    assert "5 trials in a row failed (last: training loss became nan" in said
    assert "nothing exported: no trial completed besides the baseline" in said
    assert result.best is None and result.search.stopped


def test_rerunning_continues_the_study_without_redoing_trials(
    tiny_model: torch.nn.Module, tiny_data: TaskData, tmp_path: Path
) -> None:
    first = _search(tiny_model, tiny_data, tmp_path, trials=3)
    stamps = [(t.number, t.datetime_complete, t.value) for t in first.study.trials]
    second = _search(tiny_model, tiny_data, tmp_path, trials=5)
    trials = second.study.trials
    assert len(trials) == 6
    assert [(t.number, t.datetime_complete, t.value) for t in trials[:4]] == stamps
    assert sum(1 for t in trials if t.user_attrs.get("baseline")) == 1
    third = _search(tiny_model, tiny_data, tmp_path, trials=5)
    assert len(third.study.trials) == 6


def test_rerunning_on_other_data_is_refused(
    tiny_model: torch.nn.Module, tiny_data: TaskData, tmp_path: Path
) -> None:
    _search(tiny_model, tiny_data, tmp_path, trials=1)
    x, y = blobs(seed=1)
    with pytest.raises(StorageError, match="already holds a search with another data"):
        _search(tiny_model, from_tensors(x, y), tmp_path, trials=1)


def test_rerunning_with_another_space_names_the_one_the_study_has(
    tiny_model: torch.nn.Module, tiny_data: TaskData, tmp_path: Path
) -> None:
    _search(tiny_model, tiny_data, tmp_path, trials=1, space="default", max_epochs=1)
    # Without --space the model picks "tabular" here: not what the study was made with.
    with pytest.raises(StorageError, match="it was made with --space default"):
        _search(tiny_model, tiny_data, tmp_path, trials=2, space="auto", max_epochs=1)


def test_journal_file_storage(
    tiny_model: torch.nn.Module, tiny_data: TaskData, tmp_path: Path
) -> None:
    journal = tmp_path / "shared" / "study.log"
    result = _search(tiny_model, tiny_data, tmp_path / "out", trials=2, storage=str(journal))
    assert journal.is_file() and len(result.study.trials) == 3


@pytest.mark.parametrize("url", ["postgresql://nobody@127.0.0.1:9/none", "nosuchdb://x"])
def test_unreachable_storage_gets_one_clear_error(url: str, tmp_path: Path) -> None:
    with pytest.raises(StorageError, match=f"cannot open storage '{url}'") as info:
        open_storage(url, tmp_path)
    assert "\n" not in str(info.value)


@pytest.mark.slow
def test_two_worker_processes_share_one_journal_study(tmp_path: Path) -> None:
    import subprocess
    import sys
    import time

    import optuna

    space = tmp_path / "space.yaml"
    # Trials long enough (20 epochs) that the second worker, which needs seconds to import
    # torch, joins while the first still has many trials to run.
    space.write_text(
        "lr: {low: 1.0e-3, high: 1.0e-2, log: true}\nfit: {max_epochs: 20, patience: 20}\n"
    )
    journal = tmp_path / "journal.log"
    command = [
        sys.executable, "-m", "autotune.cli", "search", "--model", "demo", "--space", str(space),
        "--trials", "10", "--storage", str(journal), "--study-name", "shared", "--pruner", "none",
    ]  # fmt: skip
    first = subprocess.Popen([*command, "--out", str(tmp_path / "a")], stdout=subprocess.DEVNULL)
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal))
    )
    for _ in range(300):  # the second worker joins once the first has created the study
        if journal.exists() and optuna.get_all_study_names(storage):
            break
        time.sleep(0.1)
    second = subprocess.run(
        [*command, "--out", str(tmp_path / "b")], capture_output=True, text=True
    )
    assert first.wait(timeout=300) == 0 and second.returncode == 0, second.stderr
    study = optuna.load_study(study_name="shared", storage=storage)
    trials = study.get_trials(deepcopy=False)
    baselines = [t for t in trials if t.user_attrs.get("baseline")]
    ran = [t for t in trials if not t.user_attrs.get("baseline")]
    assert len(baselines) == 1
    # The study's total is shared and exact: 10 trials between them (a trial one worker
    # started in a race for the last place is failed as surplus and not counted).
    counted = [t for t in ran if not t.user_attrs.get(SURPLUS)]
    assert len(counted) == 10
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in counted)
    assert len({t.user_attrs["worker"]["run"] for t in counted}) == 2


def test_an_older_default_sqlite_file_logs_ahead_and_another_reader_sees_every_commit(
    tmp_path: Path,
) -> None:
    import sqlite3

    import optuna

    from autotune.search.study_file import write_ahead

    optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'study.db'}")  # made before the journal
    storage = open_storage(None, tmp_path)
    assert isinstance(storage, optuna.storages.RDBStorage)
    write_ahead(storage)
    study = optuna.create_study(storage=storage, study_name="s")
    trial = study.ask()
    trial.set_user_attr("history", [{"val_accuracy": 0.5}])
    trial.report(0.5, 1)
    # A second reader (the dashboard, `autotune show`) while the writer still holds the file.
    with sqlite3.connect(tmp_path / "study.db") as reader:
        assert reader.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    seen = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'study.db'}")
    assert seen.trials[0].user_attrs["history"] == [{"val_accuracy": 0.5}]
    assert seen.trials[0].intermediate_values == {1: 0.5}


def test_a_search_on_a_storage_url_given_keeps_its_sqlite_journal(
    tiny_model: torch.nn.Module, tiny_data: TaskData, tmp_path: Path
) -> None:
    import sqlite3

    url = f"sqlite:///{tmp_path / 'mine.db'}"
    result = _search(tiny_model, tiny_data, tmp_path / "out", trials=1, max_epochs=1, storage=url)
    with sqlite3.connect(tmp_path / "mine.db") as reader:
        assert reader.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert len(result.study.trials) == 2


def test_the_median_pruner_skipping_its_warm_up_decides_as_optunas() -> None:
    import optuna

    from autotune.search.study import WarmedMedianPruner

    warm = WarmedMedianPruner(n_startup_trials=2, n_warmup_steps=3)
    plain = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=3)
    study = optuna.create_study(direction="maximize", pruner=plain)
    decisions: dict[str, list[bool]] = {"warm": [], "plain": []}
    for curve in ([0.5, 0.6, 0.7, 0.8, 0.9], [0.4, 0.5, 0.6, 0.7, 0.8], [0.1] * 5, [0.9] * 5):
        trial = study.ask()
        for step, value in enumerate(curve, start=1):
            trial.report(value, step)
            frozen = study.trials[trial.number]
            decisions["warm"].append(warm.prune(study, frozen))
            decisions["plain"].append(plain.prune(study, frozen))
        study.tell(trial, curve[-1])
    assert decisions["warm"] == decisions["plain"]
    assert True in decisions["plain"] and False in decisions["plain"]  # both answers were given


def test_a_staged_search_prunes_stage_one_from_a_third_of_its_trials() -> None:
    import optuna

    from autotune.config import SearchSettings
    from autotune.search.study import make_sampler_and_pruner

    # 30 trials, 15 in stage 1 (the only ones pruned): judging from trial 5, not trial 10.
    settings = SearchSettings(trials=30, max_epochs=20).resolved({})
    decisions = {}
    for judged in (15, None):
        _, pruner = make_sampler_and_pruner(settings, judged)
        study = optuna.create_study(direction="maximize", pruner=pruner)
        for _ in range(5):
            good = study.ask()
            for step in range(1, 21):
                good.report(0.5 + step / 50, step)
            study.tell(good, 0.9)
        bad = study.ask()  # trial 5, far below the median after the warm-up
        for step in range(1, 7):
            bad.report(0.1, step)
        decisions[judged] = bad.should_prune()
    assert decisions == {15: True, None: False}
    # The search passes stage 1's count for a space that slims, none for one that only tunes.
    from autotune.search.space import load_space
    from autotune.search.stages import judged_trials

    assert judged_trials(load_space("vision"), settings) == 15
    assert judged_trials(load_space("default"), settings) is None


def test_a_search_continues_an_older_default_sqlite_file_and_leaves_it_one_plain_file(
    tiny_model: torch.nn.Module, tiny_data: TaskData, tmp_path: Path
) -> None:
    import sqlite3

    import optuna

    first = _search(tiny_model, tiny_data, tmp_path, trials=1, max_epochs=1)
    # The same study as an older autotune left it: in OUT/study.db, its default then.
    older = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'study.db'}")
    optuna.copy_study(
        from_study_name=first.study.study_name,
        from_storage=open_storage(str(tmp_path / "study.journal"), tmp_path),
        to_storage=older,
    )
    older.engine.dispose()
    (tmp_path / "study.journal").unlink()
    _search(tiny_model, tiny_data, tmp_path, trials=2, max_epochs=1)
    assert not (tmp_path / "study.journal").exists()  # the older file is the study
    # Folded back: the file alone holds the study (copied alone, read from a read-only folder).
    assert not (tmp_path / "study.db-wal").exists()
    with sqlite3.connect(tmp_path / "study.db") as reader:
        assert reader.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert reader.execute("SELECT COUNT(*) FROM trials").fetchone()[0] == 3  # baseline + 2


def test_the_largest_seed_works_for_every_worker() -> None:
    import optuna

    from autotune.config import MAX_SEED, SearchSettings
    from autotune.search.study import make_sampler_and_pruner

    for worker in range(3):  # worker N samples with seed + N, which numpy must still take
        settings = SearchSettings(seed=MAX_SEED, workers=3, worker=worker).resolved({})
        sampler, _ = make_sampler_and_pruner(settings)
        study = optuna.create_study(sampler=sampler)
        assert 0.0 <= study.ask().suggest_float("lr", 0.0, 1.0) <= 1.0
