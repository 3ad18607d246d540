"""The result frame's format: its limits and the dataclass types a frame may name.

A dataclass type is written ``module:qualname`` and looked up only in a module under
``consortia.`` or in the module of a registered algorithm class; see
:mod:`consortia.resultcodec` for the grammar.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import re
import sys
from typing import Any

from consortia.errors import ResultCodecError

__all__ = ["FORMAT", "MAX_DEPTH", "MAX_RESULT_BYTES", "MAX_TREE_BYTES", "VERSION"]

FORMAT = "consortia.result"
"""The ``format`` of a result frame's tree."""

VERSION = 1
"""The ``version`` of the tree grammar :mod:`consortia.resultcodec` writes and reads."""

MAX_RESULT_BYTES = 2**33
"""Default upper bound on the size of a frame that
:func:`~consortia.resultcodec.decode_result` accepts (8 GiB)."""

MAX_TREE_BYTES = 64 * 2**20
"""Upper bound on the size of a frame's JSON tree."""

MAX_DEPTH = 64
"""Upper bound on the nesting of a result (containers and dataclasses)."""

_TREE = "result"
_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_NONFINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
_LABEL_DTYPES = frozenset({"object"})


_NEVER = frozenset({"builtins", "__main__", "__mp_main__"})


def _allowed_module(module: str) -> bool:
    """Whether result types may come from ``module``."""
    if module == "consortia" or module.startswith("consortia."):
        return not any(part.startswith("__") for part in module.split("."))
    from consortia.protocol import registered_algorithms

    if module in _NEVER:  # an algorithm defined by exec() or in a script names these
        return False
    return module in {cls.__module__ for cls in registered_algorithms().values()}


def _resolve(ref: str, path: str) -> type:
    """The dataclass named ``module:qualname``, imported only from an allowed module."""
    module, sep, qualname = ref.partition(":")
    if not sep or _DOTTED.fullmatch(module) is None or _DOTTED.fullmatch(qualname) is None:
        raise ResultCodecError(f"bad type reference {ref[:120]!r}", path=path)
    if not _allowed_module(module):
        raise ResultCodecError(
            f"type {ref[:120]!r} is outside consortia and the registered algorithms' modules",
            path=path,
        )
    try:
        obj: Any = sys.modules.get(module) or importlib.import_module(module)
        for part in qualname.split("."):
            if part.startswith("__"):
                raise AttributeError(part)
            obj = getattr(obj, part)
    except (ImportError, AttributeError):
        raise ResultCodecError(f"type {ref[:120]!r} does not exist here", path=path) from None
    if not isinstance(obj, type) or not dataclasses.is_dataclass(obj):
        raise ResultCodecError(f"type {ref[:120]!r} is not a dataclass", path=path)
    if obj.__new__ is not object.__new__:
        raise ResultCodecError(f"type {ref[:120]!r} defines __new__", path=path)
    return obj


def _type_ref(cls: type, path: str) -> str:
    ref = f"{cls.__module__}:{cls.__qualname__}"
    if _resolve(ref, path) is not cls:
        raise ResultCodecError(f"type {ref!r} cannot be found again by its name", path=path)
    return ref
