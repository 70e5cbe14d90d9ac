from __future__ import annotations

import csv
import errno
import importlib.metadata
import json
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.storages.journal import JournalFileBackend, JournalStorage
from typer.testing import CliRunner, Result

import autotune
from autotune.cli import app
from autotune.search.study import best_trial, load_study

runner = CliRunner()
SPACE = """
lr: {low: 1.0e-3, high: 1.0e-2, log: true}
batch_size: [32, 64]
unfreeze: {low: 2, high: all}
dropout: {low: 0.0, high: 0.3}
fit: {max_epochs: 4, patience: 2}
"""


def _search_demo(space: Path, out: Path) -> Result:
    """``autotune search`` on the demo: 3 trials, no pruning (so every trial completes)."""
    args = ["search", "--model", "demo", "--trials", "3", "--space", str(space), "--out", str(out)]
    # On the CPU: a retrained trial reproduces its metric exactly there (a GPU's kernels are
    # not all deterministic).
    return runner.invoke(app, [*args, "--pruner", "none", "--device", "cpu"])


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short search on the demo, through the command line."""
    folder = tmp_path_factory.mktemp("run")
    space = folder / "space.yaml"
    space.write_text(SPACE)
    out = folder / "out"
    result = _search_demo(space, out)
    assert result.exit_code == 0, result.output
    # Not a terminal: one plain line per finished trial instead of a live table.
    assert "trial   1 complete accuracy=" in result.output
    # The summary names each file written in best/ (the image grid too), and no other.
    listed = next(s for s in result.output.splitlines() if s.startswith("exported to "))
    written = sorted(p.name for p in (out / "best").iterdir())
    assert sorted(listed.partition(": ")[2].split(", ")) == written, listed
    config = yaml.safe_load((out / "best" / "config.yaml").read_text())
    assert f"exported: trial {config['trial']}, val accuracy" in result.output
    source = config["metrics"]["baseline_test_accuracy"]
    assert (
        f"held-out test accuracy {config['metrics']['test_accuracy']:.4f} (source "
        in (result.output)
        and f"(source {source:.4f}," in result.output
    )
    # Why, when the export is not the top trial (the one-standard-error rule picked another).
    study = load_study(None, out)
    top = best_trial(study)
    assert top is not None
    said = f"chosen as {config['chosen']}" in result.output
    assert said == (top.number != config["trial"]), (top.number, config["chosen"])
    return out


def test_search_writes_the_bundle(searched: Path) -> None:
    best = searched / "best"
    files = {
        "model.pt",
        "model.pt2",
        "config.yaml",
        "README.md",
        "errors.png",
    }  # errors.png: images
    assert {p.name for p in best.iterdir()} == files
    config = yaml.safe_load((best / "config.yaml").read_text())
    assert config["metrics"]["gain"] > 0.1
    assert config["metrics"]["test_accuracy"] is not None
    # The search kept the best trial's weights, so exporting it needed no retraining.
    assert config["weights"] == f"weights saved by trial {config['trial']}"
    assert config["metrics"]["reproduces_study_value"]
    assert config["model"]["sha256"] and config["data"]["spec"] == "demo"
    assert config["autotune_version"] and config["reproduce"].startswith("autotune export")
    assert set(config["params"]) >= {"lr", "batch_size", "unfreeze", "dropout", "loss"}
    assert (searched / "leaderboard.csv").read_text().count("\n") == 5  # header, baseline, 3 trials
    with (searched / "leaderboard.csv").open() as f:
        exported = [r for r in csv.DictReader(f) if r["exported"] == "True"]
    assert [int(r["trial"]) for r in exported] == [config["trial"]]
    # The latency the export measured and the summary quoted, not an empty cell.
    latency = config["structure"]["latency_ms"]
    assert float(exported[0]["latency_ms"]) == latency["model"]
    assert float(exported[0]["latency_ratio"]) == latency["ratio"]


def test_a_finished_search_is_one_journal_file_that_opens_alone_and_read_only(
    searched: Path, tmp_path: Path
) -> None:
    from optuna_dashboard._storage_url import guess_storage_from_url

    study = searched / "study.journal"
    assert not list(searched.glob("study.journal.*"))  # no lock left behind
    shelf = tmp_path / "read-only"
    shelf.mkdir()
    shutil.copy(study, shelf / "study.journal")  # the file alone, as a user shares it
    (shelf / "study.journal").chmod(0o444)
    shelf.chmod(0o555)
    try:
        copied = load_study(None, shelf).trials
        # What `optuna-dashboard OUT/study.journal` opens.
        served = guess_storage_from_url(str(shelf / "study.journal"))
        names = [s.study_name for s in served.get_all_studies()]
    finally:
        shelf.chmod(0o755)
    assert names == [load_study(None, searched).study_name]
    assert len(copied) == len(load_study(None, searched).trials) == 4
    assert sorted(p.name for p in shelf.iterdir()) == ["study.journal"]


def test_exported_program_runs_without_autotune(searched: Path) -> None:
    config = yaml.safe_load((searched / "best" / "config.yaml").read_text())
    from autotune.load.demo import demo_files

    script = (
        "import sys, json, torch\n"
        "assert 'autotune' not in sys.modules\n"
        f"m = torch.export.load({str(searched / 'best' / 'model.pt2')!r}).module()\n"
        f"d = torch.load({str(demo_files().data)!r})\n"
        "acc = (m(d['x_val']).argmax(1) == d['y_val']).double().mean().item()\n"
        "print(json.dumps(acc))\n"
    )
    # -I: isolated mode, so neither the working directory nor PYTHONPATH can bring autotune in.
    done = subprocess.run(
        [sys.executable, "-I", "-c", script], capture_output=True, text=True, check=True
    )
    assert json.loads(done.stdout) == pytest.approx(config["metrics"]["val_accuracy"], abs=1e-9)


def test_export_retrains_a_trial_and_reproduces_its_metric(searched: Path) -> None:
    frame = (searched / "leaderboard.csv").read_text().splitlines()
    trial = int(frame[2].split(",")[1])  # the second-ranked trial: it has no saved weights
    to = searched / "again"
    result = runner.invoke(
        app, ["export", "--out", str(searched), "--trial", str(trial), "--retrain", "--to", str(to)]
    )
    assert result.exit_code == 0, result.output
    config = yaml.safe_load((to / "config.yaml").read_text())
    assert config["weights"] == f"retrained from trial {trial}'s parameters and seed"
    assert config["metrics"]["reproduces_study_value"] is True
    assert "reproduced: True" in result.output


def test_export_from_a_read_only_search_folder_writes_the_bundle(
    searched: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from autotune.results import export

    def refused(study: object, metric: str, path: Path) -> None:
        # What a folder this user cannot write answers (root's tests cannot chmod it away).
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(export, "write_leaderboard", refused)
    before = (searched / "leaderboard.csv").read_text()
    to = tmp_path / "mine"
    result = runner.invoke(app, ["export", "--out", str(searched), "--trial", "1", "--to", str(to)])
    assert result.exit_code == 0, result.output
    assert (to / "config.yaml").is_file() and (to / "model.pt2").is_file()
    assert (searched / "leaderboard.csv").read_text() == before


def test_export_to_an_existing_file_is_refused_in_one_line(searched: Path) -> None:
    taken = searched.parent / "notes.txt"
    taken.write_text("mine")
    result = runner.invoke(app, ["export", "--out", str(searched), "--to", str(taken)])
    assert result.exit_code == 2, result.output
    assert f"--to {str(taken)!r} is a file: choose a folder" in " ".join(result.output.split())
    assert taken.read_text() == "mine"


def test_show_prints_the_leaderboard(searched: Path) -> None:
    result = runner.invoke(app, ["show", str(searched)])
    assert result.exit_code == 0, result.output
    assert "autotune leaderboard" in result.output and "src: the source model" in result.output
    assert "…" not in result.output  # 80 columns: columns dropped, nothing cut
    top = runner.invoke(app, ["show", str(searched), "--top", "1"])
    assert "top 1 of 4: --top N for more" in " ".join(top.output.split())


@pytest.mark.parametrize("top", ["0", "-5"])
def test_show_refuses_a_top_of_no_rows_in_one_line(top: str, two_studies: Path) -> None:
    result = runner.invoke(app, ["show", str(two_studies), "--top", top])
    assert result.exit_code == 2, result.output
    assert f"--top {top} shows no rows: give 1 or more" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_show_says_a_trial_whose_worker_died_is_not_running(tmp_path: Path) -> None:
    import socket

    from autotune.results.leaderboard import Leaderboard
    from autotune.search.identity import WORKER

    storage = JournalStorage(JournalFileBackend(str(tmp_path / "study.journal")))
    study = optuna.create_study(storage=storage, direction="maximize")
    study.set_user_attr("autotune", {"settings": {"metric": "accuracy"}})
    # As kill -9 leaves it: RUNNING, its worker gone (pid 2**22 + 1 is above Linux's pid_max).
    study.ask().set_user_attr("worker", f"{socket.gethostname()}:{2**22 + 1}")
    study.ask().set_user_attr("worker", WORKER)  # this process: alive, so running
    result = runner.invoke(app, ["show", str(tmp_path)])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert "0 failed, 1 running, 1 whose worker died" in said
    rows = Leaderboard.from_study(study, "accuracy").records()  # leaderboard.csv's rows
    assert [r["state"] for r in rows] == ["ORPHANED", "RUNNING"]
    assert rows[0]["note"] == "its worker died; the next run fails it and runs it again"


def test_rerun_continues_instead_of_starting_over(searched: Path) -> None:
    space = searched.parent / "space.yaml"
    result = _search_demo(space, searched)
    assert result.exit_code == 0, result.output
    assert "trials 3/3 done" in result.output


@pytest.mark.parametrize(
    "args,message",
    [
        (["search", "--model", "nope.pt", "--data", "demo"], "model file 'nope.pt' does not exist"),
        (
            ["search", "--model", "demo", "--data", "sklearn:wine"],
            "cannot take inputs of shape (13,)",
        ),
        (["search", "--model", "demo", "--space", "nope"], "unknown search space 'nope'"),
        (["search", "--model", "demo", "--max-flips", "lots"], "--max-flips 'lots' is not a"),
        (
            ["search", "--model", "demo", "--arch", "torchvision:resnet18"],
            "--arch 'torchvision:resnet18' does not apply to --model demo (the built-in demo",
        ),
        (
            ["search", "--model", "demo", "--num-classes", "5"],
            "--num-classes 5 does not apply to --model demo",
        ),
        (
            ["search", "--model", "demo", "--max-params", "10"],
            "--max-params '10' allows 10 parameters, fewer than the smallest model this space can "
            "build has (at least 58 of the source's 40,618",
        ),
        (
            ["search", "--model", "demo", "--max-macs", "1e-12"],
            "--max-macs '1e-12' allows no macs at all (that share of the source model's 635,658",
        ),
        # A share of the whole source limits nothing: refused before the model loads.
        (
            ["search", "--model", "x.pt", "--data", "demo", "--max-params", "150%"],
            "--max-params '150%' allows 150% of the source model's parameters, so it limits "
            "nothing",
        ),
        (
            ["search", "--model", "x.pt", "--data", "demo", "--max-flips", "100%"],
            "--max-flips '100%' allows 100% of the validation samples, so it limits nothing (no "
            "model breaks more than all of them): give a share below 1 (0.01 or 1%) or a count "
            "(5), or leave --max-flips out",
        ),
        (
            ["search", "--model", "demo", "--max-macs", "1M"],
            "--max-macs '1M' allows 1,000,000 MACs, at least the source model's 635,658, so it "
            "limits nothing",
        ),
        (["search", "--model", "x.pt"], "--data is missing"),
        (["export", "--out", "no/such/run"], "no study in 'no/such/run'"),
    ],
)
def test_bad_input_ends_with_one_line_and_exit_code_2(
    args: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # where a search without --out makes runs/NAME
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []  # refused: no output folder left behind


@pytest.mark.parametrize("seed", ["-1", "4294967296"])
def test_a_seed_numpy_cannot_take_is_refused_before_any_work(seed: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = runner.invoke(app, ["search", "--model", "demo", "--seed", seed, "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert f"--seed must be an integer from 0 to 4294967295 (2**32-1), got {seed}" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not out.exists()


def test_a_space_with_nan_or_inf_is_refused_naming_file_key_and_value(tmp_path: Path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text("lr: {low: 1.0e-3, high: .inf}\nfit: {max_epochs: 1, patience: 1}\n")
    args = ["search", "--model", "demo", "--space", str(space), "--out", str(tmp_path / "out")]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    said = " ".join(result.output.split())
    assert f"search space {str(space)!r}, parameter 'lr': 'high' must be a finite" in said
    assert "got inf" in said


@pytest.fixture
def two_studies(tmp_path: Path) -> Path:
    """An output folder whose study file holds two studies."""
    storage = JournalStorage(JournalFileBackend(str(tmp_path / "study.journal")))
    for name in ("first", "second"):
        optuna.create_study(storage=storage, study_name=name)
    return tmp_path


@pytest.mark.parametrize("command", ["show", "report", "dashboard", "export"])
@pytest.mark.parametrize("storage", ["new.journal", "sqlite:///new.db"])
def test_reading_a_storage_that_does_not_exist_creates_nothing(
    command: str, storage: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    out = ["--out", "."] if command == "export" else ["."]
    result = runner.invoke(app, [command, *out, "--storage", storage])
    assert result.exit_code == 2, result.output
    said = " ".join(result.output.split())
    assert "error: no study storage at 'new." in said
    assert "pass the journal file or database URL a search wrote (e.g. OUT/study.journal)" in said
    assert len(result.output.strip().splitlines()) == 1 and "--study-name" not in said
    assert list(tmp_path.iterdir()) == []  # no empty journal or database made


def _journal_with_a_study(path: Path) -> None:
    optuna.create_study(storage=JournalStorage(JournalFileBackend(str(path))), study_name="s")


@pytest.fixture
def beside_a_study(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder holding a study in a journal file, ``s.journal``, and nothing else."""
    monkeypatch.chdir(tmp_path)
    _journal_with_a_study(tmp_path / "s.journal")
    return tmp_path


