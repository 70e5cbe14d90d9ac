"""The errors a user can see. Each message says what was wrong, the value, and how to fix it."""

from __future__ import annotations

import re
from collections.abc import Iterator


class AutotuneError(Exception):
    """Root of every error autotune raises for an expected mistake (bad input, bad settings)."""


class ModelLoadError(AutotuneError):
    """The model file cannot be loaded, or loading it needs an explicit choice of the user."""


class DataError(AutotuneError):
    """The data cannot be read, is malformed, or does not fit the model."""


class SpaceError(AutotuneError):
    """The search-space file is broken."""


class StorageError(AutotuneError):
    """The study storage cannot be reached or holds something unexpected."""


class TrialFailed(AutotuneError):
    """One trial cannot go on (NaN loss, a configuration the model cannot take).

    The study records the trial as failed with this message and carries on.
    """


def causes(e: BaseException) -> Iterator[BaseException]:
    """``e`` and the errors it arose from (raised from, or while handling), each once."""
    seen: set[int] = set()
    cause: BaseException | None = e
    while cause is not None and id(cause) not in seen:
        yield cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none)."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def unreadable_file(e: BaseException) -> str:
    """Why ``torch.load(..., weights_only=True)`` refused a file, without PyTorch's advice to
    retry with ``weights_only=False``: for a damaged file or one torch.save never wrote, that
    advice is wrong, and for any file it would run whatever the file holds."""
    text = str(e)
    if "PytorchStreamReader failed" in text:  # a zip archive cut short or overwritten
        return f"it is damaged or cut short ({text.split('. ')[0].strip()})"
    if isinstance(e, EOFError):
        return "it is empty or cut short"
    if isinstance(e, (KeyError, IndexError)):
        # The safe unpickler reading bytes that are no pickle (a text or CSV file) runs off its
        # memo or stack: the message alone ("101", "pop from empty list") says nothing.
        return f"it is not a file torch.save wrote, or it is damaged ({described(e)})"
    if "Weights only load failed" not in text:
        return first_line(e)
    found = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\n\s*\n|$)", text, re.S)
    detail = " ".join(found.group(1).split()) if found else ""
    if detail.startswith("Unsupported global"):
        name = re.search(r"GLOBAL (\S+)", detail)
        return f"it holds a pickled Python object ({name.group(1) if name else detail}), not loaded"
    return f"it is not a file torch.save wrote, or it is damaged ({detail or 'unreadable'})"


def described(e: BaseException) -> str:
    """``first_line``, after the exception's type unless it is one of autotune's own."""
    message = first_line(e)
    return message if isinstance(e, AutotuneError) else f"{type(e).__name__}: {message}"


# user:password@ in a URL (postgresql://user:secret@host/db), also mistyped (one slash, or
# no scheme: user:secret@host/db; scheme://user@host has no password), up to the token's last
# @ since a password may hold one. And password=... in a URL's query or a libpq key=value
# connection string (host=h password='a b').
_URL_PASSWORD = re.compile(
    r"([A-Za-z][A-Za-z0-9+.-]*:/*[^\s:/@'\"]*:|[^\s:/@'\"]+:(?!//))[^\s'\"]*@"
)
_QUERY_PASSWORD = re.compile(
    r"((?:password|passwd|pwd)\s*=\s*)(?:'[^']*'|\"[^\"]*\"|[^\s&;'\"]*)", re.IGNORECASE
)


def redacted(text: str) -> str:
    """``text`` with the passwords of the URLs and connection strings in it replaced by
    ``***``: storage URLs are printed and stored (errors, the recorded command line) where
    others may read them."""
    return _QUERY_PASSWORD.sub(r"\1***", _URL_PASSWORD.sub(r"\1***@", text))
