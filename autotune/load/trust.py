"""Whether opening a model file would run code stored in it: the check every format passes.

``torch.load`` and TorchScript's loader stay within tensors and TorchScript when told to
(``weights_only=True``), but ``torch.export.load`` does not: it unpickles some archive entries
with full ``pickle`` (sample inputs and legacy weight files when the safe reader fails,
weights and constants marked ``use_pickle``, opaque constants), evaluates the program's shape
expressions with ``sympy.sympify`` (Python's ``eval``), and loads compiled AOTInductor
libraries. So a ``.pt2`` archive is read here first, entry by entry, and opened without
``--trust-model`` only when none of its entries would do any of that.
"""

from __future__ import annotations

import ast
import io
import json
import zipfile
from collections.abc import Iterator
from typing import Any

import torch

from autotune.errors import ModelLoadError

# The names a shape expression may call: sympy's arithmetic and comparisons, and torch's own
# sympy functions. Nothing else is called while such an expression is evaluated (see
# ``_unsafe_expression``), and only ``Symbol`` takes a string, which it does not evaluate.
_SYMPY_CALLS = frozenset(
    {
        "Symbol",
        "Integer",
        "Float",
        "Rational",
        "Max",
        "Min",
        "Abs",
        "Mod",
        "floor",
        "ceiling",
        "sqrt",
        "Eq",
        "Ne",
        "Lt",
        "Le",
        "Gt",
        "Ge",
        "And",
        "Or",
        "Not",
        "Add",
        "Mul",
        "Pow",
    }
)
_AST_NODES = (
    ast.Expression,
    ast.Call,
    ast.Name,
    ast.Load,
    ast.Constant,
    ast.keyword,
    ast.BinOp,
    ast.UnaryOp,
    ast.BoolOp,
    ast.Compare,
    ast.operator,
    ast.unaryop,
    ast.boolop,
    ast.cmpop,
)
_KNOWN_TOP = {"archive_format", "archive_version", "byteorder"}


def trust_needed(path: str, what: str) -> ModelLoadError:
    """The one refusal every format gives when loading would run code from the file."""
    return ModelLoadError(
        f"{path!r} {what}, and loading it runs code stored in the file: pass --trust-model "
        "(trust_model=True) only if you trust its source, or save the model as a state_dict "
        "or TorchScript instead"
    )


def program_hazards(data: bytes) -> list[str]:
    """What in a ``torch.export`` archive would run code when ``torch.export.load`` opens it;
    empty when nothing would."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as e:
        return [f"a damaged archive ({e})"]
    roots = {name.split("/", 1)[0] for name in names if "/" in name}
    loose = [name for name in names if "/" not in name]
    if loose or len(roots) != 1:
        # torch falls back to an older format that unpickles entries at the archive's top.
        return [f"entries outside the archive's folder ({(loose or sorted(roots))[0]!r})"]
    root = roots.pop() + "/"
    hazards: list[str] = []
    for name in names:
        entry = name[len(root) :]
        hazards.extend(_entry_hazards(entry, lambda n=name: archive.read(n)))
    return hazards


def _entry_hazards(entry: str, read: Any) -> Iterator[str]:
    if entry in _KNOWN_TOP or entry.startswith((".data/", "extra/")) or entry.endswith("/"):
        return
    if entry.startswith("models/") and entry.endswith(".json"):
        for expr in _expressions(_json(read())):
            if _unsafe_expression(expr):
                yield f"a shape expression that runs code ({expr[:60]!r})"
        return
    if entry.startswith("data/aotinductor/"):
        yield f"compiled AOTInductor code ({entry!r}), a native library loaded into the process"
        return
    if entry.startswith(("data/weights/", "data/constants/")):
        if entry.endswith("_config.json"):
            yield from _payload_hazards(_json(read()))
        elif entry.endswith(".pt") and not _loads_safely(read()):
            yield f"pickled weights ({entry!r})"
        return  # raw tensor bytes, read as storage
    if entry.startswith("data/sample_inputs/"):
        if not _loads_safely(read()):
            yield f"sample inputs that are pickled Python objects ({entry!r})"
        return
    yield f"an entry autotune cannot check ({entry!r})"


def _payload_hazards(config: Any) -> Iterator[str]:
    entries = config.get("config", {}) if isinstance(config, dict) else {}
    for fqn, meta in entries.items() if isinstance(entries, dict) else ():
        if not isinstance(meta, dict):
            continue
        path = str(meta.get("path_name", ""))
        if meta.get("use_pickle") or path.startswith(("custom_obj_", "opaque_obj_")):
            yield f"a pickled weight or constant ({fqn!r} in {path!r})"


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None  # torch refuses it too, before running anything from it


def _expressions(node: Any) -> Iterator[str]:
    """Every ``expr_str`` of a serialized program: torch passes them to ``sympy.sympify``."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr_str" and isinstance(value, str):
                yield value
            else:
                yield from _expressions(value)
    elif isinstance(node, list):
        for item in node:
            yield from _expressions(item)


def _unsafe_expression(text: str) -> bool:
    """Whether evaluating ``text`` could do more than build a sympy expression: anything but
    arithmetic, comparisons and calls of ``_SYMPY_CALLS`` with non-string arguments."""
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError):
        return True
    calls = _SYMPY_CALLS | _torch_sympy_functions()
    # Symbol('s0', ...) takes its name as a string and does not evaluate it.
    symbol_names = {
        id(n.args[0])
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "Symbol"
        if n.args
    }
    for node in ast.walk(tree):
        if not isinstance(node, _AST_NODES):
            return True
        if isinstance(node, ast.Name) and node.id.startswith("_"):
            return True
        if isinstance(node, ast.Call) and (
            not isinstance(node.func, ast.Name) or node.func.id not in calls
        ):
            return True
        literal = isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes))
        if literal and id(node) not in symbol_names:
            return True
    return False


def _torch_sympy_functions() -> frozenset[str]:
    import sympy
    from torch.utils._sympy import functions

    return frozenset(
        name
        for name, value in vars(functions).items()
        if isinstance(value, type) and issubclass(value, sympy.Basic)
    )


def _loads_safely(raw: bytes) -> bool:
    """Whether torch's restricted unpickler reads it: then torch never retries it with the
    full one."""
    try:
        torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception:  # damaged or pickled: either way torch would retry with full pickle
        return False
    return True