def _refused(args: list[str]) -> str:
    """What ``autotune ARGS`` says when it refuses (exit code 2), on one line."""
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    return " ".join(result.output.split())


@pytest.mark.parametrize(
    "args,usage",
    [
        (["show"], "`autotune show OUT`, or the study's --storage"),
        (["export"], "`autotune export --out OUT`"),
        (["dashboard"], "`autotune dashboard OUT`, or the study's --storage"),
        (["report"], "`autotune report OUT`"),
    ],
)
def test_no_folder_given_is_said_as_such_not_as_a_missing_runs_demo(
    args: list[str], usage: str, beside_a_study: Path
) -> None:
    assert _refused(args) == (
        "error: no search output in the default folder 'runs/demo' (no folder was given): "
        f"name the output folder of a search, as in {usage}"
    )
    assert [p.name for p in beside_a_study.iterdir()] == ["s.journal"]  # nothing made


@pytest.mark.parametrize(
    "args,message",
    [
        (["report", "elsewhere", "--storage", "s.journal"], "the report's folder 'elsewhere' does"),
        (["show", "runs/demo"], "no study in 'runs/demo': there is no 'runs/demo/study.journal'"),
    ],
)
def test_a_folder_given_is_named_as_given(
    args: list[str], message: str, beside_a_study: Path
) -> None:
    assert message in _refused(args)


