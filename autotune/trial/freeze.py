"""TrialConfig -> which layers of a copied model train, and how much dropout it has.

Layers are counted as ``load.anatomy.layers`` names them, input side first.
"""

from __future__ import annotations

from torch import nn

from autotune.config import TrialConfig
from autotune.load.anatomy import classifier_of, copy_model, layers


def apply(model: nn.Module, config: TrialConfig, order: list[str] | None = None) -> nn.Module:
    """A deep copy of ``model`` with ``config``'s unfreezing and dropout applied."""
    model = copy_model(model)
    configure(model, config, order)
    return model


def configure(model: nn.Module, config: TrialConfig, order: list[str] | None = None) -> None:
    """Set which layers train and how much dropout there is, in place."""
    unfreeze(model, config.unfreeze, order)
    if config.dropout is not None:
        set_dropout(model, config.dropout)


def unfreeze(model: nn.Module, count: int | None, order: list[str] | None = None) -> list[str]:
    """Train only ``count`` layers (all when None); returns their names.

    The layers are the first ``count`` of ``order`` (layer names, most deserving first), or
    by default the last ``count`` counted from the output backwards.
    """
    units = layers(model)
    if count is None:
        chosen = units
    elif order is None:
        chosen = units[max(len(units) - count, 0) :]
    else:
        wanted = set(order[:count])
        chosen = [unit for unit in units if unit.name in wanted]
    trainable = {m for unit in chosen for m in unit.modules}
    for name, param in model.named_parameters():
        param.requires_grad_(name.rpartition(".")[0] in trainable)
    return [unit.name for unit in chosen]


def frozen_norms(model: nn.Module) -> list[nn.Module]:
    """Normalisation modules with frozen parameters: their running statistics stay frozen too."""
    norms = (nn.modules.batchnorm._BatchNorm,)
    return [
        m
        for m in model.modules()
        if isinstance(m, norms) and not any(p.requires_grad for p in m.parameters())
    ]


def can_set_dropout(model: nn.Module) -> bool:
    """Whether dropout can be adjusted or inserted (eager modules; not TorchScript or programs).

    Inserting needs a parent to put the new Dropout in: a bare ``nn.Linear`` model has none.
    """
    if any(isinstance(m, nn.Dropout) for m in model.modules()):
        return True
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    return bool(linears) and linears[-1] != ""


def set_dropout(model: nn.Module, p: float) -> None:
    """Set every Dropout's probability; insert one before the classifier when there is none."""
    dropouts = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    for m in dropouts:
        m.p = p
    if dropouts:
        return
    name, classifier = classifier_of(model)
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, nn.Sequential(nn.Dropout(p), classifier))
