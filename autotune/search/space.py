"""Search-space YAML -> ``SearchSpace``; ``suggest(trial)`` -> ``TrialConfig``.

Each top-level key of the YAML file names one parameter of a trial. Its value is either
a fixed value (``optimizer: adamw``), a list of choices (``batch_size: [16, 32, 64]``) or a
range (``lr: {low: 1.0e-4, high: 1.0e-2, log: true}``). An optional ``fit:`` section sets
``max_epochs`` and ``patience``. See the README for the full format.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml

from autotune.config import TrialConfig
from autotune.errors import SpaceError
from autotune.search.conditions import applies
from autotune.search.values import (
    CHOICES,
    INT_PARAMS,
    RATIOS,
    DuplicateKey,
    SpaceLoader,
    check_value,
)

_FIELDS = {f.name: f for f in dataclasses.fields(TrialConfig)}
_DISTILL_PARAMS = {"distill_weight", "distill_temperature"}
_FIT_KEYS = {"max_epochs", "patience"}
_ANALYSIS_KEYS = {"samples", "background", "nsamples", "seed", "explainer"}
LAYER_PREFIX = "prune:"
"""Trial parameters ``prune:<layer>`` hold ``prune_layers``'s per-layer fractions."""


@dataclass(frozen=True)
class Param:
    """One parameter of the space: a fixed value, a list of choices, or a numeric range."""

    name: str
    fixed: Any = None
    choices: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | str | None = None
    log: bool = False
    step: float | None = None

    def sample(self, trial: optuna.Trial, n_layers: int, prunable: tuple[str, ...] = ()) -> Any:
        if self.name == "prune_layers":
            return {
                name: self._sample_one(trial, f"{LAYER_PREFIX}{name}", n_layers)
                for name in prunable
            }
        return self._sample_one(trial, self.name, n_layers)

    def _sample_one(self, trial: optuna.Trial, name: str, n_layers: int) -> Any:
        if self.choices is not None:
            return trial.suggest_categorical(name, list(self.choices))
        if self.low is None:
            return self.fixed
        high = n_layers if self.high == "all" else self.high
        assert high is not None  # set by the parser whenever low is
        if self.name in INT_PARAMS:
            step = int(self.step or 1)
            return trial.suggest_int(name, int(self.low), int(high), step=step, log=self.log)
        return trial.suggest_float(name, self.low, float(high), step=self.step, log=self.log)


@dataclass(frozen=True)
class SearchSpace:
    """The parameters a study samples, and the fit settings that come with them."""

    params: dict[str, Param]
    fit: dict[str, int]
    source: str
    """The file (or ``<dict>``) the space was read from."""
    raw: dict[str, Any]
    """The YAML content as parsed: stored with the study so exports need no file."""
    analysis: dict[str, Any] = dataclasses.field(default_factory=dict)
    """The ``analysis:`` section: options for the rankings the space draws on."""

    def suggest(
        self, trial: optuna.Trial, n_layers: int, prunable: tuple[str, ...] = ()
    ) -> TrialConfig:
        """Sample one configuration; conditional parameters only where they apply."""
        values: dict[str, Any] = {}
        for name, param in self.params.items():
            if applies(name, values):  # conditional parameters only where they apply
                values[name] = param.sample(trial, n_layers, prunable)
        return config_from(values)

    def uses_rankings(self) -> bool:
        """Whether trials need an analysis: pruning, feature dropping or a ranked unfreezing."""
        return any(self.may_be_nonzero(name) for name in RATIOS) or any(
            v != "output" for v in self.values_of("unfreeze_order")
        )

    def may_be_nonzero(self, name: str) -> bool:
        param = self.params.get(name)
        if param is None:
            return False
        if param.low is not None:
            return float(param.high or 0) > 0
        return any(bool(v) for v in self.values_of(name))

    def values_of(self, name: str) -> tuple[Any, ...]:
        """The values a choice or fixed parameter can take (its default when absent)."""
        param = self.params.get(name)
        if param is None:
            return (getattr(TrialConfig(), name),)
        if param.choices is not None:
            return param.choices
        return (param.fixed,)

    def methods(self) -> list[str]:
        """The importance methods whose analyses the trials may read."""
        needed = []
        if any(self.may_be_nonzero(n) for n in RATIOS):
            needed += list(self.values_of("importance"))
        needed += [v for v in self.values_of("unfreeze_order") if v != "output"]
        return list(dict.fromkeys(needed))

    def without(self, *names: str) -> SearchSpace:
        """The same space with ``names`` left at their defaults."""
        params = {k: v for k, v in self.params.items() if k not in names}
        return dataclasses.replace(self, params=params)

    def fixed_values(self) -> dict[str, Any]:
        return {k: p.fixed for k, p in self.params.items() if p.low is None and p.choices is None}


