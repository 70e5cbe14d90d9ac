"""autotune: find how to fine-tune and slim a trained PyTorch model for the data you now have."""

from __future__ import annotations

from autotune.api import SearchResult, analyze, make_job, search
from autotune.config import VERSION as __version__
from autotune.config import AnalysisOptions, SearchSettings, TrialConfig
from autotune.errors import (
    AutotuneError,
    DataError,
    ModelLoadError,
    SpaceError,
    StorageError,
    TrialFailed,
)
from autotune.load.data import load_data
from autotune.load.models import LoadedModel, load_model
from autotune.load.tasks import TaskData, from_datasets, from_tensors
from autotune.rank.analysis import Analysis
from autotune.results.export import ExportResult, export_trial
from autotune.results.leaderboard import Leaderboard
from autotune.results.report import Report, write_report
from autotune.search.space import SearchSpace, load_space

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
