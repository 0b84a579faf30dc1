"""Kinds for the lease tests: one-step kinds of two teams, a newer version, a held step."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, ClassVar

import attrs

import fsm


@attrs.frozen
class Alpha(fsm.Action[Any]):
    """Team A's kind, version 1: one step, then done."""

    name = "alpha"
    label: str

    @property
    def id(self) -> str:
        return self.label

    def advance(self, ctx: fsm.StepContext[Any]) -> fsm.Outcome:
        return fsm.Done()


@attrs.frozen
class AlphaV2(fsm.Action[Any]):
    """Team A's kind after a release: version 2 reads version 1 rows unchanged."""

    name = "alpha"
    version = 2
    upcasters: ClassVar[Mapping[int, fsm.Upcaster]] = {1: lambda payload: payload}
    label: str

    @property
    def id(self) -> str:
        return self.label

    def advance(self, ctx: fsm.StepContext[Any]) -> fsm.Outcome:
        return fsm.Done()


@attrs.frozen
class Beta(fsm.Action[Any]):
    """Team B's kind: one step, then done."""

    name = "beta"
    label: str

    @property
    def id(self) -> str:
        return self.label

    def advance(self, ctx: fsm.StepContext[Any]) -> fsm.Outcome:
        return fsm.Done()


class Gate:
    """The services of `Held`: its step waits until the test opens the gate."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.open = asyncio.Event()


@attrs.frozen
class Held(fsm.Action[Gate]):
    """A step that runs as long as the test wants (a long remote call)."""

    name = "held"
    label: str

    @property
    def id(self) -> str:
        return self.label

    async def advance(self, ctx: fsm.StepContext[Gate]) -> fsm.Outcome:
        ctx.services.entered.set()
        await ctx.services.open.wait()
        return fsm.Done()
