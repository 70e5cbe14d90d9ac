"""Files attached to the study with Optuna's artifact store, so optuna-dashboard shows them.

The store is a folder beside the study (``OUT/artifacts``); ``autotune dashboard`` points the
dashboard at it. Files go on the study itself (Optuna takes no artifacts on finished trials),
named with a prefix such as ``exported-trial_7-`` where they belong to a trial. A name already
attached is not attached again.
"""

from __future__ import annotations

import mimetypes
import shutil
import tempfile
import warnings
from collections.abc import Iterable
from pathlib import Path

import optuna
from optuna.artifacts import FileSystemArtifactStore, get_all_artifact_meta, upload_artifact

from autotune.paths import artifacts_dir


def artifact_store(out: Path) -> FileSystemArtifactStore:
    folder = artifacts_dir(out)
    folder.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(str(folder))


def attach(study: optuna.Study, paths: Iterable[Path], out: Path, prefix: str = "") -> list[str]:
    """Attach ``paths`` to the study as ``prefix + name``; returns the new artifact ids."""
    store = artifact_store(out)
    with warnings.catch_warnings(), tempfile.TemporaryDirectory() as tmp:
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        present = {m.filename for m in get_all_artifact_meta(study)}
        ids = []
        for path in paths:
            name = prefix + path.name
            if not path.is_file() or name in present:
                continue
            named = Path(tmp) / name
            shutil.copyfile(path, named)  # the dashboard shows the file's own name
            ids.append(
                upload_artifact(
                    artifact_store=store,
                    file_path=str(named),
                    study_or_trial=study,
                    mimetype=mimetypes.guess_type(name)[0] or "application/octet-stream",
                )
            )
    return ids
