"""A trial's record (``search/record.py``): written in a few storage calls, read back typed."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState, create_trial
from rich.console import Console

from autotune import search
from autotune.load.tasks import TaskData
from autotune.search import optuna_internals
from autotune.search.record import TrialRecord, record


@pytest.mark.parametrize("sqlite", [False, True], ids=["journal", "sqlite"])
def test_a_trial_records_everything_in_a_few_storage_calls(
    sqlite: bool,
    tmp_path: Path,
    tiny_model: torch.nn.Module,
    tiny_data: TaskData,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    batches: Counter[int] = Counter()
    one_by_one: list[str] = []
    appends: list[int] = []  # of the journal: the user attributes in each append
    batch = optuna_internals.set_user_attrs

    def counted_batch(trial: optuna.Trial, attrs: dict[str, Any]) -> None:
        batches[trial.number] += 1
        batch(trial, attrs)

    for storage in (optuna.storages.RDBStorage, JournalStorage):
        single = storage.set_trial_user_attr

        def counted_single(
            self: Any, trial_id: int, key: str, value: Any, _s: Any = single
        ) -> None:
            one_by_one.append(key)
            _s(self, trial_id, key, value)

        monkeypatch.setattr(storage, "set_trial_user_attr", counted_single)
    append = JournalFileBackend.append_logs

    def counted_append(self: JournalFileBackend, logs: list[dict[str, Any]]) -> None:
        appends.append(sum("user_attr" in log for log in logs))
        append(self, logs)

    monkeypatch.setattr(optuna_internals, "set_user_attrs", counted_batch)
    monkeypatch.setattr(JournalFileBackend, "append_logs", counted_append)
    space = {"lr": {"low": 1e-3, "high": 1e-2, "log": True}, "fit": {"max_epochs": 2}}
    result = search(
        tiny_model, tiny_data, space=space, trials=3, out=tmp_path,
        console=Console(file=io.StringIO()),
        storage=f"sqlite:///{tmp_path / 'study.db'}" if sqlite else None,
    )  # fmt: skip

    assert one_by_one == []  # no attribute written in a transaction of its own
    # Its worker, its stage, its model before training, its results: four writes a trial
    # (about 25 before), whatever the number of attributes.
    assert set(batches) == {1, 2, 3} and max(batches.values()) <= 4
    # The journal took each batch in one append (Optuna's own calls: one line an append).
    if sqlite:
        assert appends == []
    else:
        assert len([n for n in appends if n > 1]) == sum(batches.values())
    done = [t for t in result.study.trials if t.state == TrialState.COMPLETE and t.number > 0]
    for trial in done:
        rec = TrialRecord.from_trial(trial)
        assert rec.worker and rec.stage == 0 and rec.config is not None
        assert rec.total_params == sum(p.numel() for p in tiny_model.parameters())
        assert rec.history is not None and len(rec.history) == rec.epochs
        assert rec.val_accuracy == pytest.approx(trial.values[0])
        assert rec.samples == len(tiny_data.y_val) and rec.broken is not None


def test_a_record_reads_studies_written_attribute_by_attribute() -> None:
    study = optuna.create_study()
    attrs = {"baseline": True, "total_params": 10, "val_loss": 0.5, "unknown_to_it": 1}
    study.add_trial(create_trial(value=0.5, user_attrs=attrs))
    rec = TrialRecord.from_trial(study.trials[0])
    assert rec.baseline and rec.total_params == 10 and rec.val_loss == 0.5
    assert rec.recipe is False and rec.history is None


def test_only_fields_of_the_record_can_be_written() -> None:
    study = optuna.create_study()
    trial = study.ask()
    record(trial, epochs=3, stop_reason="patience")
    assert trial.user_attrs == {"epochs": 3, "stop_reason": "patience"}
    with pytest.raises(TypeError, match="epoch_count"):
        record(trial, epoch_count=3)