@pytest.mark.parametrize("command", ["report", "export"])
def test_writing_for_a_study_in_a_storage_needs_a_folder_named(
    command: str, beside_a_study: Path
) -> None:
    # The demo's folder exists: a report or export of another study must not land in it.
    (beside_a_study / "runs" / "demo").mkdir(parents=True)
    usage = "autotune report OUT" if command == "report" else "autotune export --out OUT"
    assert _refused([command, "--storage", "s.journal"]) == (
        "error: no output folder was given for the study in --storage: name the folder its "
        f"search wrote, as in `{usage} --storage ...` (the default 'runs/demo' is not assumed: "
        "it may be another search's)"
    )
    assert list((beside_a_study / "runs" / "demo").iterdir()) == []  # nothing written into it


@pytest.mark.parametrize(
    "args,usage",
    [
        (["show"], "autotune show OUT"),
        (["report"], "autotune report OUT"),
        (["export"], "autotune export --out OUT"),
        (["dashboard"], "autotune dashboard OUT"),
    ],
)
def test_a_default_folder_whose_study_is_in_a_storage_is_not_said_to_hold_no_output(
    args: list[str], usage: str, beside_a_study: Path
) -> None:
    # `autotune search --model demo --storage s.journal` writes its bundle into runs/demo.
    (beside_a_study / "runs" / "demo" / "best").mkdir(parents=True)
    assert _refused(args) == (
        "error: the default folder 'runs/demo' holds no study file 'runs/demo/study.journal' "
        "(no folder was given): name the output folder of a search and, where its study is kept "
        f"elsewhere, the study's --storage, as in `{usage} --storage ...`"
    )


