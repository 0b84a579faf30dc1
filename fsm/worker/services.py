"""Where a worker's services come from: one object handed to every step it drives.

`services_for` decides it (a ``--services`` factory, else the ``services`` attribute the
kinds share, else ``None`` when no kind needs any), or refuses with a one-line reason before
a step can run without it. Kept apart from `fsm.discover`, which finds kinds and knows
nothing of running them.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Iterable
from types import NoneType, UnionType
from typing import Any

from fsm.discover import load_module
from fsm.errors import FsmError
from fsm.state import callable_name


class ServicesError(FsmError):
    """A worker cannot get the services its kinds need."""


class ServicesMissing(ServicesError):
    """Kinds need services and nothing says how to build them (a usage error)."""


class ServicesFailed(ServicesError):
    """The services factory raised."""


def load_factory(module: str, attr: str) -> Callable[..., object]:
    """The ``--services MODULE:FACTORY`` callable; `ServicesError` if it is not one."""
    factory = getattr(load_module(module), attr, None)
    if not callable(factory):
        raise ServicesError(f"--services {module}:{attr} is not a callable")
    return typing.cast(Callable[..., object], factory)


def services_type(cls: type) -> Any:
    """The ``S`` of ``Kind[D, S]`` or ``Action[S]`` (`typing.Any` when the class leaves it
    open: then it may need anything)."""
    definition = getattr(cls, "__fsm_definition__", None)
    if definition is not None:
        return definition.services_type
    from fsm.protocol import Action

    for klass in cls.__mro__:
        for orig in getattr(klass, "__orig_bases__", ()):
            origin = typing.get_origin(orig)
            if isinstance(origin, type) and issubclass(origin, Action):
                return typing.get_args(orig)[0]
    return Any


def needs_services(cls: type) -> bool:
    """False when the kind's services type admits ``None`` (``Kind[D, None]``,
    ``Action[Shop | None]``): it runs without services."""
    t = services_type(cls)
    if t is None or t is NoneType:
        return False
    union = typing.get_origin(t) in (typing.Union, UnionType)
    return not (union and NoneType in typing.get_args(t))


def services_for(
    kinds: Iterable[type],
    factory: Callable[[], object] | None = None,
    *,
    factory_name: str = "--services",
) -> object:
    """The services object a worker hands to every step of ``kinds``.

    ``factory`` (``--services``), when given, builds it. Otherwise the kinds that need
    services must say how they are built (their ``services`` class attribute), all the same
    way, since one object serves every step. Raises `ServicesMissing` (one line, naming the
    kinds and the fix) rather than hand ``None`` to steps that would then fail every action,
    and `ServicesFailed` when a factory raises. ``None`` when no kind needs services.
    """
    if factory is not None:
        return _build(factory, factory_name)
    needing = [k for k in kinds if needs_services(k)]
    missing = [k for k in needing if _builder(k) is None]
    if missing:
        listed = ", ".join(f"{_kind_label(k)} ({_type_label(services_type(k))})" for k in missing)
        raise ServicesMissing(
            f"kinds need services and none is given: {listed}; pass --services "
            "MODULE:FACTORY, or set `services = <callable>` on each kind"
        )
    builders: list[Callable[[], object]] = []
    for k in needing:
        if not any(_builder(k) is b for b in builders):
            builders.append(_builder(k))
    if len(builders) > 1:
        listed = ", ".join(f"{_kind_label(k)} ({callable_name(_builder(k))})" for k in needing)
        raise ServicesMissing(
            f"kinds build their services differently: {listed}; one worker hands one "
            "services object to every step: pass --services MODULE:FACTORY serving them all"
        )
    return _build(builders[0], callable_name(builders[0])) if builders else None


def _builder(cls: type) -> Any:
    """The kind's ``services`` class attribute: how it builds its services, or None."""
    return getattr(cls, "services", None)


def _build(factory: Callable[[], object], name: str) -> object:
    try:
        return factory()
    except Exception as exc:  # user code: report it in one line, no traceback
        raise ServicesFailed(
            f"services factory {name} failed: {type(exc).__name__}: {exc}"
        ) from None


def _kind_label(cls: type) -> str:
    """A kind's (or an action class's) ``name``, else the class name."""
    value = getattr(cls, "name", None)
    return value if isinstance(value, str) else cls.__name__


def _type_label(t: Any) -> str:
    return str(getattr(t, "__name__", None) or t)