def config_from(values: Mapping[str, Any]) -> TrialConfig:
    """A ``TrialConfig`` from sampled or stored values; keys of other components are ignored."""
    kept = {k: v for k, v in values.items() if k in _FIELDS}
    if kept.get("unfreeze") == "all":
        kept["unfreeze"] = None
    per_layer = {
        k.removeprefix(LAYER_PREFIX): float(v)
        for k, v in values.items()
        if k.startswith(LAYER_PREFIX)
    }
    if per_layer:
        kept["prune_layers"] = per_layer
    return TrialConfig(**kept)


def builtin_spaces() -> list[str]:
    """Names of the search spaces shipped with autotune."""
    folder = importlib.resources.files("autotune.search_spaces")
    return sorted(
        p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml")
    )


def load_space(name_or_path: str | Path | Mapping[str, Any] = "default") -> SearchSpace:
    """Read a search space from a shipped name (``default``), a YAML path, or a dict."""
    if isinstance(name_or_path, Mapping):
        return parse_space(dict(name_or_path), "<dict>")
    text_source = str(name_or_path)
    path = Path(text_source)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise SpaceError(f"search-space file {text_source!r} does not exist")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:  # a model or data file given as --space, say
            raise SpaceError(
                f"search-space file {text_source!r} is not YAML text (byte {e.start} is not "
                "UTF-8): give a .yaml file of parameters (see docs/search-space.md)"
            ) from e
    else:
        resource = importlib.resources.files("autotune.search_spaces") / f"{text_source}.yaml"
        if not resource.is_file():
            raise SpaceError(
                f"unknown search space {text_source!r}: use one of {builtin_spaces()} or a path "
                "to a .yaml file"
            )
        text = resource.read_text()
    try:
        raw = yaml.load(text, Loader=SpaceLoader)  # safe_load's, with 1e-3 a number
    except yaml.YAMLError as e:
        raise SpaceError(_yaml_problem(text_source, e)) from e
    return parse_space(raw, text_source)


def _yaml_problem(source: str, e: yaml.YAMLError) -> str:
    """One line for a YAML error (PyYAML's own text quotes the line and draws a caret)."""
    mark = getattr(e, "problem_mark", None)
    where = f"{source!r}, line {mark.line + 1}" if mark is not None else repr(source)
    problem = str(getattr(e, "problem", None) or e).splitlines()[0]
    if isinstance(e, DuplicateKey):
        return f"search space {where}: {e.said()}"
    tag = re.search(r"tag '(?:tag:yaml\.org,2002:)?([^']+)'", problem)
    if isinstance(e, yaml.constructor.ConstructorError) and tag:
        return (
            f"search space {where}: the tag !!{tag.group(1)} is not allowed (tags build Python "
            "objects; a space holds plain numbers, strings, lists and mappings): remove it"
        )
    return f"search space {where} is not valid YAML: {problem}"