def _sqlite_without_a_study(path: Path, content: str) -> None:
    import sqlite3
    from contextlib import closing

    path.touch()
    if content == "other tables":
        with closing(sqlite3.connect(path)) as db:
            db.execute("CREATE TABLE notes (text TEXT)")
            db.execute("INSERT INTO notes VALUES ('mine')")
            db.commit()


@pytest.mark.parametrize("command", ["show", "report", "dashboard", "export"])
@pytest.mark.parametrize("content", ["empty", "other tables"])
def test_reading_a_sqlite_file_without_a_study_leaves_it_as_it_was(
    command: str, content: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    _sqlite_without_a_study(tmp_path / "x.db", content)
    before = (tmp_path / "x.db").read_bytes()
    out = ["--out", "."] if command == "export" else ["."]
    result = runner.invoke(app, [command, *out, "--storage", "sqlite:///x.db"])
    assert result.exit_code == 2, result.output
    said = " ".join(result.output.split())
    assert "error: the study file 'x.db' holds no autotune study" in said
    assert "run autotune search with this --storage first" in said
    assert len(result.output.strip().splitlines()) == 1
    # Optuna's tables were not written into it, nor a journal or log made beside it.
    assert (tmp_path / "x.db").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["x.db"]


def test_a_search_writes_its_study_into_an_empty_sqlite_file(tmp_path: Path) -> None:
    (tmp_path / "x.db").touch()
    storage = f"sqlite:///{tmp_path / 'x.db'}"
    args = ["--model", "demo", "--trials", "1", "--space", "default", "--epochs", "1"]
    args += ["--out", str(tmp_path / "out"), "--storage", storage, "--device", "cpu"]
    result = runner.invoke(app, ["search", *args])
    assert result.exit_code == 0, result.output
    shown = runner.invoke(app, ["show", str(tmp_path / "out"), "--storage", storage])
    assert shown.exit_code == 0, shown.output
    assert "trials 1 done: 1 complete" in " ".join(shown.output.split())


def test_an_empty_study_file_is_said_to_hold_no_study(tmp_path: Path) -> None:
    (tmp_path / "study.journal").touch()
    result = runner.invoke(app, ["show", str(tmp_path)])
    assert result.exit_code == 2, result.output
    said = " ".join(result.output.split())
    assert f"the study file {str(tmp_path / 'study.journal')!r} holds no study: pass the" in said
    assert "--study-name" not in said


def test_dashboard_serves_the_study_named_among_several(
    two_studies: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import optuna_dashboard

    served: list[int] = []
    monkeypatch.setattr(optuna_dashboard, "run_server", lambda *a, **k: served.append(k["port"]))
    asked = runner.invoke(app, ["dashboard", str(two_studies)])
    assert asked.exit_code == 2 and "choose one with --study-name" in asked.output
    result = runner.invoke(app, ["dashboard", str(two_studies), "--study-name", "second"])
    assert result.exit_code == 0, result.output
    assert "optuna-dashboard for study 'second'" in result.output and served == [8080]


def test_dashboard_of_a_study_in_a_storage_serves_no_files_from_the_default_folder(
    beside_a_study: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # runs/demo holds the demo's files: they are not this study's, nor a place to upload to.
    import optuna_dashboard

    (beside_a_study / "runs" / "demo" / "artifacts").mkdir(parents=True)
    stores: list[object] = []
    monkeypatch.setattr(
        optuna_dashboard, "run_server", lambda *a, **k: stores.append(k["artifact_store"])
    )
    result = runner.invoke(app, ["dashboard", "--storage", "s.journal"])
    assert result.exit_code == 0, result.output
    assert stores == [None]
    assert "name the folder its search wrote, as in `autotune dashboard OUT --storage ...`" in (
        " ".join(result.output.split())
    )


@pytest.mark.parametrize("port", ["-1", "99999"])
def test_dashboard_refuses_a_port_out_of_range_in_one_line(tmp_path: Path, port: str) -> None:
    # A study file made before the journal was the default is still found.
    optuna.create_study(storage=f"sqlite:///{tmp_path / 'study.db'}", study_name="only")
    result = runner.invoke(app, ["dashboard", str(tmp_path), "--port", port])
    assert result.exit_code == 2, result.output
    assert f"--port {port} is not a port: choose one from 1 to 65535" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_dashboard_blames_a_host_that_does_not_resolve_before_reading_the_study(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import optuna_dashboard

    served: list[str] = []
    monkeypatch.setattr(optuna_dashboard, "run_server", lambda *a, **k: served.append(k["host"]))
    result = runner.invoke(app, ["dashboard", str(tmp_path), "--host", "example.invalid"])
    assert result.exit_code == 2, result.output
    said = " ".join(result.output.split())
    assert "--host 'example.invalid' cannot be resolved (" in said
    assert "give an address or name of this machine, e.g. 127.0.0.1" in said
    assert "--port" not in said and len(result.output.strip().splitlines()) == 1
    assert served == []


@pytest.mark.parametrize(
    "code,blamed",
    [(errno.EADDRINUSE, "choose another --port"), (errno.EADDRNOTAVAIL, "--host '10.9.8.7'")],
)
def test_dashboard_blames_the_port_or_the_host_as_the_error_says(
    code: int, blamed: str, two_studies: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import optuna_dashboard

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError(code, errno.errorcode[code])

    monkeypatch.setattr(optuna_dashboard, "run_server", refuse)
    args = ["dashboard", str(two_studies), "--study-name", "first", "--host", "10.9.8.7"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    said = " ".join(result.output.split())
    assert blamed in said and "Traceback" not in result.output
    assert ("--port" in said) == (code == errno.EADDRINUSE)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the no-CUDA message")
def test_asking_for_cuda_without_one_is_refused_up_front() -> None:
    result = runner.invoke(app, ["search", "--model", "demo", "--device", "cuda"])
    assert result.exit_code == 2
    assert "asks for CUDA, but none is available" in result.output


@pytest.mark.parametrize("device", ["mps", "meta"])
def test_a_device_this_pytorch_cannot_use_is_refused_in_one_line(
    device: str, tmp_path: Path
) -> None:
    if device == "mps" and __import__("torch").backends.mps.is_available():
        pytest.skip("this machine has an MPS device")
    out = tmp_path / "run"
    result = runner.invoke(
        app, ["search", "--model", "demo", "--device", device, "--out", str(out)]
    )
    assert result.exit_code == 2, result.output
    assert (
        f"--device {device!r}: this PyTorch has no usable {device} device: use auto, cpu or "
        "cuda[:N]" in result.output
    )
    assert "Traceback" not in result.output
    assert [line for line in result.output.splitlines() if line.startswith("error:")] == [
        f"error: --device {device!r}: this PyTorch has no usable {device} device: use auto, "
        "cpu or cuda[:N]"
    ]
    assert not (out / "analysis").exists()  # refused before the analysis


def test_an_unknown_device_is_refused_before_the_model_loads(tmp_path: Path) -> None:
    import torch

    # A pickled module, refused when it loads (no --trust-model): it was that refusal, and a
    # model that loads was refused --device gpu only after it had loaded.
    torch.save(torch.nn.Linear(8, 3), tmp_path / "net.pt")
    refusal = "error: --device 'gpu' is not a device: use auto, cpu or cuda[:N]"
    args = ["--model", str(tmp_path / "net.pt"), "--data", "demo", "--device", "gpu"]
    result = runner.invoke(app, ["search", *args, "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert result.output.strip() == refusal
    assert not (tmp_path / "out").exists()
    # autotune export too, before it reads the study (and then the model).
    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, ["export", "--out", str(tmp_path / "empty"), "--device", "gpu"])
    assert result.exit_code == 2, result.output
    assert result.output.strip() == refusal


def test_analyze_writes_rankings_and_charts(tmp_path: Path) -> None:
    from autotune.rank.analysis import Analysis

    args = ["analyze", "--model", "demo", "--samples", "16", "--nsamples", "4"]
    result = runner.invoke(app, [*args, "--background", "8", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "layers, most error-driving first (the unfreezing order)" in result.output
    assert "errors driven" in result.output  # how many of the source's mistakes each layer drives
    assert "features.0" in result.output and "head.3" in result.output
    analysis = Analysis.load(tmp_path / "shap.json")
    assert set(analysis.channels) == {"features.0", "features.3", "features.7", "head.1"}
    assert len(analysis.channels["features.3"]) == 32
    assert analysis.meta["samples"] == 16 and analysis.layers is not None
    png = (tmp_path / "shap-layers.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 2000
    again = runner.invoke(app, [*args, "--background", "8", "--out", str(tmp_path)])
    assert "from the cache" in again.output


def test_analyze_refuses_an_out_it_cannot_write_before_the_analysis(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    out = tmp_path / "file" / "analysis"  # under a file: no folder can be made there
    args = ["analyze", "--model", "demo", "--samples", "8", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.output.strip() == (
        f"error: --out {str(out)!r} cannot be written (Not a directory): give a folder you can "
        "write to"
    )  # one line, before any analysis line: it was a NotADirectoryError traceback after it


@pytest.mark.parametrize("command", ["search", "analyze"])
def test_an_analysis_cache_that_cannot_be_written_is_refused_before_the_analysis(
    tmp_path: Path, command: str
) -> None:
    import torch
    from conftest import TinyNet, blobs

    (tmp_path / "file").write_text("")
    cache = tmp_path / "file" / "cache"  # AUTOTUNE_CACHE_DIR under a file
    torch.save(TinyNet().state_dict(), tmp_path / "net.pt")
    x, y = blobs(60)
    torch.save({"x_train": x, "y_train": y}, tmp_path / "data.pt")
    args = [command, "--model", str(tmp_path / "net.pt"), "--arch", "conftest:TinyNet"]
    args += ["--data", str(tmp_path / "data.pt"), "--out", str(tmp_path / "out")]
    extra = ["--trials", "1", "--epochs", "1"] if command == "search" else ["--samples", "8"]
    result = runner.invoke(app, [*args, *extra], env={"AUTOTUNE_CACHE_DIR": str(cache)})
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: the analysis cache {str(cache / 'analysis')!r} cannot be written (Not a "
        "directory): set AUTOTUNE_CACHE_DIR to a folder you can write to"
    ]  # it was a NotADirectoryError traceback after the analysis
    assert "Traceback" not in result.output and "nothing exported" not in result.output


def test_an_error_in_the_analysis_is_the_only_thing_said_after_the_header(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    import torch
    from conftest import TinyNet, blobs

    import autotune.rank.analyze

    def fails(*args: object, **kwargs: object) -> None:
        raise ValueError("the model fails in the analysis only")

    monkeypatch.setattr(autotune.rank.analyze, "score", fails)
    torch.save(TinyNet().state_dict(), tmp_path / "net.pt")
    x, y = blobs(60)
    torch.save({"x_train": x, "y_train": y}, tmp_path / "data.pt")
    args = ["search", "--model", str(tmp_path / "net.pt"), "--arch", "conftest:TinyNet"]
    args += ["--data", str(tmp_path / "data.pt"), "--out", str(tmp_path / "out")]
    env = {"AUTOTUNE_CACHE_DIR": str(tmp_path / "cache")}
    result = runner.invoke(app, [*args, "--trials", "1", "--epochs", "1"], env=env)
    assert result.exit_code == 2, result.output
    said = result.output + "".join(capfd.readouterr())  # Optuna's warnings go to stderr
    assert said.strip().splitlines()[-1] == "error: the model fails in the analysis only"
    # Nothing ran to export: it said "nothing exported" and Optuna's "[W ...] There are no
    # complete trials." (from the report) before the error.
    assert "nothing exported" not in said and "no complete trials" not in said


@pytest.mark.parametrize("value", ["1.5", "0", "nan"])
def test_a_val_fraction_outside_0_to_1_is_named_as_the_flag_before_the_model_loads(
    tmp_path: Path, value: str
) -> None:
    missing = tmp_path / "missing.pt"  # never read: the refusal comes first
    args = ["search", "--model", str(missing), "--data", "demo", "--val-fraction", value]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    # It was "val_fraction must be in (0, 1), but got 1.5", after the model loaded.
    assert result.output.strip() == (
        f"error: --val-fraction must be between 0 and 1 (the share of the training data held "
        f"out for validation), got {float(value)!r}: use a fraction such as 0.2"
    )
    assert not (tmp_path / "out").exists()


def test_analyze_refuses_an_unknown_method(tmp_path: Path) -> None:
    result = runner.invoke(app, ["analyze", "--model", "demo", "--method", "magic"])
    assert result.exit_code == 2  # refused by the argument parser, listing the methods
    assert "'magic' is not one of 'shap', 'taylor', 'l1', 'random'" in " ".join(
        result.output.replace("│", " ").split()
    )


def test_help_lists_the_choices_of_each_setting() -> None:
    result = runner.invoke(app, ["search", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for choices in ("<accuracy|loss>", "<median|hyperband|none>", "<params|macs|flips|latency>",
                    "<simplest|top>", "<auto|bf16|fp16|off>", "<auto|on|off>"):  # fmt: skip
        assert choices in result.output, choices
    analyze = runner.invoke(app, ["analyze", "--help"], env={"COLUMNS": "200"})
    assert "<shap|taylor|l1|random>" in analyze.output and "<gradient|deep>" in analyze.output


def test_help_shows_on_off_switches_without_a_value_to_give() -> None:
    # typer shows a bool option as "<bool>", and a user who writes "--verbose true" is refused.
    for command in (["search"], ["analyze"], ["export"], ["demo"], []):
        lines = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200"}).output
        switches = [line for line in lines.splitlines() if "<bool>" in line]
        assert all("--help" in line for line in switches), (command, switches)
    search = runner.invoke(app, ["search", "--help"], env={"COLUMNS": "200"}).output
    assert "--trust-model " in search and "--refit " in search and "--verbose " in search


def test_version_prints_the_installed_version_and_help_lists_it() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output == f"autotune {importlib.metadata.version('autotune')}\n"
    assert "--version" in runner.invoke(app, ["--help"], env={"COLUMNS": "200"}).output


@pytest.mark.parametrize("args", [["-h"], ["search", "-h"], ["export", "-h"]])
def test_dash_h_is_help(args: list[str]) -> None:
    short, long = runner.invoke(app, args), runner.invoke(app, [*args[:-1], "--help"])
    assert short.exit_code == 0 and short.output == long.output and "Usage:" in short.output


def test_the_installed_version_is_the_one_bundles_record() -> None:
    # pyproject's version is dynamic, read from autotune.config.VERSION: one source for both.
    assert importlib.metadata.version("autotune") == autotune.__version__


def test_in_a_pipe_a_long_line_of_text_stays_one_line(tmp_path: Path) -> None:
    # A log read with grep: the opening line, past 160 columns here, is not broken mid-phrase.
    out = tmp_path / ("a-long-folder-name-" * 8) / "out"
    args = ["--model", "demo", "--trials", "1", "--epochs", "1", "--space", "default"]
    result = runner.invoke(app, ["search", *args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    opening = next(line for line in result.output.splitlines() if line.startswith("model "))
    assert len(opening) > 160 and opening.endswith(f"in {out / 'study.journal'}"), opening


def test_the_interrupted_message_stays_one_line_in_a_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A Ctrl-C's message goes to stderr, which a log keeps at 80 columns: it is not broken.
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(autotune.api, "search", interrupted)
    args = ["search", "--model", "demo", "--out", str(tmp_path / "out")]
    result = runner.invoke(app, args, env={"COLUMNS": "80"})
    assert result.exit_code == 130, result.output
    assert result.stderr == (
        "interrupted: finished trials are stored, and the leaderboard, best model and report "
        "written from them; run the same command to continue\n"
    )
