"""The quickstart notebook runs end to end in a real Jupyter kernel."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).parent.parent / "examples" / "quickstart.ipynb"


@pytest.mark.slow
def test_quickstart_notebook_runs_without_errors(tmp_path: Path) -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    # Any cell error raises CellExecutionError and fails the test.
    NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()
    cells = {i: c for i, c in enumerate(notebook.cells) if c.cell_type == "code"}
    search = next(c for c in cells.values() if "autotune.search(" in c.source)
    streamed = "".join(o.get("text", "") for o in search.outputs if o.output_type == "stream")
    # Live in place, not a line per trial.
    assert "trial   1 complete" not in streamed
    leaderboard = next(c for c in cells.values() if c.source.startswith("result  #"))
    shown = leaderboard.outputs[0]["data"]
    assert "autotune leaderboard" in shown["text/plain"] and "text/html" in shown
    analysis = next(c for c in cells.values() if "autotune.analyze(" in c.source)
    assert "unfreezing order" in analysis.outputs[-1]["data"]["text/plain"]
    assert (tmp_path / "runs" / "quickstart" / "again" / "model.pt2").is_file()
    assert (tmp_path / "runs" / "quickstart" / "report.html").is_file()


@pytest.mark.slow
def test_custom_model_example_runs(tmp_path: Path) -> None:
    import subprocess
    import sys

    script = NOTEBOOK.parent / "custom_model.py"
    done = subprocess.run(
        [sys.executable, str(script), "--trials", "3", "--out", str(tmp_path / "custom")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "best trial" in done.stdout and "input columns kept" in done.stdout
    assert (tmp_path / "custom" / "best" / "model.pt2").is_file()
