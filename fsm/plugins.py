"""The three entry-point groups through which installed packages plug into fsm.

``fsm.kinds`` (kinds to list, draw and drive), ``fsm.commands`` (subcommands of ``fsm``) and
``fsm.torture`` (scenarios for ``fsm torture``) are all read here and nowhere else, one way:
sorted by name, each loaded on its own, a failure kept beside the name instead of raised. The
caller decides what a broken plugin means for it: `fsm.discover` reports it and lists the
other kinds, the CLI shows the command as unavailable, ``fsm torture`` stops.
"""

from __future__ import annotations

from importlib.metadata import entry_points

import attrs

KINDS = "fsm.kinds"
COMMANDS = "fsm.commands"
TORTURE = "fsm.torture"


@attrs.frozen
class Plugin:
    """One entry point: its name, its ``module:object`` value, and what loading it gave."""

    name: str
    value: str
    loaded: object = None
    error: Exception | None = None


def load_group(group: str) -> list[Plugin]:
    """Every entry point of ``group``, sorted by name, each loaded or with its error."""
    found: list[Plugin] = []
    for ep in sorted(entry_points(group=group), key=lambda e: e.name):
        try:
            found.append(Plugin(ep.name, ep.value, ep.load()))
        except Exception as exc:  # a broken plugin must not break the others
            found.append(Plugin(ep.name, ep.value, error=exc))
    return found
