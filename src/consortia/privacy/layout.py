"""The layout of a flat vector: the names and shapes of the arrays packed in it, in order."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from consortia.errors import ValidationError

__all__ = ["Layout"]

_MAX_LAYOUT_ARRAYS = 4096
_MAX_ELEMENTS = 2**40


@dataclass(frozen=True)
class Layout:
    """Names and shapes of the arrays packed in a flat vector, in order."""

    entries: tuple[tuple[str, tuple[int, ...]], ...]

    @classmethod
    def of(cls, arrays: Mapping[str, np.ndarray]) -> Layout:
        """The layout of ``arrays`` in sorted-name order."""
        return cls(tuple((k, tuple(int(d) for d in np.shape(arrays[k]))) for k in sorted(arrays)))

    @property
    def size(self) -> int:
        """Total number of elements."""
        return int(sum(int(np.prod(shape)) for _, shape in self.entries))

    def pack(self, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
        """Concatenate ``arrays`` (float) into one flat vector in layout order."""
        if not self.entries:
            return np.zeros(0, dtype=np.float64)
        if len(self.entries) == 1:
            name = self.entries[0][0]
            return np.ascontiguousarray(np.ravel(arrays[name]), dtype=np.float64)
        return np.concatenate([np.ravel(arrays[k]).astype(np.float64) for k, _ in self.entries])

    def split(self, vec: np.ndarray) -> dict[str, np.ndarray]:
        """Inverse of :meth:`pack`."""
        out, pos = {}, 0
        for name, shape in self.entries:
            n = int(np.prod(shape))
            out[name] = vec[pos : pos + n].reshape(shape)
            pos += n
        return out

    def to_json(self) -> list[list]:
        """JSON form: ``[[name, [dims...]], ...]``."""
        return [[name, list(shape)] for name, shape in self.entries]

    @classmethod
    def from_json(cls, obj: Any) -> Layout:
        """Inverse of :meth:`to_json`, for untrusted input.

        Raises
        ------
        ValidationError
            Not a list of ``[name, [dims...]]`` pairs, a name that is not a string of
            1-128 characters, a dimension that is not a non-negative integer, more than
            32 dimensions or 4096 arrays, or more than 2**40 elements in all.
        """
        shape_error = "a layout is a list of [name, [dims...]] pairs"
        if not isinstance(obj, list) or len(obj) > _MAX_LAYOUT_ARRAYS:
            raise ValidationError(f"{shape_error} (at most {_MAX_LAYOUT_ARRAYS})")
        entries, total = [], 0
        for pair in obj:
            if not isinstance(pair, list | tuple) or len(pair) != 2:
                raise ValidationError(shape_error)
            name, dims = pair
            if not isinstance(name, str) or not 0 < len(name) <= 128:
                raise ValidationError("a layout array name must be a string of 1-128 characters")
            if not isinstance(dims, list | tuple) or len(dims) > 32:
                raise ValidationError(f"layout array {name!r}: dims must be a list of <= 32")
            for d in dims:
                if isinstance(d, bool) or not isinstance(d, int) or not 0 <= d <= _MAX_ELEMENTS:
                    raise ValidationError(
                        f"layout array {name!r}: dimensions must be non-negative integers"
                    )
            size = math.prod(dims)
            total += size
            if total > _MAX_ELEMENTS:
                raise ValidationError(f"the layout holds more than {_MAX_ELEMENTS} elements")
            entries.append((name, tuple(int(d) for d in dims)))
        return cls(tuple(entries))
