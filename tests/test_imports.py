"""A search imports only what it uses: scikit-learn, pandas and shap cost a small search more
than its training (BENCHMARKS.md, "Trials per hour")."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SEARCH = """
import io, json, sys
import torch
from torch import nn
from rich.console import Console
from autotune import search
from autotune.load.tasks import from_tensors

torch.manual_seed(0)
x, y = torch.randn(120, 6), torch.arange(120) % 3
data = from_tensors(x[:80], y[:80], x_val=x[80:], y_val=y[80:])
model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
space = {"lr": 1e-2, "prune": {"low": 0.0, "high": 0.5}, "fit": {"max_epochs": 2, "patience": 2},
         "analysis": {"samples": 16, "background": 4, "nsamples": 2}}
result = search(model, data, space=space, trials=4, out=sys.argv[1],
                console=Console(file=io.StringIO()))
assert result.best is not None and (result.best.folder / "model.pt2").is_file()
print(json.dumps(sorted(sys.modules)))
"""


def test_a_search_and_its_report_import_no_package_they_do_not_use(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SEARCH, str(tmp_path / "out")],
        capture_output=True,
        text=True,
        check=True,
    )
    imported = {name.split(".")[0] for name in json.loads(done.stdout.splitlines()[-1])}
    assert (tmp_path / "out" / "report.html").is_file()  # the report was written, importances too
    assert not imported & {"sklearn", "pandas", "shap"}
