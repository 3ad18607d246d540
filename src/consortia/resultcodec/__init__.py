"""Study results as one binary frame, without pickle.

A study's result (a frozen dataclass of numpy arrays, numbers, strings, tuples,
dicts, nested dataclasses and, for the Cox model, pandas tables) is encoded as a
:mod:`consortia.wire` message, so it travels with the wire's media type and size
checks.  The message's first array, ``result``, holds a UTF-8 JSON tree (as
``uint8``) describing the value; every numpy array and numpy scalar in it is
replaced by a reference to one of the arrays that follow, named ``"0"``, ``"1"``,
... in the order the encoder met them.

The tree is ``{"format": "consortia.result", "version": 1, "value": node}`` where
a node is one of::

    null, true, false, a string, an integer, a finite float   (themselves)
    {"$": "float", "value": "nan" | "inf" | "-inf"}
    {"$": "tuple" | "list" | "set" | "frozenset", "items": [node, ...]}
    {"$": "dict" | "mappingproxy", "items": [[key node, value node], ...]}
    {"$": "array" | "scalar", "ref": "<array name>"}
    {"$": "dataclass", "type": "module:qualname", "fields": [[name, node], ...]}
    {"$": "index", "values": array node, "name": node}
    {"$": "index", "labels": [node, ...], "dtype": "object", "name": node}
    {"$": "range_index", "start": int, "stop": int, "step": int, "name": node}
    {"$": "series", "index": index node, "data": array node, "name": node}
    {"$": "dataframe", "index": index node, "columns": index node, "data": [array node, ...]}

Encoding is deterministic: the same result always gives the same bytes (dict
items keep their order, set items are sorted by their encoding).  Decoding runs
no code of the frame's choosing: a dataclass type is looked up only in a module
under ``consortia.`` or in the module of a registered algorithm class
(:func:`consortia.protocol.registered_algorithms`), must be a dataclass, and is
rebuilt without calling its ``__init__``: every field (``init=False`` ones
included) is set with :func:`object.__setattr__` on ``cls.__new__(cls)``, so the
decoded object equals the original.  Anything else raises
:class:`~consortia.errors.ResultCodecError` naming where in the result it was.

The package's modules: :mod:`~consortia.resultcodec._format` (limits, type references),
:mod:`~consortia.resultcodec._encode` and :mod:`~consortia.resultcodec._decode`.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

from consortia.errors import ProtocolError, ResultCodecError
from consortia.resultcodec._decode import _Decoder, _reject_constant
from consortia.resultcodec._encode import _Encoder
from consortia.resultcodec._format import (
    _TREE,
    FORMAT,
    MAX_RESULT_BYTES,
    MAX_TREE_BYTES,
    VERSION,
)
from consortia.resultcodec._format import MAX_DEPTH as MAX_DEPTH
from consortia.wire import pack_parts, unpack_arrays

__all__ = [
    "FORMAT",
    "MAX_RESULT_BYTES",
    "VERSION",
    "decode_result",
    "encode_result",
    "encode_result_parts",
    "result_digest",
]


def result_digest(frame: bytes | bytearray | memoryview) -> str:
    """The sha256 hex digest of an encoded result (what the audit log records)."""
    return hashlib.sha256(frame).hexdigest()


def encode_result(obj: Any) -> bytes:
    """Encode a study result as one binary frame (a :mod:`consortia.wire` message).

    Parameters
    ----------
    obj
        The result: a dataclass (from ``consortia`` or a registered algorithm's
        module), or ``None``, bool, int, float, str, tuple, list, set, frozenset,
        dict, numpy arrays and scalars of the wire's dtypes, pandas ``DataFrame``,
        ``Series`` and ``Index`` of such, nested at most :data:`MAX_DEPTH` deep.

    Returns
    -------
    bytes
        The frame; the same result always gives the same bytes.

    Raises
    ------
    ResultCodecError
        A value cannot be stored; the message names its path (``result.plan.sigma``).
    """
    return b"".join(encode_result_parts(obj))


def encode_result_parts(obj: Any) -> list[bytes | memoryview]:
    """:func:`encode_result` as parts, without joining them into one payload-sized copy.

    The first part is the frame's header; each array follows as a read-only view of
    its own memory (see :func:`consortia.wire.pack_parts`).  Written one after the
    other, the parts are exactly the bytes :func:`encode_result` returns.

    Raises
    ------
    ResultCodecError
        As for :func:`encode_result`.
    """
    enc = _Encoder()
    value = enc.node(obj, "result", 0)
    tree = {"format": FORMAT, "version": VERSION, "value": value}
    raw = json.dumps(tree, separators=(",", ":"), allow_nan=False).encode("ascii")
    if len(raw) > MAX_TREE_BYTES:
        raise ResultCodecError(f"the result's tree exceeds {MAX_TREE_BYTES} bytes")
    try:
        return pack_parts({_TREE: np.frombuffer(raw, dtype=np.uint8), **enc.arrays})
    except ProtocolError as exc:  # pragma: no cover - dtypes are checked above
        raise ResultCodecError(f"the result cannot be packed: {exc}") from None


def decode_result(
    data: bytes | bytearray | memoryview, *, max_bytes: int = MAX_RESULT_BYTES
) -> Any:
    """Decode a frame made by :func:`encode_result`.

    Parameters
    ----------
    data
        The frame.
    max_bytes
        Frames longer than this are refused before anything is parsed.

    Returns
    -------
    Any
        The result, equal to the encoded one; its arrays are writable copies.

    Raises
    ------
    ResultCodecError
        Not a result frame (truncated, oversized, bad tree), or a type outside
        ``consortia`` and the registered algorithms' modules, or not a dataclass.
    """
    try:
        arrays = unpack_arrays(data, max_bytes=max_bytes)
    except ProtocolError as exc:
        raise ResultCodecError(f"not a result frame: {exc}") from None
    names = list(arrays)
    if not names or names[0] != _TREE:
        raise ResultCodecError(f"not a result frame: the first array is not {_TREE!r}")
    raw = arrays.pop(_TREE)
    if raw.dtype != np.uint8 or raw.ndim != 1 or raw.size > MAX_TREE_BYTES:
        raise ResultCodecError(f"a result tree is a uint8 vector of at most {MAX_TREE_BYTES} bytes")
    if list(arrays) != [str(i) for i in range(len(arrays))]:
        raise ResultCodecError("a result frame's arrays are named '0', '1', ... in order")
    try:
        tree = json.loads(raw.tobytes().decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError):
        raise ResultCodecError("a result tree is not valid UTF-8 JSON") from None
    except RecursionError:
        raise ResultCodecError("a result tree is nested too deeply") from None
    if (
        not isinstance(tree, dict)
        or set(tree) != {"format", "version", "value"}
        or tree["format"] != FORMAT
    ):
        raise ResultCodecError(f"a result tree is {{'format': {FORMAT!r}, 'version', 'value'}}")
    if tree["version"] != VERSION:
        raise ResultCodecError(
            f"result format version {str(tree['version'])[:20]} is not supported "
            f"(this consortia reads version {VERSION})"
        )
    dec = _Decoder(arrays)
    value = dec.node(tree["value"], "result", 0)
    unused = sorted(set(arrays) - dec.used, key=int)
    if unused:
        raise ResultCodecError(f"a result frame holds arrays no node refers to: {unused[:5]}")
    return value
