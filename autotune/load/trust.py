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
import re
import zipfile
from collections import Counter
from collections.abc import Iterator
from typing import Any

import torch

from autotune.errors import ModelLoadError, first_line

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
_POWERS = frozenset({"Pow", "PowByNatural", "FloatPow", "LShift", "RShift"})
"""Calls that raise a number to a power (or shift it): what lets a short text grow huge."""
MAX_EXPRESSION_CHARS = 4096
"""Longest shape expression checked: torch writes a few dozen characters per dimension."""
MAX_INTEGER = 2**64
MAX_EXPONENT = 64
_KNOWN_TOP = {"archive_format", "archive_version", "byteorder"}
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-/]*")
"""Entry names torch writes; anything else (``..``, a leading ``/``, backslashes, control
characters) could be read differently by another zip reader, so it is refused."""


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
        records = _records(data)
    except _Refused as refused:
        return [str(refused)]
    hazards: list[str] = []
    for entry, raw in records.items():
        # torch's zip reader finds names case-insensitively: judge them as it reads them.
        hazards.extend(_entry_hazards(entry.lower(), lambda raw=raw: raw))
    return hazards


def _plain(name: str) -> bool:
    parts = name.rstrip("/").split("/")
    return bool(_PLAIN_NAME.fullmatch(name)) and not any(p in ("", ".", "..") for p in parts)


class _Refused(Exception):
    """An archive whose entries cannot be checked as torch reads them."""


def _records(data: bytes) -> dict[str, bytes]:
    """Every entry of the archive, by its name inside the archive's folder, with the bytes
    torch's own reader gives for it.

    Python's ``zipfile`` and torch's reader (miniz) are two parsers of one file: where they
    could disagree (two entries of one name, of which each reader picks a different one; names
    equal but for case, which miniz matches; a central directory that points elsewhere than
    its local headers), what was checked would not be what is loaded. So the archive is read
    by both, and refused unless they list the same entries with the same bytes."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        names = [info.filename for info in archive.infolist()]
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise _Refused(f"a damaged archive ({e})") from e
    odd = next((n for n in names if not _plain(n)), None)
    if odd is not None:
        raise _Refused(f"an entry name autotune cannot check ({odd[:80]!r})")
    seen = Counter(n.lower() for n in names)
    twice = next((n for n in names if seen[n.lower()] > 1), None)
    if twice is not None:
        # zipfile reads one of them and torch may read the other.
        raise _Refused(f"two entries named {twice!r} (names may not repeat, case aside)")
    roots = {name.split("/", 1)[0] for name in names if "/" in name}
    loose = [name for name in names if "/" not in name]
    if loose or len(roots) != 1:
        # torch falls back to an older format that unpickles entries at the archive's top.
        raise _Refused(f"entries outside the archive's folder ({(loose or sorted(roots))[0]!r})")
    root = roots.pop() + "/"
    listed = {name[len(root) :] for name in names if not name.endswith("/")}
    try:
        reader = torch._C.PyTorchFileReader(io.BytesIO(data))
        records = {
            name: bytes(reader.get_record(name))
            for name in reader.get_all_records()
            if not name.endswith("/")
        }
    except (RuntimeError, OSError, ValueError) as e:
        raise _Refused(f"a damaged archive ({first_line(e)})") from e
    if set(records) != listed:
        differ = sorted(set(records) ^ listed)[0]
        raise _Refused(f"an entry that zip readers list differently ({differ!r})")
    for name, raw in records.items():
        try:
            same = archive.read(root + name) == raw
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
            raise _Refused(f"a damaged archive ({e})") from e
        if not same:
            raise _Refused(f"an entry that zip readers read differently ({name!r})")
    return records


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
    """Whether evaluating ``text`` could do more than build a small sympy expression: anything
    but arithmetic, comparisons and calls of ``_SYMPY_CALLS`` with non-string arguments, or
    arithmetic whose result could not be held (``9**9**9**9`` hangs the loader)."""
    if len(text) > MAX_EXPRESSION_CHARS:
        return True
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
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
        if _too_large(node):
            return True
    return False


def _too_large(node: ast.AST) -> bool:
    """Whether ``node`` is a number or a power that could grow past what a shape needs.

    Sums and products of bounded numbers in a bounded text stay small; only a power (or a
    shift) multiplies digits, so its exponent must be a small number and its base must hold no
    other power: a tower of them is how a few characters ask for more digits than exist."""
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return abs(node.value) > MAX_INTEGER
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Pow, ast.LShift, ast.RShift)):
        base, exponent = node.left, node.right
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        if node.func.id not in _POWERS:
            return False
        if len(node.args) != 2 or node.keywords:
            return True
        base, exponent = node.args
    else:
        return False
    return not _small_number(exponent) or any(_is_power(n) for n in ast.walk(base))


def _is_power(node: ast.AST) -> bool:
    if isinstance(node, ast.BinOp):
        return isinstance(node.op, (ast.Pow, ast.LShift, ast.RShift))
    return (
        isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and (node.func.id in _POWERS)
    )


def _small_number(node: ast.AST) -> bool:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        node = node.operand
    return (
        isinstance(node, ast.Constant)
        and isinstance(node.value, (int, float))
        and abs(node.value) <= MAX_EXPONENT
    )


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
