"""Finding kinds: in installed packages (the ``fsm.kinds`` entry points) and in named modules.

A kind is recognised by its contract, not by its base class: a class with a ``name`` string,
a ``graph()`` classmethod returning a `fsm.graph.KindGraph`, and a ``__fsm_codec__``. That
keeps discovery independent of how kinds are declared.

A module's kinds are the ones it defines, plus those it re-exports on purpose in
``__all__``; a kind merely imported (say to subclass it) is not counted twice under the
importing module. Importing a definitions module must have no side effects besides defining
its kinds, so importing it here is safe; a `fsm.DefinitionError` raised by that import is
passed through untouched, because its message already names the kind, the state and the fix.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from collections.abc import Iterable
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol, TypeGuard

import attrs

from fsm.errors import DefinitionError, FsmError
from fsm.graph import KindGraph

ENTRY_POINT_GROUP = "fsm.kinds"


class KindClass(Protocol):
    """What discovery, the CLI and the diagrams need from a declarative kind."""

    name: str
    __fsm_codec__: Any

    @classmethod
    def graph(cls) -> KindGraph: ...


class DiscoveryError(FsmError):
    """A module or entry point could not be imported, or a kind name cannot be resolved."""


def is_kind(obj: object) -> TypeGuard[type[KindClass]]:
    """True for a class that satisfies the kind contract (see the module docstring)."""
    return (
        isinstance(obj, type)
        and isinstance(getattr(obj, "name", None), str)
        and callable(getattr(obj, "graph", None))
        and hasattr(obj, "__fsm_codec__")
    )


@attrs.frozen
class FoundKind:
    """A kind and where it came from (``source``: ``--module X`` or ``entry point Y``)."""

    cls: type[KindClass]
    source: str

    @property
    def name(self) -> str:
        return self.cls.name

    @property
    def qualname(self) -> str:
        """``module:Qualname``, the form ``fsm validate`` accepts."""
        return f"{self.cls.__module__}:{self.cls.__qualname__}"

    @property
    def location(self) -> str:
        """``path:line`` of the class statement, or the module name if that is unknown."""
        try:
            path = inspect.getsourcefile(self.cls)
            _, line = inspect.getsourcelines(self.cls)
        except (OSError, TypeError):
            return self.cls.__module__
        if path is None:
            return self.cls.__module__
        return f"{_relative(Path(path))}:{line}"


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def kinds_in(module: ModuleType) -> list[type[KindClass]]:
    """The kinds ``module`` defines or lists in ``__all__``, in definition order."""
    exported = set(getattr(module, "__all__", ()))
    return [
        obj
        for attr, obj in vars(module).items()
        if is_kind(obj) and (obj.__module__ == module.__name__ or attr in exported)
    ]


def actions_in(module: ModuleType) -> list[type]:
    """Hand-written `fsm.Action` classes ``module`` defines (those with their own namespace).

    Workers drive these beside the declarative kinds; they have no table, so no diagram.
    """
    from fsm.protocol import Action

    return [
        obj
        for obj in vars(module).values()
        if isinstance(obj, type)
        and issubclass(obj, Action)
        and obj.__module__ == module.__name__
        and "namespace" in vars(obj)
    ]


def load_module(spec: str) -> ModuleType:
    """Import a module named by a dotted name or by the path of a ``.py`` file.

    A file is imported under its stem as module name (so its classes have a normal
    ``__module__`` and cattrs can resolve their annotations). `DefinitionError` passes
    through; any other import failure becomes a `DiscoveryError` naming the module.
    """
    try:
        if spec.endswith(".py") or "/" in spec or "\\" in spec:
            return _load_file(Path(spec))
        return importlib.import_module(spec)
    except (DefinitionError, DiscoveryError):
        raise
    except ModuleNotFoundError as exc:
        if exc.name is not None and (spec == exc.name or spec.startswith(exc.name + ".")):
            raise DiscoveryError(
                f"no module named {spec!r} (is it on PYTHONPATH, or did you mean a .py path?)"
            ) from None
        raise DiscoveryError(f"cannot import {spec!r}: {exc}") from None
    except Exception as exc:  # any error in user code: report it, don't dump a traceback
        raise DiscoveryError(f"cannot import {spec!r}: {type(exc).__name__}: {exc}") from None


def _load_file(path: Path) -> ModuleType:
    if not path.is_file():
        raise DiscoveryError(f"no such file: {path}")
    name = path.stem
    already = sys.modules.get(name)
    if already is not None and Path(getattr(already, "__file__", "") or "").resolve() == (
        path.resolve()
    ):
        return already
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise DiscoveryError(f"cannot import {path}: not a Python source file")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _from_entry_point(ep: EntryPoint) -> list[type[KindClass]]:
    try:
        loaded = ep.load()
    except DefinitionError:
        raise
    except Exception as exc:  # a broken plugin is reported by name, with its error
        raise DiscoveryError(f"cannot load: {type(exc).__name__}: {exc}") from None
    if is_kind(loaded):
        return [loaded]
    if isinstance(loaded, ModuleType):
        return kinds_in(loaded)
    raise DiscoveryError(f"loads {loaded!r}, which is neither a kind nor a module")


@attrs.frozen
class Discovery:
    """Every kind found, and the sources that failed (reported, not fatal for the others)."""

    kinds: tuple[FoundKind, ...]
    problems: tuple[str, ...]

    def find(self, name: str) -> FoundKind:
        """The one kind called ``name``; a clear `DiscoveryError` if none or several are."""
        matches = [k for k in self.kinds if k.name == name]
        if len(matches) == 1:
            return matches[0]
        if matches:
            places = ", ".join(f"{k.qualname} ({k.source})" for k in matches)
            raise DiscoveryError(f"kind {name!r} is defined more than once: {places}")
        known = ", ".join(sorted({k.name for k in self.kinds})) or "none"
        hint = "; ".join(self.problems)
        raise DiscoveryError(
            f"no kind named {name!r} (known kinds: {known}; name a definitions module "
            f"with --module)" + (f"; could not load: {hint}" if hint else "")
        )


def discover(
    modules: Iterable[str] = (), *, entry_point_group: str = ENTRY_POINT_GROUP
) -> Discovery:
    """The kinds of the named modules (errors raise) and of the entry points (errors collected).

    A module named by the user that cannot be imported is an error for the whole command;
    an installed plugin that cannot be loaded only becomes a problem in the report, so one
    broken package does not hide every other kind. A class found twice is listed once.
    """
    found: list[FoundKind] = []
    seen: set[type[KindClass]] = set()

    def add(classes: Iterable[type[KindClass]], source: str) -> None:
        for cls in classes:
            if cls not in seen:
                seen.add(cls)
                found.append(FoundKind(cls, source))

    for spec in modules:
        module = load_module(spec)
        classes = kinds_in(module)
        if not classes:
            raise DiscoveryError(f"module {spec!r} defines no kinds")
        add(classes, f"--module {spec}")
    problems: list[str] = []
    for ep in sorted(entry_points(group=entry_point_group), key=lambda e: e.name):
        try:
            add(_from_entry_point(ep), f"entry point {ep.name}")
        except (DefinitionError, DiscoveryError) as exc:
            problems.append(f"entry point {ep.name!r} ({ep.value}): {exc}")
    return Discovery(tuple(found), tuple(problems))
