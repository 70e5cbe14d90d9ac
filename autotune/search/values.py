"""What each search-space parameter may be: the choices of the categorical ones, which are
fractions or integers, and the check of one value against them (``search.space`` reads files
with it)."""

from __future__ import annotations

import math
import re
from typing import Any

import yaml

from autotune.config import MAX_RATIO
from autotune.errors import SpaceError
from autotune.rank.methods import ERROR_METHODS, METHODS
from autotune.trial.augment import AUGMENTS
from autotune.trial.fit import AVERAGES
from autotune.trial.losses import LOSSES


class SpaceLoader(yaml.SafeLoader):
    """YAML's safe loader that also reads ``1e-3`` as a number: YAML 1.1 wants a dot
    (``1.0e-3``), and without one a learning rate was refused as "'1e-3' is not a number"."""


class DuplicateKey(yaml.constructor.ConstructorError):
    """A key given twice in one mapping: YAML keeps the last without a word."""

    def __init__(self, key: Any, first: yaml.Mark, again: yaml.Mark) -> None:
        super().__init__(problem=f"{key!r} given twice", problem_mark=again)
        self.key = key
        self.first = first

    def said(self) -> str:
        return (
            f"{self.key!r} is given twice (first on line {self.first.line + 1}), and YAML keeps "
            "the last without a word: keep one"
        )


def _unique_keys(loader: SpaceLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: dict[Any, yaml.Mark] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # "<<: *base" may be overridden
            continue
        key = loader.construct_object(key_node, deep=deep)
        try:
            first = seen.setdefault(key, key_node.start_mark)
        except TypeError:  # an unhashable key: the constructor says so
            continue
        if first is not key_node.start_mark:
            raise DuplicateKey(key, first, key_node.start_mark)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


SpaceLoader.add_constructor("tag:yaml.org,2002:map", _unique_keys)
SpaceLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)

OPTIMIZERS = ("adamw", "sgd")
INT_PARAMS = {"batch_size", "unfreeze"}
CHOICES = {
    "optimizer": OPTIMIZERS,
    "loss": tuple(LOSSES),
    "importance": METHODS,
    "unfreeze_order": ("output", *ERROR_METHODS),
    "prune_scope": ("layer", "global"),
    "augment": AUGMENTS,
    "average": AVERAGES,
}
RATIOS = {"prune", "prune_layers", "prune_width", "drop_features"}


def check_value(name: str, value: Any, where: str) -> None:
    """Refuse ``value`` for parameter ``name`` (in ``where`` of a space) when it cannot be one."""
    if name in CHOICES:
        if value not in CHOICES[name]:
            raise SpaceError(f"{where}: {value!r} is not one of {list(CHOICES[name])}")
        return
    if name == "dropout" and value is None:
        return
    if name == "unfreeze" and (value is None or value == "all"):
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SpaceError(f"{where}: {value!r} is not a number")
    if not math.isfinite(value):  # YAML reads .nan and .inf as numbers; every trial would fail
        raise SpaceError(f"{where}: {value!r} is not a finite number: write a number")
    if name in INT_PARAMS and not isinstance(value, int):
        raise SpaceError(f"{where}: {value!r} is not an integer")
    if name == "dropout" and not 0.0 <= value < 1.0:
        raise SpaceError(f"{where}: dropout must be in [0, 1), got {value!r}")
    if name == "distill_weight" and not 0.0 <= value <= 1.0:
        raise SpaceError(f"{where}: a distillation weight must be in [0, 1], got {value!r}")
    if name == "distill_temperature" and value <= 0:
        raise SpaceError(f"{where}: a temperature must be positive, got {value!r}")
    if name in RATIOS and not 0.0 <= value <= MAX_RATIO:
        raise SpaceError(f"{where}: a fraction removed must be in [0, {MAX_RATIO}], got {value!r}")
    if name in ("batch_size", "unfreeze", "lr") and value <= 0:
        raise SpaceError(f"{where}: must be positive, got {value!r}")
    if name in ("weight_decay", "focal_gamma") and value < 0:
        raise SpaceError(f"{where}: must be >= 0, got {value!r}")
    if name in ("momentum", "label_smoothing") and not 0.0 <= value < 1.0:
        raise SpaceError(f"{where}: must be in [0, 1), got {value!r}")
