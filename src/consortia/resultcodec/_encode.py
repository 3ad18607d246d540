"""Encoding a result: the JSON tree of a value, its numpy arrays set aside by reference."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from types import MappingProxyType
from typing import Any

import numpy as np

from consortia.errors import ResultCodecError
from consortia.resultcodec._format import _LABEL_DTYPES, MAX_DEPTH, _type_ref
from consortia.wire import SUPPORTED_DTYPES

__all__: list[str] = []


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
