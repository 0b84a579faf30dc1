"""What every kind's starter returns: the new action and the resources it holds.

Each kind module has one starter, ``start_<kind>(services, ...)``. It checks the request,
asks the outside world what must be asked before the action exists, and builds the action;
it writes no checkpoint. The caller hands both parts to the executor, which takes the
resources in the transaction that writes the first checkpoint, or not at all::

    action, resources = await start_board(services, funding)
    await executor.start(action, resources=resources)

Keeping the start with the caller leaves its options there (``again=True`` for a deliberate
new incarnation, a retry of a refused start) and lets a test step the action without an
executor.
"""

from __future__ import annotations

from typing import Generic, NamedTuple, TypeVar

from fsm import Instance

from .services import Services

D = TypeVar("D")


class Started(NamedTuple, Generic[D]):
    """A new action of a kind whose data is ``D``, and the resource names it must hold."""

    action: Instance[D, Services]
    resources: list[str]
