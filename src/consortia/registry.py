"""The algorithm registry: algorithm names to classes, filled from entry points.

A study names its algorithm (``"stats.mean"``); the hub, the nodes and the simulation
find the class here.  A class joins the registry through :func:`register` (a class
decorator) when its module is imported, and the modules are found through the entry
point group ``consortia.algorithms``: consortia declares its own in its
``pyproject.toml``, and another package registers its algorithms the same way, without
editing consortia::

    [project.entry-points."consortia.algorithms"]
    mylab = "mylab.algorithms"                   # a module: its @register classes
    "mylab.special" = "mylab.special:Special"    # or one Algorithm class

Every entry point is loaded on the first lookup.  One that fails (its module is missing
or raises on import, it names something other than a module or an
:class:`~consortia.protocol.Algorithm` class, or it takes a name already registered) is
reported by an :class:`~consortia.errors.AlgorithmEntryPointWarning` naming it, and left
out: every other algorithm stays available, and looking up a name that is missing
mentions the entry points that failed.

When consortia's own entry points are not in its installed metadata (an editable install
made before they were declared, or the source tree on ``sys.path``), the registry imports
every public module of :data:`BUILTIN_PACKAGES` instead.
"""

from __future__ import annotations

import importlib
import pkgutil
import threading
import types
import warnings
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, TypeVar

from consortia.errors import AlgorithmEntryPointWarning, AlgorithmError, UnknownAlgorithmError

if TYPE_CHECKING:
    from consortia.protocol import Algorithm

__all__ = [
    "BUILTIN_PACKAGES",
    "ENTRY_POINT_GROUP",
    "failed_entry_points",
    "get_algorithm",
    "register",
    "registered_algorithms",
    "reload_entry_points",
]

ENTRY_POINT_GROUP = "consortia.algorithms"
"""The entry point group through which packages register algorithm modules or classes."""

BUILTIN_PACKAGES = (
    "consortia.omics",
    "consortia.stats",
    "consortia.survival",
    "consortia.testing",
)
"""Consortia's packages of algorithms: the fallback when its entry points are not visible."""

_OWN_DISTRIBUTION = "consortia"

_REGISTRY: dict[str, type[Algorithm]] = {}
_FAILED: dict[str, str] = {}  # entry point label -> reason
_LOCK = threading.RLock()
_loaded = False
_loading = False

A = TypeVar("A", bound="type[Algorithm]")


def register(cls: A) -> A:
    """Class decorator: register an algorithm under its ``name``.

    Raises
    ------
    AlgorithmError
        ``cls`` has no ``name``, or another class is registered under it.
    """
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise AlgorithmError(f"{cls.__name__} must define a class attribute 'name'")
    with _LOCK:
        existing = _REGISTRY.get(name)
        # the same class re-imported (a module reloaded) may register again; a class of the
        # same name from another module (a package taking over a built-in name) may not
        if existing is not None and (existing.__module__, existing.__qualname__) != (
            cls.__module__,
            cls.__qualname__,
        ):
            raise AlgorithmError(f"algorithm name {name!r} is already registered by {existing}")
        _REGISTRY[name] = cls
    return cls


def _distribution(ep: EntryPoint) -> str | None:
    dist = getattr(ep, "dist", None)
    try:
        name = None if dist is None else dist.metadata["Name"]
    except Exception:  # unreadable metadata: an entry point of no known distribution
        return None
    return None if not name else str(name).lower().replace("_", "-")


def _label(ep: EntryPoint) -> str:
    dist = _distribution(ep)
    return f"{ep.name} = {ep.value}" + (f" (distribution {dist})" if dist else "")


def _load_entry_point(ep: EntryPoint) -> bool:
    """Import one entry point's module or register its class; warn and return ``False``
    if it fails."""
    from consortia.protocol import Algorithm

    try:
        target = ep.load()
        if isinstance(target, type):
            if not issubclass(target, Algorithm):
                raise AlgorithmError(f"{target.__qualname__} is not an Algorithm class")
            register(target)
        elif not isinstance(target, types.ModuleType):
            raise AlgorithmError("it names neither a module nor an Algorithm class")
    except Exception as exc:  # any failure of third-party code: reported, never fatal
        reason = f"{type(exc).__name__}: {exc}"
        _FAILED[_label(ep)] = reason
        warnings.warn(
            f"algorithm entry point {_label(ep)!r} of group {ENTRY_POINT_GROUP!r} failed to "
            f"load and its algorithms are unavailable: {reason}",
            AlgorithmEntryPointWarning,
            stacklevel=4,
        )
        return False
    return True


def _load_builtin_packages() -> None:
    for pkg_name in BUILTIN_PACKAGES:
        pkg = importlib.import_module(pkg_name)
        # every public submodule registers its algorithms on import
        for info in pkgutil.walk_packages(pkg.__path__, prefix=f"{pkg_name}."):
            if info.name.rsplit(".", 1)[-1].startswith("_"):
                continue
            try:
                importlib.import_module(info.name)
            except Exception as exc:
                raise AlgorithmError(
                    f"built-in algorithm module {info.name!r} failed to import: {exc}"
                ) from exc


def _ensure_loaded() -> None:
    global _loaded, _loading
    if _loaded:
        return
    with _LOCK:
        if _loaded or _loading:  # _loading: a module looking a name up while it is imported
            return
        _loading = True
        try:
            eps = sorted(
                entry_points(group=ENTRY_POINT_GROUP),
                key=lambda ep: (_distribution(ep) or "", ep.name),
            )
            own = [ep for ep in eps if _distribution(ep) == _OWN_DISTRIBUTION]
            complete = bool(own) and all([_load_entry_point(ep) for ep in own])
            if not complete:  # no (or stale) metadata of our own: the source tree's modules
                _load_builtin_packages()
            for ep in eps:
                if _distribution(ep) != _OWN_DISTRIBUTION:
                    _load_entry_point(ep)
            _loaded = True
        finally:
            _loading = False


def reload_entry_points() -> None:
    """Load the entry points again (after installing a package in a running process).

    Classes already registered stay registered; the failures reported are those of
    this load.
    """
    global _loaded
    with _LOCK:
        _loaded = False
        _FAILED.clear()
        _ensure_loaded()


def failed_entry_points() -> dict[str, str]:
    """The entry points that failed to load: ``"name = value (distribution d)"`` -> reason."""
    _ensure_loaded()
    return dict(_FAILED)


def registered_algorithms() -> dict[str, type[Algorithm]]:
    """Return a copy of the registry: algorithm name -> class."""
    _ensure_loaded()
    return dict(sorted(_REGISTRY.items()))


def get_algorithm(name: str) -> type[Algorithm]:
    """Return the algorithm class registered under ``name``.

    Raises
    ------
    UnknownAlgorithmError
        No class is registered under ``name``; the message lists the known names and
        any entry point that failed to load.
    """
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        failed = ""
        if _FAILED:
            failed = "; entry points that failed to load: " + ", ".join(sorted(_FAILED))
        raise UnknownAlgorithmError(
            f"no algorithm is registered under {name!r} (known: {known}){failed}"
        ) from None
