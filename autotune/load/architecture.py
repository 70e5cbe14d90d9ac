"""What ``--arch`` and ``--num-classes`` mean: the network a state_dict's weights are loaded
into, built from torchvision, an importable module or a user's Python file (imported as a
``--code`` file is); and their refusal for a model file that holds its own network, which would
silently ignore them.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

from torch import nn

from autotune.errors import ModelLoadError, described

OWN_NETWORK = {
    "torchscript": "a TorchScript archive",
    "export": "a torch.export program",
    "pickle": "a pickled module",
}
"""The model formats that hold their own network, and how a message names each."""


def given(arch: str | None, num_classes: int | None) -> tuple[str, object] | None:
    """The first of ``--arch`` and ``--num-classes`` given, as (flag, value); None if neither."""
    options = (("--arch", arch), ("--num-classes", num_classes))
    return next(((flag, v) for flag, v in options if v is not None), None)


def refuse_with_own_network(
    path: str, model_format: str, arch: str | None, num_classes: int | None
) -> None:
    """Refuse ``--arch`` or ``--num-classes`` for a model file of a format that holds its own
    network (``OWN_NETWORK``): neither can change what it builds, so each would be ignored."""
    found = given(arch, num_classes)
    if found is None:
        return
    flag, value = found
    holds = "its own architecture" + (", its number of classes included" if arch is None else "")
    raise ModelLoadError(
        f"{flag} {value!r} does not apply to model {path!r} ({OWN_NETWORK[model_format]} holds "
        f"{holds}): drop {flag}"
    )


def import_code(path: str | Path, option: str = "--code") -> types.ModuleType:
    """Import a user's Python file under its own name, so pickles and ``--arch`` can find it.

    Its folder joins ``sys.path``, so that its imports of the files beside it resolve as when
    the user runs it; at the end, so that a file there never shadows an installed package.
    ``option`` is the flag that named the file, for the errors."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{option} file {str(path)!r} does not exist: pass a Python file")
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        raise ModelLoadError(f"{option} file {str(path)!r} is not an importable Python file")
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.append(folder)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as e:  # a script's sys.exit() ended autotune without a word
        del sys.modules[path.stem]
        raise ModelLoadError(
            f"importing {option} file {str(path)!r} failed: {e!r}; fix the file, or put the "
            "modules it imports on PYTHONPATH"
        ) from e
    return module


def build_arch(arch: str, num_classes: int | None = None) -> nn.Module:
    """Build an untrained network from ``torchvision:NAME`` or ``module:ClassName``."""
    where, _, name = arch.rpartition(":")
    if not where or not name:  # no colon, or nothing before or after it (':Net', 'net.py:')
        raise ModelLoadError(
            f"--arch {arch!r} is not of the form torchvision:NAME or package.module:ClassName"
        )
    if num_classes is not None and num_classes < 2:  # -1 was a traceback from nn.Linear
        raise ModelLoadError(
            f"--num-classes {num_classes}: a classifier tells 2 or more classes apart: give the "
            "number of classes of the data"
        )
    kwargs: dict[str, Any] = {} if num_classes is None else {"num_classes": num_classes}
    if where == "torchvision":
        import torchvision

        available = torchvision.models.list_models(module=torchvision.models)
        if name not in available:
            close = [m for m in available if m.startswith(name[:3])][:6]
            raise ModelLoadError(
                f"--arch {arch!r}: torchvision has no model {name!r} "
                f"(for example {close or available[:6]})"
            )
        return torchvision.models.get_model(name, weights=None, **kwargs)
    if where.endswith(".py"):
        module = import_code(where, option="--arch")
    else:
        try:
            module = importlib.import_module(where)
        except ImportError as e:
            raise ModelLoadError(
                f"--arch {arch!r}: cannot import {where!r} ({e}); put it on PYTHONPATH or pass "
                "--code path/to/file.py"
            ) from e
    cls = getattr(module, name, None)
    if cls is None:
        raise ModelLoadError(f"--arch {arch!r}: module {where!r} defines no {name!r}")
    try:
        net = cls(**kwargs)
    except Exception as e:  # the user's constructor may raise anything
        raise ModelLoadError(
            f"--arch {arch!r}: cannot build it with {kwargs}: {described(e)}"
        ) from e
    if not isinstance(net, nn.Module):
        raise ModelLoadError(f"--arch {arch!r} builds a {type(net).__name__}, not an nn.Module")
    return net
