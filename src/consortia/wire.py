"""A safe binary container for named numeric arrays (never pickle).

Layout of a packed message (all integers little-endian)::

    offset  size  content
    0       8     magic  b"CNSTNS01"
    8       8     H: length of the JSON header in bytes (uint64)
    16      H     JSON header (UTF-8), padded with spaces so that 16 + H is a multiple of 8
    16 + H  ...   the raw array buffers, C order, little-endian, one after the other

The header is a JSON object ``{"arrays": [{"name", "dtype", "shape", "offset", "nbytes"}, ...]}``
where ``dtype`` is a numpy dtype name from :data:`SUPPORTED_DTYPES`, ``shape`` a list of
non-negative integers, and ``offset`` counts from the start of the data section.  Buffers are
contiguous, in header order, with no gap and no trailing byte.  The data section starts on an
8-byte boundary, so 8-byte arrays are aligned whenever the arrays before them are 8-byte ones.

:func:`unpack_arrays` validates everything before touching the buffers and returns zero-copy,
read-only views into ``data`` (pass ``copy=True`` for writable, independent arrays).  Any
malformed input raises :class:`~consortia.errors.ProtocolError`.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from consortia._limits import DEFAULT_MAX_BYTES
from consortia.errors import ProtocolError

__all__ = [
    "CONTENT_TYPE",
    "DEFAULT_MAX_BYTES",
    "MAGIC",
    "NAME_PATTERN",
    "SUPPORTED_DTYPES",
    "check_layout",
    "pack_arrays",
    "pack_parts",
    "unpack_arrays",
]

MAGIC = b"CNSTNS01"
"""The eight bytes every packed message starts with."""

CONTENT_TYPE = "application/vnd.consortia.arrays"
"""The HTTP media type of a packed message."""


SUPPORTED_DTYPES: frozenset[str] = frozenset(
    {
        "float64",
        "float32",
        "int64",
        "int32",
        "int16",
        "int8",
        "uint64",
        "uint32",
        "uint16",
        "uint8",
        "bool",
    }
)
"""Numpy dtype names the format can carry (fixed-size numbers only: no object, no string)."""

NAME_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:/\-]{0,127}")
"""Array names: 1-128 characters, letters, digits and ``_ . : / -``, not starting with a symbol."""

_PREFIX = struct.Struct("<8sQ")
_MAX_HEADER_BYTES = 4 * 2**20
_MAX_NDIM = 32
_HEADER_KEYS = frozenset({"name", "dtype", "shape", "offset", "nbytes"})


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or NAME_PATTERN.fullmatch(name) is None:
        shown = repr(name)[:60]
        raise ProtocolError(
            f"bad array name {shown}: names are 1-128 characters of letters, digits and "
            "'_.:/-', starting with a letter, digit or '_'"
        )
    return name


def pack_arrays(arrays: Mapping[str, np.ndarray]) -> bytes:
    """Pack named arrays into one self-describing binary message.

    Parameters
    ----------
    arrays
        Mapping from array name (see :data:`NAME_PATTERN`) to an array (or anything
        ``np.asarray`` accepts) of a dtype in :data:`SUPPORTED_DTYPES`.  The insertion order
        is kept.

    Returns
    -------
    bytes
        The message: magic, JSON header, raw little-endian buffers.  The only copy made is
        the one into the returned ``bytes`` (see :func:`pack_parts` for none).

    Raises
    ------
    ProtocolError
        A name is invalid or an array has an unsupported dtype (object, string, complex...).
    """
    return b"".join(pack_parts(arrays))


def pack_parts(arrays: Mapping[str, np.ndarray]) -> list[bytes | memoryview]:
    """The message of :func:`pack_arrays` as parts, without joining them.

    The first part is the prefix and JSON header (``bytes``); each non-empty array
    follows as a read-only byte view of its own buffer (a native little-endian,
    C-contiguous array is not copied).  Writing the parts one after the other (for
    example to a socket) writes exactly the bytes :func:`pack_arrays` returns.  The
    views share the arrays' memory: do not change the arrays until the parts are sent.

    Parameters
    ----------
    arrays
        As for :func:`pack_arrays`.

    Returns
    -------
    list of bytes or memoryview
        The header, then one view per non-empty array.

    Raises
    ------
    ProtocolError
        As for :func:`pack_arrays`.
    """
    if not isinstance(arrays, Mapping):
        raise ProtocolError(f"pack_arrays expects a mapping of name to array, got {type(arrays)}")
    entries: list[dict[str, Any]] = []
    buffers: list[bytes | memoryview] = []
    offset = 0
    for name, value in arrays.items():
        _check_name(name)
        array = np.asarray(value)
        dtype_name = array.dtype.name
        if dtype_name not in SUPPORTED_DTYPES:
            raise ProtocolError(
                f"array {name!r} has dtype {array.dtype.str!r} which cannot be sent; "
                f"supported dtypes: {', '.join(sorted(SUPPORTED_DTYPES))}"
            )
        little = array.dtype.newbyteorder("<")
        array = np.asarray(array, dtype=little, order="C")
        nbytes = array.nbytes
        entries.append(
            {
                "name": name,
                "dtype": dtype_name,
                "shape": list(array.shape),
                "offset": offset,
                "nbytes": nbytes,
            }
        )
        if nbytes:
            buffers.append(memoryview(array.reshape(-1).data).cast("B").toreadonly())
        offset += nbytes
    header = json.dumps({"arrays": entries}, separators=(",", ":")).encode("utf-8")
    header += b" " * (-(_PREFIX.size + len(header)) % 8)
    return [_PREFIX.pack(MAGIC, len(header)) + header, *buffers]


def _parse_header(raw: bytes) -> list[dict[str, Any]]:
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError("tensor header is not valid UTF-8 JSON") from exc
    except RecursionError:
        raise ProtocolError("tensor header is nested too deeply") from None
    if not isinstance(header, dict) or set(header) != {"arrays"}:
        raise ProtocolError("tensor header must be a JSON object with the single key 'arrays'")
    entries = header["arrays"]
    if not isinstance(entries, list):
        raise ProtocolError("tensor header 'arrays' must be a list")
    for entry in entries:
        if not isinstance(entry, dict) or set(entry) != _HEADER_KEYS:
            raise ProtocolError(
                "each tensor header entry must be an object with exactly the keys "
                f"{sorted(_HEADER_KEYS)}"
            )
    return entries


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def unpack_arrays(
    data: bytes | bytearray | memoryview,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    allowed_dtypes: Iterable[str] = SUPPORTED_DTYPES,
    copy: bool = False,
) -> dict[str, np.ndarray]:
    """Validate and unpack a message made by :func:`pack_arrays`.

    Parameters
    ----------
    data
        The message.
    max_bytes
        Messages longer than this are refused before anything is parsed.
    allowed_dtypes
        Dtype names accepted (a subset of :data:`SUPPORTED_DTYPES`).
    copy
        ``False`` (default): return read-only views into ``data`` (zero copy; writable only if
        ``data`` is a writable buffer).  ``True``: return independent, writable arrays.

    Returns
    -------
    dict of str to numpy.ndarray
        The arrays in message order, in native byte order.

    Raises
    ------
    ProtocolError
        Not a tensor message (bad magic), truncated, oversized, bad header, disallowed dtype,
        bad or duplicate name, shape/size mismatch, overlapping or trailing bytes.
    """
    try:
        view = memoryview(data).cast("B")
    except TypeError as exc:
        raise ProtocolError(f"tensor message must be bytes, got {type(data).__name__}") from exc
    size = view.nbytes
    if size > max_bytes:
        raise ProtocolError(f"tensor message is oversized: {size} bytes > max_bytes={max_bytes}")
    if size < _PREFIX.size or bytes(view[:8]) != MAGIC:
        raise ProtocolError("not a tensor message: missing the consortia magic bytes")
    _, header_len = _PREFIX.unpack_from(view, 0)
    if header_len > _MAX_HEADER_BYTES:
        raise ProtocolError(f"tensor header too large: {header_len} bytes")
    data_start = _PREFIX.size + header_len
    if data_start > size:
        raise ProtocolError(
            f"truncated tensor message: header needs {data_start} bytes, message has {size}"
        )
    entries = _parse_header(bytes(view[_PREFIX.size : data_start]))
    allowed = frozenset(allowed_dtypes)
    data_len = size - data_start
    expected_offset = 0
    names: set[str] = set()
    out: dict[str, np.ndarray] = {}
    for entry in entries:
        name = _check_name(entry["name"])
        if name in names:
            raise ProtocolError(f"duplicate array name {name!r} in tensor message")
        names.add(name)
        dtype_name = entry["dtype"]
        if not isinstance(dtype_name, str) or dtype_name not in SUPPORTED_DTYPES:
            raise ProtocolError(
                f"array {name!r}: dtype {str(dtype_name)[:40]!r} is not a supported dtype "
                "(object and other non-numeric dtypes are refused)"
            )
        if dtype_name not in allowed:
            raise ProtocolError(f"array {name!r}: dtype {dtype_name!r} is not allowed here")
        shape = entry["shape"]
        if (
            not isinstance(shape, list)
            or len(shape) > _MAX_NDIM
            or not all(_is_count(d) for d in shape)
        ):
            raise ProtocolError(f"array {name!r}: shape must be a list of non-negative integers")
        offset, nbytes = entry["offset"], entry["nbytes"]
        if not (_is_count(offset) and _is_count(nbytes)):
            raise ProtocolError(f"array {name!r}: offset and nbytes must be non-negative integers")
        dtype = np.dtype(dtype_name).newbyteorder("<")
        count = 1
        for dim in shape:
            count *= dim
        if count * dtype.itemsize != nbytes:
            raise ProtocolError(
                f"array {name!r}: shape/size mismatch: shape {tuple(shape)} of {dtype_name} "
                f"needs {count * dtype.itemsize} bytes, header says {nbytes}"
            )
        if offset != expected_offset:
            raise ProtocolError(
                f"array {name!r}: offset {offset} does not follow the previous array "
                f"(expected {expected_offset})"
            )
        if offset + nbytes > data_len:
            raise ProtocolError(
                f"truncated tensor message: array {name!r} needs bytes up to {offset + nbytes}, "
                f"data section has {data_len}"
            )
        expected_offset = offset + nbytes
        array = np.frombuffer(view, dtype=dtype, count=count, offset=data_start + offset)
        if dtype_name == "bool" and count and array.view(np.uint8).max() > 1:
            raise ProtocolError(f"array {name!r}: bool array holds bytes other than 0 and 1")
        array = array.reshape(tuple(shape))
        if not dtype.isnative:
            array = array.astype(dtype.newbyteorder("="))
        out[name] = array.copy() if copy else array
    if expected_offset != data_len:
        raise ProtocolError(
            f"tensor message has {data_len - expected_offset} trailing bytes after the last array"
        )
    return out


def check_layout(
    arrays: Mapping[str, np.ndarray],
    expected: Mapping[str, tuple[int, ...]],
    *,
    dtype: str | None = None,
) -> None:
    """Check that unpacked ``arrays`` have exactly the expected names and shapes.

    Parameters
    ----------
    arrays
        Arrays from :func:`unpack_arrays`.
    expected
        Name to shape of every array that must be present (and no other).
    dtype
        If given, the dtype name every array must have (for example ``"uint64"`` for masked
        contributions).

    Raises
    ------
    ProtocolError
        Missing or unexpected names, wrong shape or wrong dtype; the message names the array.
    """
    missing = [name for name in expected if name not in arrays]
    extra = [name for name in arrays if name not in expected]
    if missing or extra:
        raise ProtocolError(
            f"unexpected array layout: missing {sorted(missing)}, unexpected {sorted(extra)}"
        )
    for name, shape in expected.items():
        array = arrays[name]
        if tuple(array.shape) != tuple(shape):
            raise ProtocolError(
                f"array {name!r} has shape {tuple(array.shape)}, expected {tuple(shape)}"
            )
        if dtype is not None and array.dtype.name != dtype:
            raise ProtocolError(f"array {name!r} has dtype {array.dtype.name}, expected {dtype}")
