"""`autotune dashboard` serves the study to optuna-dashboard, with what a user needs to see."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def test_dashboard_serves_the_study_trials_and_artifacts(slimmed_study: Path) -> None:
    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "autotune.cli",
            "dashboard",
            str(slimmed_study),
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                studies = _get(f"{base}/api/studies")
                break
            except OSError:
                if server.poll() is not None:
                    raise AssertionError(server.stdout.read() if server.stdout else "") from None
                time.sleep(0.2)
        else:
            raise AssertionError("the dashboard did not answer in 20 s")
        (study,) = studies["study_summaries"]
        detail = _get(f"{base}/api/studies/{study['study_id']}")
        trials = {t["number"]: t for t in detail["trials"]}
        assert len(trials) == 7  # the baseline and 6 trials
        baseline = {a["key"]: a["value"] for a in trials[0]["user_attrs"]}
        assert baseline["baseline"] == "True"
        complete = [t for t in trials.values() if t["state"] == "Complete" and t["number"]]
        assert complete
        for trial in complete:
            attrs = {a["key"]: a["value"] for a in trial["user_attrs"]}
            for key in ("val_accuracy", "gain", "total_params", "macs", "epochs"):
                assert key in attrs, (key, attrs)
            # The held-out split is never scored for a trial that is not the chosen one.
            assert "test_accuracy" not in attrs
            assert float(attrs["val_accuracy"]) == trial["values"][0]
        for trial in trials.values():
            if trial["state"] == "Pruned":
                attrs = {a["key"]: a["value"] for a in trial["user_attrs"]}
                assert "stop_reason" in attrs
        study_attrs = {a["key"]: a["value"] for a in detail["user_attrs"]}
        assert "test_accuracy" in study_attrs["best_export"]
        artifacts = {a["filename"] for a in detail["artifacts"]}
        assert {"shap.json", "shap-layers.png"} <= artifacts
        assert any(name.endswith("-model.pt2") for name in artifacts)
        assert any(name.startswith("exported-trial_") for name in artifacts)
        first_line = server.stdout.readline() if server.stdout else ""
        assert f"http://127.0.0.1:{port}/dashboard/" in first_line
    finally:
        server.terminate()
        server.wait(timeout=10)
