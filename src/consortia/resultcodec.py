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
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import math
import re
import sys
from types import MappingProxyType
from typing import Any

import numpy as np

from consortia.errors import ProtocolError, ResultCodecError
from consortia.wire import SUPPORTED_DTYPES, pack_arrays, unpack_arrays

__all__ = [
    "FORMAT",
    "MAX_RESULT_BYTES",
    "VERSION",
    "decode_result",
    "encode_result",
    "result_digest",
]

FORMAT = "consortia.result"
"""The ``format`` of a result frame's tree."""

VERSION = 1
"""The ``version`` of the tree grammar this module writes and reads."""

MAX_RESULT_BYTES = 2**33
"""Default upper bound on the size of a frame accepted by :func:`decode_result` (8 GiB)."""

MAX_TREE_BYTES = 64 * 2**20
"""Upper bound on the size of a frame's JSON tree."""

MAX_DEPTH = 64
"""Upper bound on the nesting of a result (containers and dataclasses)."""

_TREE = "result"
_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_NONFINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
_LABEL_DTYPES = frozenset({"object"})


def result_digest(frame: bytes | bytearray | memoryview) -> str:
    """The sha256 hex digest of an encoded result (what the audit log records)."""
    return hashlib.sha256(frame).hexdigest()


# --------------------------------------------------------------------------- types


def _allowed_module(module: str) -> bool:
    """Whether result types may come from ``module``."""
    if module == "consortia" or module.startswith("consortia."):
        return not any(part.startswith("__") for part in module.split("."))
    from consortia.protocol import registered_algorithms

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


# --------------------------------------------------------------------------- encoding


class _Encoder:
    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}
        self._types: dict[type, str] = {}

    def ref(self, array: np.ndarray, path: str) -> str:
        if array.dtype.name not in SUPPORTED_DTYPES or array.dtype.fields is not None:
            raise ResultCodecError(
                f"numpy dtype {array.dtype.str!r} cannot be stored "
                f"(supported: {', '.join(sorted(SUPPORTED_DTYPES))})",
                path=path,
            )
        name = str(len(self.arrays))
        self.arrays[name] = array
        return name

    def node(self, v: Any, path: str, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise ResultCodecError(f"nested deeper than {MAX_DEPTH} levels", path=path)
        t = type(v)
        if v is None or t is bool or t is int or t is str:
            return v
        if t is float:
            if math.isfinite(v):
                return v
            return {"$": "float", "value": "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")}
        if t is np.ndarray:
            return {"$": "array", "ref": self.ref(v, path)}
        if isinstance(v, np.generic):
            return {"$": "scalar", "ref": self.ref(np.asarray(v), path)}
        d = depth + 1
        if t is tuple or t is list:
            items = [self.node(x, f"{path}[{i}]", d) for i, x in enumerate(v)]
            return {"$": t.__name__, "items": items}
        if t is set or t is frozenset:
            enc = [self.node(x, f"{path}{{}}", d) for x in v]
            enc.sort(key=lambda x: json.dumps(x, sort_keys=True, separators=(",", ":")))
            return {"$": t.__name__, "items": enc}
        if t is dict or t is MappingProxyType:
            items = [
                [self.node(k, f"{path}.<key>", d), self.node(x, f"{path}[{k!r}]", d)]
                for k, x in v.items()
            ]
            return {"$": "dict" if t is dict else "mappingproxy", "items": items}
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            ref = self._types.get(t) or self._types.setdefault(t, _type_ref(t, path))
            fields = [
                [f.name, self.node(getattr(v, f.name), f"{path}.{f.name}", d)]
                for f in dataclasses.fields(v)
            ]
            return {"$": "dataclass", "type": ref, "fields": fields}
        pd = sys.modules.get("pandas")
        if pd is not None and isinstance(v, (pd.DataFrame, pd.Series, pd.Index)):
            return self.pandas(pd, v, path, d)
        raise ResultCodecError(
            f"values of type {t.__module__}.{t.__qualname__} cannot be stored", path=path
        )

    def pandas(self, pd: Any, v: Any, path: str, depth: int) -> Any:
        t = type(v)
        if t is pd.DataFrame:
            if v.attrs:
                raise ResultCodecError("a DataFrame with attrs cannot be stored", path=path)
            data = [  # a column of another dtype is an object array here: refused
                self.node(np.asarray(v.iloc[:, i].to_numpy()), f"{path}.iloc[:, {i}]", depth)
                for i in range(v.shape[1])
            ]
            return {
                "$": "dataframe",
                "index": self.pandas(pd, v.index, f"{path}.index", depth),
                "columns": self.pandas(pd, v.columns, f"{path}.columns", depth),
                "data": data,
            }
        if t is pd.Series:
            if v.attrs or v.dtype.name not in SUPPORTED_DTYPES:
                raise ResultCodecError(
                    f"a Series of dtype {v.dtype} (or with attrs) cannot be stored", path=path
                )
            return {
                "$": "series",
                "index": self.pandas(pd, v.index, f"{path}.index", depth),
                "data": self.node(np.asarray(v.to_numpy()), f"{path}.values", depth),
                "name": self.label(v.name, f"{path}.name"),
            }
        name = self.label(v.name, f"{path}.name")
        if t is pd.RangeIndex:
            return {
                "$": "range_index",
                "start": v.start,
                "stop": v.stop,
                "step": v.step,
                "name": name,
            }
        if t is pd.Index and v.dtype.name in SUPPORTED_DTYPES:
            return {"$": "index", "values": self.node(v.to_numpy(), path, depth), "name": name}
        if t is pd.Index and v.dtype.name in _LABEL_DTYPES:
            labels = [self.label(x, f"{path}[{i}]") for i, x in enumerate(v)]
            return {"$": "index", "labels": labels, "dtype": v.dtype.name, "name": name}
        raise ResultCodecError(
            f"a pandas {t.__name__} of dtype {v.dtype} cannot be stored", path=path
        )

    def label(self, v: Any, path: str) -> Any:
        if v is None or type(v) in (bool, int, str, float):
            return self.node(v, path, 0)
        raise ResultCodecError(
            f"a pandas label of type {type(v).__name__} cannot be stored (str, int, float, bool)",
            path=path,
        )


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
    enc = _Encoder()
    value = enc.node(obj, "result", 0)
    tree = {"format": FORMAT, "version": VERSION, "value": value}
    raw = json.dumps(tree, separators=(",", ":"), allow_nan=False).encode("ascii")
    if len(raw) > MAX_TREE_BYTES:
        raise ResultCodecError(f"the result's tree exceeds {MAX_TREE_BYTES} bytes")
    try:
        return pack_arrays({_TREE: np.frombuffer(raw, dtype=np.uint8), **enc.arrays})
    except ProtocolError as exc:  # pragma: no cover - dtypes are checked above
        raise ResultCodecError(f"the result cannot be packed: {exc}") from None


