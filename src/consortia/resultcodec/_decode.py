"""Decoding a result's JSON tree: every node checked, dataclasses rebuilt without ``__init__``."""

from __future__ import annotations

import dataclasses
from types import MappingProxyType
from typing import Any

import numpy as np

from consortia.errors import ResultCodecError
from consortia.resultcodec._format import _LABEL_DTYPES, _NONFINITE, MAX_DEPTH, _resolve

__all__: list[str] = []


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
