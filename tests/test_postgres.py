"""Two worker processes on one study in a real PostgreSQL server, as two machines would run.

``.ci/run`` starts the server and sets ``AUTOTUNE_TEST_POSTGRES_URL``; elsewhere the test skips
(``AUTOTUNE_REQUIRE_POSTGRES=1`` makes it fail instead)."""

from __future__ import annotations

import csv
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from processes import make_job, start
from sqlalchemy import create_engine, inspect, text
from typer.testing import CliRunner

from autotune.cli import app
from autotune.search.trials import counts, finished, retried

URL = os.environ.get("AUTOTUNE_TEST_POSTGRES_URL")

pytestmark = pytest.mark.slow


@pytest.fixture
def postgres() -> str:
    if URL:
        return URL
    reason = "AUTOTUNE_TEST_POSTGRES_URL is not set (.ci/run starts a PostgreSQL server for it)"
    if os.environ.get("AUTOTUNE_REQUIRE_POSTGRES") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


def test_two_machines_share_one_study_in_postgresql(postgres: str, tmp_path: Path) -> None:
    args, env = make_job(tmp_path / "job")
    name = f"shared-{uuid.uuid4().hex[:8]}"
    args += ["--trials", "6", "--storage", postgres, "--study-name", name]
    processes = []
    for machine in (0, 1):
        out, log = tmp_path / f"machine{machine}", tmp_path / f"log{machine}"
        machine_env = {**env, "AUTOTUNE_WORKER_INDEX": str(machine)}
        processes.append((start([*args, "--out", str(out)], machine_env, log), log))
    try:
        for process, log in processes:
            assert process.wait(timeout=400) == 0, log.read_text()[-3000:]
    finally:
        for process, _ in processes:
            process.kill()  # no machine left waiting on the shared study

    study = optuna.load_study(study_name=name, storage=postgres)
    trials = study.get_trials()
    numbers = [t.number for t in trials]
    assert numbers == list(range(len(trials)))
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert finished(study) == 6
    again = retried(trials)
    counted = [t for t in trials if counts(t, again) and t.state.is_finished()]
    configs = [tuple(sorted(t.params.items())) for t in counted]
    assert len(set(configs)) == len(configs), "two trials ran the same configuration"
    assert sum(1 for t in trials if t.user_attrs.get("baseline")) == 1
    # Machine 0 exported the combined study after waiting for machine 1's trials; 1 did not.
    with (tmp_path / "machine0" / "leaderboard.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {int(r["trial"]) for r in rows} >= {t.number for t in counted}
    assert (tmp_path / "machine0" / "best" / "config.yaml").is_file()
    assert not (tmp_path / "machine1" / "best").exists()


@pytest.fixture
def empty_database(postgres: str) -> Iterator[str]:
    """A new database on the test server with no table in it, dropped afterwards."""
    name = f"empty_{uuid.uuid4().hex[:8]}"
    server = create_engine(postgres, isolation_level="AUTOCOMMIT")
    with server.connect() as db:
        db.execute(text(f"CREATE DATABASE {name}"))
    try:
        yield postgres.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with server.connect() as db:
            db.execute(text(f"DROP DATABASE {name} WITH (FORCE)"))
        server.dispose()


@pytest.mark.parametrize("command", ["show", "report", "dashboard", "export"])
def test_reading_a_database_without_a_study_leaves_it_empty(
    command: str, empty_database: str, tmp_path: Path
) -> None:
    out = ["--out", str(tmp_path)] if command == "export" else [str(tmp_path)]
    result = CliRunner().invoke(app, [command, *out, "--storage", empty_database])
    assert result.exit_code == 2, result.output
    said = " ".join(result.output.split())
    assert f"error: the database {empty_database!r} holds no autotune study" in said
    assert "run autotune search with this --storage first" in said
    engine = create_engine(empty_database)
    try:
        assert inspect(engine).get_table_names() == []  # Optuna's tables were not made
    finally:
        engine.dispose()
