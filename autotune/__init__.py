"""autotune: find how to fine-tune and slim a trained PyTorch model for the data you now have."""

from __future__ import annotations

__version__ = "0.1.0"

from autotune.analysis import Analysis, AnalysisOptions
from autotune.api import SearchResult, analyze, make_job, search
from autotune.data import TaskData, from_datasets, from_tensors, load_data
from autotune.errors import (
    AutotuneError,
    DataError,
    ModelLoadError,
    SpaceError,
    StorageError,
    TrialFailed,
)
from autotune.export import ExportResult, export_trial
from autotune.leaderboard import Leaderboard
from autotune.models import LoadedModel, load_model
from autotune.report import Report, write_report
from autotune.space import SearchSpace, TrialConfig, load_space
from autotune.study import SearchSettings

__all__ = [
    "Analysis",
    "AnalysisOptions",
    "AutotuneError",
    "DataError",
    "ExportResult",
    "Leaderboard",
    "LoadedModel",
    "ModelLoadError",
    "Report",
    "SearchResult",
    "SearchSettings",
    "SearchSpace",
    "SpaceError",
    "StorageError",
    "TaskData",
    "TrialConfig",
    "TrialFailed",
    "__version__",
    "analyze",
    "export_trial",
    "from_datasets",
    "from_tensors",
    "load_data",
    "load_model",
    "load_space",
    "make_job",
    "search",
    "write_report",
]
