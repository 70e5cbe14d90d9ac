"""The ``reproduce`` line of ``config.yaml`` and of the model card: the ``autotune export``
command that writes the trial again, with every option that command needs to find the study
and load its model, so that it runs as written from the folder the search ran in."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from autotune.errors import redacted
from autotune.load.job import arch_module, passed_in_memory


def reproduce_command(
    out: str, storage: str | None, study_name: str, trial: int, record: dict[str, Any]
) -> str:
    """The export command of trial ``trial``; for a model or data passed in memory, which no
    command can load again, the Python call that exports it."""
    if passed_in_memory(record):
        return (
            f"result.export({str(Path(out) / f'trial_{trial}')!r}, trial={trial})"
            "  # result = autotune.search(...): its model or data was passed in memory"
        )
    words = ["autotune", "export", "--out", out]
    if storage is not None:  # the default is OUT/study.journal; any other must be named
        words += ["--storage", redacted(storage)]
    words += ["--study-name", study_name, "--trial", str(trial), *_trust_options(record["model"])]
    return shlex.join(words)


def _trust_options(model: dict[str, Any]) -> list[str]:
    """The options the search was given to run the model's code: export refuses to run code a
    study names until it is given them again (``Job.from_record``)."""
    module = arch_module(model)
    # A pickled module, or an --arch module found on the import path: no file to name.
    if model.get("trust_model") or (module is not None and not module.endswith(".py")):
        return ["--trust-model"]
    if model.get("code"):
        return ["--code", model["code"]]
    return [] if module is None else ["--code", module]