def parse_space(raw: Any, source: str) -> SearchSpace:
    if not isinstance(raw, dict):
        raise SpaceError(
            f"search space {source!r} must be a mapping of parameter names, "
            f"got {type(raw).__name__}"
        )
    fit = raw.get("fit", {}) or {}
    if not isinstance(fit, dict) or set(fit) - _FIT_KEYS:
        raise SpaceError(
            f"search space {source!r}: 'fit' may only set {sorted(_FIT_KEYS)}, got {fit!r}"
        )
    for key, value in fit.items():
        if not isinstance(value, int) or value < 1:
            raise SpaceError(
                f"search space {source!r}: fit.{key} must be a positive integer, got {value!r}"
            )
    analysis = raw.get("analysis", {}) or {}
    if not isinstance(analysis, dict) or set(analysis) - _ANALYSIS_KEYS:
        raise SpaceError(
            f"search space {source!r}: 'analysis' may only set {sorted(_ANALYSIS_KEYS)}, "
            f"got {analysis!r}"
        )
    for key, value in analysis.items():
        if key == "explainer":
            if value not in ("gradient", "deep"):
                raise SpaceError(
                    f"search space {source!r}: analysis.explainer must be 'gradient' or 'deep', "
                    f"got {value!r}"
                )
            continue
        if (
            not isinstance(value, int)
            or isinstance(value, bool)
            or value < (0 if key == "seed" else 1)
        ):
            raise SpaceError(
                f"search space {source!r}: analysis.{key} must be a positive integer, got {value!r}"
            )
    if "prune" in raw and "prune_layers" in raw:
        raise SpaceError(
            f"search space {source!r}: 'prune' (one fraction for every layer) and 'prune_layers' "
            "(one per layer) are alternatives: keep one"
        )
    params = {}
    for name, spec in raw.items():
        if name in ("fit", "analysis"):
            continue
        if name not in _FIELDS:
            raise SpaceError(
                f"search space {source!r}: unknown parameter {name!r}; valid parameters are "
                f"{sorted(_FIELDS)}, 'fit' and 'analysis'"
            )
        params[name] = _parse_param(name, spec, source)
    return SearchSpace(params, dict(fit), source, raw, dict(analysis))


def _parse_param(name: str, spec: Any, source: str) -> Param:
    where = f"search space {source!r}, parameter {name!r}"
    if isinstance(spec, list):
        if not spec:
            raise SpaceError(f"{where}: the list of choices is empty")
        for value in spec:
            check_value(name, value, where)
        return Param(name, choices=tuple(spec))
    if isinstance(spec, dict):
        unknown = set(spec) - {"low", "high", "log", "step"}
        if unknown or "low" not in spec or "high" not in spec:
            raise SpaceError(
                f"{where}: a range needs 'low' and 'high' (and optionally 'log', 'step'), got "
                f"keys {sorted(spec)}"
            )
        if name in CHOICES:
            raise SpaceError(
                f"{where}: takes a list of choices from {list(CHOICES[name])}, not a range"
            )
        low, high = spec["low"], spec["high"]
        allow_all = name == "unfreeze"
        for key, value in (("low", low), ("high", high)):
            if not (isinstance(value, (int, float)) and not isinstance(value, bool)) and not (
                allow_all and value == "all" and key == "high"
            ):
                raise SpaceError(f"{where}: '{key}' must be a number, got {value!r}")
            if isinstance(value, float) and not math.isfinite(value):
                raise SpaceError(f"{where}: '{key}' must be a finite number, got {value!r}")
        if high != "all" and low > high:
            raise SpaceError(
                f"{where}: 'low' <= 'high' must hold, but got low={low!r}, high={high!r}"
            )
        if name in RATIOS or name in _DISTILL_PARAMS:
            check_value(name, low, where)
            check_value(name, high, where)
        log = bool(spec.get("log", False))
        if log and low <= 0:
            raise SpaceError(f"{where}: a log range needs 'low' > 0, got low={low!r}")
        step = spec.get("step")
        if step is not None and (
            not isinstance(step, (int, float)) or not 0 < step < math.inf or log
        ):
            raise SpaceError(
                f"{where}: 'step' must be a positive finite number and cannot go with log, "
                f"got {step!r}"
            )
        if name in INT_PARAMS and not (
            isinstance(low, int) and (high == "all" or isinstance(high, int))
        ):
            raise SpaceError(
                f"{where}: an integer parameter needs integer bounds, "
                f"got low={low!r}, high={high!r}"
            )
        for value in (low, high):
            check_value(name, value, where)  # a range must not reach past what a value may be
        return Param(
            name, low=float(low) if name not in INT_PARAMS else low, high=high, log=log, step=step
        )
    check_value(name, spec, where)
    return Param(name, fixed=spec)