# --------------------------------------------------------------------------- decoding


def _reject_constant(name: str) -> Any:
    raise ValueError(f"JSON constant {name} is not allowed")


class _Decoder:
    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.arrays = arrays
        self.used: set[str] = set()

    def take(self, node: dict[str, Any], path: str) -> np.ndarray:
        self.keys(node, {"$", "ref"}, path)
        name = node["ref"]
        if not isinstance(name, str) or name not in self.arrays:
            raise ResultCodecError(f"reference to a missing array {str(name)[:40]!r}", path=path)
        if name in self.used:
            raise ResultCodecError(f"array {name!r} is referenced twice", path=path)
        self.used.add(name)
        return np.array(self.arrays[name], copy=True)  # writable, independent of the frame

    @staticmethod
    def keys(node: dict[str, Any], expected: set[str], path: str) -> None:
        if set(node) != expected:
            raise ResultCodecError(
                f"a {str(node.get('$'))[:40]!r} node needs exactly the keys {sorted(expected)}",
                path=path,
            )

    def items(self, node: dict[str, Any], path: str) -> list[Any]:
        items = node.get("items")
        if not isinstance(items, list):
            raise ResultCodecError("'items' must be a list", path=path)
        return items

    def node(self, node: Any, path: str, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise ResultCodecError(f"nested deeper than {MAX_DEPTH} levels", path=path)
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        if not isinstance(node, dict):
            raise ResultCodecError(f"unexpected JSON {type(node).__name__}", path=path)
        tag = node.get("$")
        d = depth + 1
        if tag == "float":
            self.keys(node, {"$", "value"}, path)
            if node["value"] not in _NONFINITE:
                raise ResultCodecError("a float node holds 'nan', 'inf' or '-inf'", path=path)
            return _NONFINITE[node["value"]]
        if tag == "array":
            return self.take(node, path)
        if tag == "scalar":
            arr = self.take(node, path)
            if arr.ndim != 0:
                raise ResultCodecError("a scalar's array must have no dimension", path=path)
            return arr[()]
        if tag in ("tuple", "list", "set", "frozenset"):
            self.keys(node, {"$", "items"}, path)
            items = [self.node(x, f"{path}[{i}]", d) for i, x in enumerate(self.items(node, path))]
            if tag in ("set", "frozenset"):
                try:
                    return set(items) if tag == "set" else frozenset(items)
                except TypeError:
                    raise ResultCodecError("a set holds an unhashable item", path=path) from None
            return tuple(items) if tag == "tuple" else items
        if tag in ("dict", "mappingproxy"):
            self.keys(node, {"$", "items"}, path)
            out: dict[Any, Any] = {}
            for pair in self.items(node, path):
                if not isinstance(pair, list) or len(pair) != 2:
                    raise ResultCodecError("dict items are [key, value] pairs", path=path)
                key = self.node(pair[0], f"{path}.<key>", d)
                try:
                    hash(key)
                except TypeError:
                    raise ResultCodecError("a dict key is unhashable", path=path) from None
                out[key] = self.node(pair[1], f"{path}[{key!r}]", d)
            return out if tag == "dict" else MappingProxyType(out)
        if tag == "dataclass":
            return self.dataclass(node, path, d)
        if tag in ("index", "range_index", "series", "dataframe"):
            return self.pandas(node, path, d)
        raise ResultCodecError(f"unknown node type {str(tag)[:40]!r}", path=path)

    def dataclass(self, node: dict[str, Any], path: str, depth: int) -> Any:
        self.keys(node, {"$", "type", "fields"}, path)
        if not isinstance(node["type"], str):
            raise ResultCodecError("a dataclass's type is a 'module:qualname' string", path=path)
        cls = _resolve(node["type"], path)
        fields = node["fields"]
        names = [f.name for f in dataclasses.fields(cls)]
        if (
            not isinstance(fields, list)
            or not all(isinstance(p, list) and len(p) == 2 for p in fields)
            or [p[0] for p in fields] != names
        ):
            raise ResultCodecError(
                f"the fields of {node['type'][:120]!r} are not {names} (another version?)",
                path=path,
            )
        try:
            obj: Any = object.__new__(cls)  # cls.__new__ is object.__new__ (checked)
        except TypeError:  # an abstract class
            raise ResultCodecError(
                f"type {node['type'][:120]!r} cannot be built", path=path
            ) from None
        for name, value in fields:
            object.__setattr__(obj, name, self.node(value, f"{path}.{name}", depth))
        return obj

    def label(self, node: Any, path: str) -> Any:
        value = self.node(node, path, MAX_DEPTH)
        if value is not None and type(value) not in (bool, int, str, float):
            raise ResultCodecError("a pandas label is a str, int, float, bool or null", path=path)
        return value

    def pandas(self, node: dict[str, Any], path: str, depth: int) -> Any:
        import pandas as pd

        tag = node["$"]
        if tag == "range_index":
            self.keys(node, {"$", "start", "stop", "step", "name"}, path)
            bounds = [node["start"], node["stop"], node["step"]]
            if not all(type(b) is int for b in bounds) or bounds[2] == 0:
                raise ResultCodecError("a range index has integer bounds and step", path=path)
            return pd.RangeIndex(*bounds, name=self.label(node["name"], f"{path}.name"))
        if tag == "index":
            name = self.label(node.get("name"), f"{path}.name")
            if "values" in node:
                self.keys(node, {"$", "values", "name"}, path)
                values = self.node(node["values"], path, depth)
                if not isinstance(values, np.ndarray) or values.ndim != 1:
                    raise ResultCodecError("an index's values are a 1-D array", path=path)
                return pd.Index(values, name=name, copy=False)
            self.keys(node, {"$", "labels", "dtype", "name"}, path)
            if node["dtype"] not in _LABEL_DTYPES or not isinstance(node["labels"], list):
                raise ResultCodecError("an index of labels has dtype 'object'", path=path)
            labels = [self.label(x, f"{path}[{i}]") for i, x in enumerate(node["labels"])]
            return pd.Index(labels, dtype=node["dtype"], name=name)
        if tag == "series":
            self.keys(node, {"$", "index", "data", "name"}, path)
            index = self.index(node["index"], f"{path}.index", depth)
            data = self.column(node["data"], f"{path}.values", len(index))
            return pd.Series(data, index=index, name=self.label(node["name"], f"{path}.name"))
        self.keys(node, {"$", "index", "columns", "data"}, path)
        index = self.index(node["index"], f"{path}.index", depth)
        columns = self.index(node["columns"], f"{path}.columns", depth)
        data = node["data"]
        if not isinstance(data, list) or len(data) != len(columns):
            raise ResultCodecError("a DataFrame has one data array per column", path=path)
        cols = [self.column(x, f"{path}.iloc[:, {i}]", len(index)) for i, x in enumerate(data)]
        frame = pd.DataFrame(dict(enumerate(cols)), index=index)
        frame.columns = columns
        return frame

    def index(self, node: Any, path: str, depth: int) -> Any:
        if not isinstance(node, dict) or node.get("$") not in ("index", "range_index"):
            raise ResultCodecError("expected an index node", path=path)
        return self.pandas(node, path, depth)

    def column(self, node: Any, path: str, length: int) -> np.ndarray:
        if not isinstance(node, dict) or node.get("$") != "array":
            raise ResultCodecError("expected an array node", path=path)
        arr = self.take(node, path)
        if arr.shape != (length,):
            raise ResultCodecError(
                f"a column has shape {arr.shape}, expected ({length},)", path=path
            )
        return arr


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
