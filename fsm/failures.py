"""How a failure becomes text on a row, in the log and in a drive's result.

Error texts come from anywhere (a remote's message, a user's exception), and are stored in
database text columns and printed by the CLI: they are made storable here (no NUL byte, which
PostgreSQL refuses in text, and a bounded length) once, before any write.
"""

from __future__ import annotations

import traceback

from fsm.errors import KindError

MAX_ERROR_CHARS = 4000
"""Longest error text kept on a row or a log entry; the rest is cut with a marker."""

_TRACEBACK_LINES = 6
"""Lines of a broken step's traceback kept with its error (the innermost frames)."""

_CHAIN_DEPTH = 5
"""Causes kept after an error (``raise ... from``, or raised while handling another)."""

CAUSED_BY = "caused by: "
WHILE_HANDLING = "while handling: "
_LINKS = ("\n" + CAUSED_BY, "\n" + WHILE_HANDLING)


def one_line(text: str) -> str:
    """``text`` safe to print on one terminal line, whoever wrote it (a remote's error, a
    foreign database): runs of whitespace become one space, and every other unprintable
    character (terminal escapes, bidi overrides) is shown as its escape, such as ``\\x1b``.
    """
    return "".join(
        ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii")
        for ch in " ".join(text.split())
    )


def storable(text: str) -> str:
    """``text`` without NUL bytes, cut to `MAX_ERROR_CHARS`."""
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    if len(text) > MAX_ERROR_CHARS:
        text = text[: MAX_ERROR_CHARS - 15] + " ...[truncated]"
    return text


def error_text(error: BaseException | str | None) -> str | None:
    """``TypeName: message`` of an error (a string stays as it is), storable."""
    if error is None:
        return None
    if isinstance(error, str):
        return storable(error)
    return storable(f"{type(error).__name__}: {_message(error)}")


def chained_text(error: BaseException | str | None) -> str | None:
    """`error_text`, then the error's chain of causes, one per line, outermost first:
    ``caused by: <error>`` for an explicit cause (``raise ... from``), ``while handling:
    <error>`` for the one being handled when it was raised. A text stays as it is."""
    if not isinstance(error, BaseException):
        return error_text(error)
    lines = [f"{type(error).__name__}: {_message(error)}"]
    seen = {id(error)}
    current: BaseException | None = error
    while current is not None and len(lines) <= _CHAIN_DEPTH:
        if current.__cause__ is not None:
            current, link = current.__cause__, CAUSED_BY
        elif current.__context__ is not None and not current.__suppress_context__:
            current, link = current.__context__, WHILE_HANDLING
        else:
            break
        if id(current) in seen:  # a cycle of causes
            break
        seen.add(id(current))
        lines.append(f"{link}{type(current).__name__}: {_message(current)}")
    return storable("\n".join(lines))


def chain_of(text: str) -> tuple[str, ...]:
    """A stored error split into the error and its causes (see `chained_text`): the first
    item is the error, each next one a cause with its ``caused by:``/``while handling:``."""
    parts = [text]
    for link in _LINKS:
        parts = [piece for part in parts for piece in _split_keep(part, link)]
    return tuple(parts)


def _split_keep(text: str, link: str) -> list[str]:
    head, *rest = text.split(link)
    return [head, *(link[1:] + piece for piece in rest)]


def broken_text(error: BaseException) -> str:
    """The error of a broken step with the innermost lines of its traceback, storable.

    fsm's own `KindError` already names the kind, the state, the callback and the fix: its
    traceback (fsm's frames) would only add noise, so it is left out.
    """
    head = f"broken: {type(error).__name__}: {_message(error)}"
    if isinstance(error, KindError):
        return storable(head)
    try:
        frames = traceback.format_exception(type(error), error, error.__traceback__)
    except Exception:  # an exception whose __str__ fails again while formatted
        frames = []
    lines = [
        line
        for line in "".join(frames[1:-1]).rstrip().splitlines()
        if line.strip(" ^~")  # the caret lines under a frame say nothing in one line
    ][-_TRACEBACK_LINES:]
    return storable("\n".join([head, *lines]))


def _message(error: BaseException) -> str:
    """``str(error)``, or a placeholder when the error cannot even say what it is."""
    try:
        return str(error)
    except Exception as exc:
        return f"<unprintable {type(error).__name__}: its __str__ raised {type(exc).__name__}>"


def with_cause(error: BaseException | str, cause: str | None) -> BaseException | str:
    """A failure's error, with the cause that led there appended when it is a plain text."""
    if cause is None or not isinstance(error, str):
        return error
    cause = cause.split("\n", 1)[0]  # its own chain is kept with the cause
    return error if cause in error else f"{error} (cause: {cause})"
