"""Checks of untrusted values the hub receives before it stores or computes anything.

Each check raises :class:`~consortia.hub.queries.HubError` with a 4xx status and a
message that names the offending field (never its value).
"""

from __future__ import annotations

import json
import math
from typing import Any

from consortia.hub.errors import HubError

__all__ = [
    "MAX_INDEX",
    "MAX_PARAM_DEPTH",
    "MAX_PARAM_NAME",
    "check_index",
    "check_params",
    "to_json",
]

MAX_PARAM_DEPTH = 16
"""Deepest nesting of lists and objects accepted in study parameters."""

MAX_PARAM_NAME = 128
"""Longest accepted parameter name (object key)."""

MAX_INDEX = 2**31 - 1
"""Largest round index or attempt number (they are 32-bit integers in the database)."""


def check_params(params: Any, where: str = "params") -> None:
    """Refuse non-finite numbers, overlong names and deep nesting in study parameters.

    Parameters
    ----------
    params
        The parsed JSON parameters of an algorithm.
    where
        The path of ``params`` in messages (``params.groups[1]``...).

    Raises
    ------
    HubError
        422, naming the parameter (path) at fault.
    """
    stack: list[tuple[Any, str, int]] = [(params, where, 0)]
    while stack:
        value, path, depth = stack.pop()
        if depth > MAX_PARAM_DEPTH:
            raise HubError(422, f"{path} is nested deeper than {MAX_PARAM_DEPTH} levels")
        if isinstance(value, float) and not math.isfinite(value):
            raise HubError(422, f"algorithm parameter {path} must be a finite number")
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**63:
            raise HubError(422, f"algorithm parameter {path} is out of the 64-bit range")
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str) or len(key) > MAX_PARAM_NAME:
                    raise HubError(
                        422,
                        f"a parameter name in {path} is longer than {MAX_PARAM_NAME} characters",
                    )
                stack.append((item, f"{path}.{key}", depth + 1))
        elif isinstance(value, list | tuple):
            for i, item in enumerate(value):
                stack.append((item, f"{path}[{i}]", depth + 1))


def check_index(value: int, name: str) -> int:
    """Refuse a round index or attempt outside ``[0, MAX_INDEX]`` (HTTP 422 naming it)."""
    if not 0 <= value <= MAX_INDEX:
        raise HubError(422, f"{name} must be an integer in [0, {MAX_INDEX}]")
    return value


def to_json(value: Any, what: str) -> str:
    """Strict JSON (no NaN or infinity) of ``value``; HubError 422 naming ``what`` if impossible."""
    try:
        return json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError):
        raise HubError(422, f"{what} cannot be written as strict JSON") from None
