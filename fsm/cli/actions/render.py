"""How ``fsm actions`` presents what the library computed: tables, times, JSON.

Text read from a database is shown whatever it holds: every cell goes through
`fsm.failures.one_line` (control characters escaped, whitespace runs collapsed) and into a
rich `Text`, never through rich's markup, so a stored ``[red]`` or ``\\x1b[2J`` prints as the
characters it is. Tables fit the terminal (80 columns when the output is not a terminal):
long ids fold onto a second line, long errors end in an ellipsis. Times are relative to the
database's clock ("3 min ago", "in 2 h"); any stored number prints without error.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import attrs
from rich.console import Console
from rich.table import Table
from rich.text import Text

from fsm.failures import one_line

_UNITS = ((86400.0, "d"), (3600.0, "h"), (60.0, "min"), (1.0, "s"))
_RELATIVE_UP_TO = 30 * 86400.0
"""Beyond 30 days a time is shown as a date."""


def console() -> Console:
    """A console on the current ``sys.stdout`` (looked up now: `fsm.cli.main` may swap it)."""
    return Console(file=sys.stdout, highlight=False, markup=False, emoji=False)


def cell(value: object) -> Text:
    """A table cell: the value as one escaped line."""
    return Text(one_line("" if value is None else str(value)))


def lines(text: str) -> Text:
    """A multi-line value (an error chain, a JSON checkpoint): each line escaped, its
    indentation kept."""
    return Text("\n".join(_indented(line) for line in text.splitlines() or [""]))


def _indented(line: str) -> str:
    body = line.lstrip(" ")
    return " " * (len(line) - len(body)) + one_line(body)


def table(columns: Sequence[Column], rows: Sequence[Sequence[Text]], width: int) -> Table:
    """A borderless table of ``rows`` whose columns share ``width`` (see `fit`)."""
    t = Table(box=None, pad_edge=False, show_edge=False, header_style="bold", expand=False)
    for c, w in zip(columns, fit(columns, rows, width), strict=True):
        overflow: Literal["fold", "ellipsis"] = "fold" if c.fold else "ellipsis"
        t.add_column(c.header, width=w, no_wrap=not c.fold, overflow=overflow)
    for r in rows:
        t.add_row(*r)
    return t


@attrs.frozen
class Column:
    """A table column: as wide as its widest cell, within ``min_width`` and ``max_width``;
    ``fold`` wraps its text onto more lines (ids, which must be read whole), otherwise a
    cell too long ends in an ellipsis. The last column takes what the others leave."""

    header: str
    min_width: int = 3
    max_width: int | None = None
    fold: bool = False


def fit(columns: Sequence[Column], rows: Sequence[Sequence[Text]], width: int) -> list[int]:
    """Each column's width so that the table fits in ``width`` characters.

    Every column gets its widest cell (within its bounds); when that is too wide, the
    columns that fold give way first (down to their minimum), then the others from the
    right.
    """
    natural = [max([len(c.header), *(r[i].cell_len for r in rows)]) for i, c in enumerate(columns)]
    widths = [
        max(c.min_width, min(n, c.max_width or n)) for c, n in zip(columns, natural, strict=True)
    ]
    room = width - 2 * (len(columns) - 1)  # one space on each side of an inner border
    folded = [i for i, c in enumerate(columns) if c.fold]
    cut = [i for i in reversed(range(len(columns))) if not columns[i].fold]
    for i in folded + cut:  # folding loses nothing: those give way first
        excess = sum(widths) - room
        if excess <= 0:
            break
        widths[i] = max(columns[i].min_width, widths[i] - excess)
    return widths


def short(at: float | None, now: float) -> str:
    """`relative`, with a date alone (no time of day) past 30 days: for a table's column."""
    text = relative(at, now)
    return text[:10] if text[:4].isdigit() and "T" in text else text


def relative(at: float | None, now: float) -> str:
    """``at`` as people read it, against ``now``: ``now``, ``12 s ago``, ``in 2 h``, a date
    past 30 days; ``-`` for none, and any stored number without error (``never`` for
    infinity, ``invalid (nan)``, ``far future (1e+12)`` beyond the calendar)."""
    if at is None:
        return "-"
    if math.isnan(at):
        return "invalid (nan)"
    if math.isinf(at):
        return "never" if at > 0 else "far past (-inf)"
    delta = at - now
    if abs(delta) < 1:
        return "now"
    if abs(delta) <= _RELATIVE_UP_TO:
        for size, unit in _UNITS:
            if abs(delta) >= size:
                amount = f"{int(abs(delta) // size)} {unit}"
                return f"in {amount}" if delta > 0 else f"{amount} ago"
    return absolute(at)


def absolute(at: float | None) -> str:
    """``at`` as a UTC date and time, or as `relative` describes what is not a time."""
    if at is None:
        return "-"
    if not math.isfinite(at):
        return relative(at, 0.0)
    try:
        return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError):
        return f"{'far future' if at > 0 else 'far past'} ({at:.3g})"


def plural(n: int, word: str, words: str | None = None) -> str:
    """``1 step``, ``2 steps``; ``words`` for an irregular plural (``retries``)."""
    return f"{n} {word}" if n == 1 else f"{n} {words or word + 's'}"


def jsonable(value: Any) -> Any:
    """JSON values for a document: a time that is not finite becomes its text (``"inf"``)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def write_json(document: Any) -> None:
    """One JSON document on stdout (non-ASCII escaped, so any stored text is safe)."""
    sys.stdout.write(json.dumps(jsonable(document), indent=2) + "\n")


def stream_json_array(items: Iterable[dict[str, Any]]) -> int:
    """One JSON array on stdout, written an item at a time (constant memory); the count."""
    out = sys.stdout
    count = 0
    for item in items:
        out.write(("[\n  " if count == 0 else ",\n  ") + json.dumps(jsonable(item)))
        count += 1
    out.write("[]\n" if count == 0 else "\n]\n")
    out.flush()
    return count


def chunks(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    """``items`` in lists of ``size`` (the last may be shorter)."""
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
