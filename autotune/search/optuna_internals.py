"""The parts of Optuna autotune uses that are not its public API, in one place.

Optuna offers no public way to read or write a study's system attributes fresh from the
storage, to change a trial that another process runs, or to ask whether a storage beats a
heartbeat. Each use goes through here, so an Optuna release that moves one breaks one module,
and ``pyproject.toml`` bounds the versions these were checked against.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial

from autotune.interrupts import held


def storage_of(study: optuna.Study) -> BaseStorage:
    """The storage a study reads and writes."""
    return study._storage


def trial_id(trial: FrozenTrial) -> int:
    """A trial's id in its storage (its number counts within the study only)."""
    return trial._trial_id


def frozen(trial: optuna.Trial) -> FrozenTrial:
    """A running trial as Optuna started it, with its system attributes (``Trial`` has none
    in Optuna 5), and the user attributes written since."""
    return trial._cached_frozen_trial


def study_system_attrs(study: optuna.Study) -> dict[str, Any]:
    """The study's system attributes as the storage holds them now (``Study.system_attrs`` is
    deprecated)."""
    return study._storage.get_study_system_attrs(study._study_id)


def set_study_system_attr(study: optuna.Study, key: str, value: Any) -> None:
    study._storage.set_study_system_attr(study._study_id, key, value)


def heartbeat_enabled(storage: BaseStorage) -> bool:
    """Whether the storage records heartbeats, so that it fails a dead worker's trials."""
    from optuna.storages._heartbeat import is_heartbeat_enabled

    return is_heartbeat_enabled(storage)


def set_user_attrs(trial: optuna.Trial, attrs: dict[str, Any]) -> None:
    """Set several user attributes of a running trial in one write: one transaction of an RDB
    storage (SQLite, PostgreSQL, MySQL), one append to a journal file. Optuna writes each on
    its own (a transaction, or a locked and synced append), which is most of a small trial's
    storage time. Other storages get them one by one."""
    from optuna.storages import JournalStorage, RDBStorage

    storage = storage_of(trial.study)
    backend = getattr(storage, "_backend", storage)  # under Optuna's cache of an RDB storage
    # Held as the storage's own calls are (``interrupts.hold_in_calls``).
    if isinstance(storage, JournalStorage):
        from optuna.storages.journal._storage import JournalOperation

        with held(), storage._thread_lock:
            op, worker = JournalOperation.SET_TRIAL_USER_ATTR, storage._replay_result.worker_id
            logs = [
                {
                    "op_code": op,
                    "worker_id": worker,
                    "trial_id": trial._trial_id,
                    "user_attr": {k: v},
                }
                for k, v in attrs.items()
            ]
            storage._backend.append_logs(logs)  # one lock and one fsync for all of them
            storage._sync_with_backend()  # a finished trial raises, as Optuna's own call does
    elif isinstance(backend, RDBStorage):
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session

        with held(), _create_scoped_session(backend.scoped_session, True) as session:
            for key, value in attrs.items():
                backend._set_trial_attr_without_commit(
                    session, models.TrialUserAttributeModel, trial._trial_id, key, value
                )
    else:
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        return
    # What ``Trial.set_user_attr`` also does: ``trial.user_attrs`` reads this copy.
    trial._cached_frozen_trial.user_attrs.update(attrs)
