"""The kinds an executor knows, by name: the tag of the checkpoint union.

A row's ``kind`` column selects the codec that reads its payload; a name nobody registered
is not an error for the whole store, only for that row (it gets quarantined).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import attrs

from fsm.codec import AttrsCodec, KindCodec
from fsm.errors import DecodeError, DefinitionError, UnknownKind
from fsm.storable import storage_problems
from fsm.store import ActionReport


def codec_of(kind: Any) -> KindCodec:
    """The codec for ``kind``: its own (``kind.codec``, declarative kinds) or `AttrsCodec`."""
    own = getattr(kind, "__fsm_codec__", None)
    if own is not None:
        return own  # type: ignore[no-any-return]
    problems = [p for p in storage_problems(kind) if not p.untyped] if attrs.has(kind) else []
    if problems:
        name = getattr(kind, "name", "?")
        raise DefinitionError(
            f"kind {name!r} ({kind.__qualname__}): {problems[0].describe()}. Fix: {problems[0].fix}"
        )
    return AttrsCodec(kind)


class Registry:
    """Name -> codec, for every kind one executor drives."""

    def __init__(self, kinds: Iterable[Any] = ()) -> None:
        self._by_name: dict[str, KindCodec] = {}
        for kind in kinds:
            self.register(kind)

    def register(self, kind: Any) -> KindCodec:
        """Register a kind (an attrs `fsm.Action` subclass, or a declarative kind)."""
        codec = codec_of(kind)
        existing = self._by_name.get(codec.name)
        if existing is not None and existing is not codec and _origin(existing) is not kind:
            raise ValueError(
                f"kind name {codec.name!r} is registered twice ({_origin(existing)!r} and "
                f"{kind!r}); give one of them another `name`"
            )
        self._by_name[codec.name] = codec
        return codec

    def get(self, name: str) -> KindCodec:
        try:
            return self._by_name[name]
        except KeyError:
            raise UnknownKind(
                f"kind {name!r} is not registered; known kinds: {sorted(self._by_name)}"
            ) from None

    def of(self, action: Any) -> KindCodec:
        """The codec of a live action object, registering its class on first sight."""
        name = action.name
        codec = self._by_name.get(name)
        if codec is None:
            codec = self.register(getattr(action, "__fsm_kind__", type(action)))
        return codec

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._by_name))


def _origin(codec: KindCodec) -> Any:
    return getattr(codec, "cls", codec)


def decode_report(registry: Registry, report: ActionReport) -> ActionReport:
    """``report`` with its live checkpoint decoded by its kind (``action``), or with
    ``decode_error`` saying why it cannot be: a kind ``registry`` does not hold, a row
    written by a newer version, a payload that does not load. An ended action has no
    checkpoint left: its report is returned as it is."""
    if report.payload is None or report.version is None:
        return report
    if report.kind not in registry:
        known = ", ".join(sorted(registry)) or "none"
        why = f"kind {report.kind!r} is not registered here (registered: {known})"
        return attrs.evolve(report, decode_error=why)
    try:
        action = registry.get(report.kind).load(report.state, report.version, report.payload)
    except DecodeError as exc:
        return attrs.evolve(report, decode_error=str(exc))
    return attrs.evolve(report, action=action)
