"""Finding kinds: in installed packages (the ``fsm.kinds`` entry points) and in named modules.

A kind is recognised by its contract, not by its base class: a class with a ``name`` string,
a ``graph()`` classmethod returning a `fsm.diagram.KindGraph`, and a ``__fsm_codec__``. That
keeps discovery independent of how kinds are declared.

A module's kinds are the ones it defines, plus those it re-exports on purpose in
``__all__``; a kind merely imported (say to subclass it) is not counted twice under the
importing module. Importing a definitions module must have no side effects besides defining
its kinds, so importing it here is safe; a `fsm.DefinitionError` raised by that import is
passed through untouched, because its message already names the kind, the state and the fix.

Loading user code never lets a file shadow an installed module: a ``.py`` file is imported
under a private name, and the folders searched for it are appended to ``sys.path``, never
put in front (see `load_module`).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol, TypeGuard

import attrs

from fsm import plugins
from fsm.diagram.model import KindGraph
from fsm.errors import DefinitionError, FsmError
from fsm.registry import Registry

USER_MODULE_PREFIX = "_fsm_user_"
"""Module names of ``.py`` files loaded by path: ``_fsm_user_<hash of the path>_<stem>``."""


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
        """``module:Qualname`` (``path.py:Qualname`` for a file), as ``fsm validate`` takes it."""
        return f"{module_label(self.cls.__module__)}:{self.cls.__qualname__}"

    @property
    def location(self) -> str:
        """``path:line`` of the class statement, or the module name if that is unknown."""
        try:
            path = inspect.getsourcefile(self.cls)
            _, line = inspect.getsourcelines(self.cls)
        except (OSError, TypeError):
            return module_label(self.cls.__module__)
        if path is None:
            return module_label(self.cls.__module__)
        return f"{_relative(Path(path))}:{line}"


def module_label(name: str) -> str:
    """How to show module ``name``: its path (relative if below the current folder) for a
    file loaded by `load_module`, else its dotted name."""
    path = getattr(sys.modules.get(name), "__file__", None)
    if name.startswith(USER_MODULE_PREFIX) and path:
        return _relative(Path(path))
    return name


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
    """Hand-written `fsm.Action` classes ``module`` defines (those with their own ``name``).

    Workers drive these beside the declarative kinds; they have no table, so no diagram.
    """
    from fsm.protocol import Action

    return [
        obj
        for obj in vars(module).values()
        if isinstance(obj, type)
        and issubclass(obj, Action)
        and obj.__module__ == module.__name__
        and isinstance(vars(obj).get("name"), str)
    ]


def load_module(spec: str) -> ModuleType:
    """Import a module named by a dotted name or by the path of a ``.py`` file.

    A file is imported as ``_fsm_user_<hash>_<stem>`` (`USER_MODULE_PREFIX`), registered in
    ``sys.modules`` so attrs, cattrs and dataclasses resolve its annotations, under a name
    that cannot replace any other module (``kinds/json.py`` is not ``json``). Its folder is
    appended to ``sys.path``, so it can import its siblings, but none of them can shadow an
    installed or standard module. A dotted name is looked up on ``sys.path``; only if its
    top-level package is found nowhere is the current folder appended (last) to find it.
    `DefinitionError` passes through; any other import failure becomes a `DiscoveryError`
    naming the module.
    """
    try:
        if spec.endswith(".py") or "/" in spec or "\\" in spec:
            return _load_file(Path(spec))
        if importlib.util.find_spec(spec.partition(".")[0]) is None:
            _append_path(os.getcwd())
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


def _append_path(folder: str) -> None:
    """Make ``folder`` importable without letting it shadow anything: search it last."""
    if folder not in sys.path:
        sys.path.append(folder)


def _load_file(path: Path) -> ModuleType:
    if not path.is_file():
        raise DiscoveryError(f"no such file: {path}")
    resolved = path.resolve()
    digest = hashlib.sha256(str(resolved).encode()).hexdigest()[:12]
    stem = re.sub(r"\W", "_", resolved.stem)
    name = f"{USER_MODULE_PREFIX}{digest}_{stem}"
    already = sys.modules.get(name)
    if already is not None:
        return already
    _append_path(str(resolved.parent))
    module_spec = importlib.util.spec_from_file_location(name, resolved)
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


def _from_plugin(plugin: plugins.Plugin) -> list[type[KindClass]]:
    if isinstance(plugin.error, DefinitionError):
        raise plugin.error
    if plugin.error is not None:  # a broken plugin is reported by name, with its error
        raise DiscoveryError(f"cannot load: {type(plugin.error).__name__}: {plugin.error}")
    if is_kind(plugin.loaded):
        return [plugin.loaded]
    if isinstance(plugin.loaded, ModuleType):
        return kinds_in(plugin.loaded)
    raise DiscoveryError(f"loads {plugin.loaded!r}, which is neither a kind nor a module")


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


def discover(modules: Iterable[str] = ()) -> Discovery:
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
    for plugin in plugins.load_group(plugins.KINDS):
        try:
            add(_from_plugin(plugin), f"entry point {plugin.name}")
        except (DefinitionError, DiscoveryError) as exc:
            problems.append(f"entry point {plugin.name!r} ({plugin.value}): {exc}")
    return Discovery(tuple(found), tuple(problems))


def drivable(modules: Iterable[str] = ()) -> list[type]:
    """What a worker drives: the kinds and `fsm.Action` classes of ``modules`` when any are
    named, else the kinds of the installed entry points.

    Naming modules narrows the worker to them: one worker pool per team, and a worker for
    your own kinds does not also take on (and need the services of) every kind some
    installed package declares. Unlike `discover`, an entry point that cannot be loaded is
    an error: a worker without that kind could not drive its actions. So is a class the
    executor cannot register (not storable, or a kind name used twice).
    """
    classes: list[type] = []
    if not modules:
        found = discover(())
        if found.problems:
            raise DiscoveryError("; ".join(found.problems))
        classes = [k.cls for k in found.kinds]
    for spec in modules:
        module = load_module(spec)
        own = [*kinds_in(module), *actions_in(module)]
        if not own:
            raise DiscoveryError(f"module {spec!r} defines no kinds and no fsm.Action classes")
        classes += [cls for cls in own if cls not in classes]
    try:
        Registry(classes)  # what the worker's executor will do: refuse now, in one line
    except (TypeError, ValueError) as exc:
        raise DiscoveryError(f"cannot drive these kinds: {exc}") from None
    return classes


def split_target(target: str) -> tuple[str, str | None]:
    """``MODULE[:KIND]`` -> (module, kind); a colon is a separator only before an identifier."""
    head, sep, tail = target.rpartition(":")
    if sep and head and tail.isidentifier():
        return head, tail
    return target, None


def select_kinds(module: ModuleType, spec: str, wanted: str | None) -> list[type[KindClass]]:
    """The kinds of ``module`` (loaded from ``spec``), or only the one ``wanted`` (by kind
    name or class name); a `DiscoveryError` naming the module's kinds if there is none."""
    classes = kinds_in(module)
    if wanted is not None:
        chosen = [c for c in classes if wanted in (c.name, c.__name__)]
        if not chosen:
            names = ", ".join(c.name for c in classes) or "none"
            raise DiscoveryError(f"module {spec!r} has no kind {wanted!r} (its kinds: {names})")
        return chosen
    if not classes:
        raise DiscoveryError(f"module {spec!r} defines no kinds")
    return classes
