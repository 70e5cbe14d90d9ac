"""The mutation harness (``tests/mutations.py``) counts a catch only where a test failed."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import mutations  # a script beside the tests, not a package


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "answer.py").write_text("def answer() -> int:\n    return 42\n")
    (tmp_path / "test_code.py").write_text(
        "from answer import answer\n\n\ndef test_answer() -> None:\n    assert answer() == 42\n"
    )
    monkeypatch.setattr(mutations, "ROOT", tmp_path)
    return tmp_path


@pytest.mark.parametrize(
    ("after", "tests", "verdict"),
    [
        ("    return 41\n", "test_code.py", "caught by test_code.py::test_answer"),
        ("    return 42 \n", "test_code.py", "MISSED"),
        ("    return (42\n", "test_code.py", "BROKEN: the mutant does not compile"),
        ("    return 41\n", "test_gone.py", "BROKEN: pytest exited 4"),
    ],
    ids=["caught", "missed", "syntax error", "no such test"],
)
def test_a_mutant_is_caught_only_by_a_failing_test(
    project: Path, monkeypatch: pytest.MonkeyPatch, after: str, tests: str, verdict: str
) -> None:
    row = ("answer.py", "    return 42\n", after, tests)
    monkeypatch.setattr(mutations, "MUTATIONS", {"row": row})
    assert mutations.run("row").startswith(verdict)
    assert (project / "answer.py").read_text().endswith("return 42\n")  # put back


def test_a_row_whose_line_is_gone_is_broken_and_the_rest_still_run(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = {
        "stale": ("answer.py", "    return 7\n", "    return 8\n", "test_code.py"),
        "good": ("answer.py", "    return 42\n", "    return 0\n", "test_code.py"),
    }
    monkeypatch.setattr(mutations, "MUTATIONS", rows)
    assert mutations.main([]) == 1
    out = capsys.readouterr().out
    assert "stale: BROKEN: the line to break is not in answer.py" in out
    assert "good: caught" in out and out.rstrip().endswith("mutations: 1 passed, 1 failed")


@pytest.mark.parametrize("name", sorted(mutations.MUTATIONS))
def test_every_row_breaks_a_line_that_is_in_the_package_exactly_once(name: str) -> None:
    """A refactor that moves a row's line makes the row BROKEN in CI: say so here, in seconds."""
    path, before, _after, _tests = mutations.MUTATIONS[name]
    assert (mutations.ROOT / path).read_text().count(before) == 1, f"update the row {name!r}"
