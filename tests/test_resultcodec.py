"""The result codec: every result round-trips bit for bit; hostile frames are refused."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import struct
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd
import pytest

from consortia import Policy, Simulation
from consortia.data.dataset import Dataset
from consortia.data.schema import Schema
from consortia.errors import ProtocolError, ResultCodecError
from consortia.learn import Training
from consortia.omics import DESeq2
from consortia.omics.limma import ModeratedT
from consortia.omics.screen import CoxScreen
from consortia.protocol import Algorithm, Contribution, Round, register, registered_algorithms
from consortia.resultcodec import MAX_DEPTH, decode_result, encode_result, result_digest
from consortia.stats.descriptive import Count, CrossTab, Histogram, Mean, Variance
from consortia.stats.dp import DPCount, DPCrossTab, DPHistogram
from consortia.stats.dp_mean import DPMean
from consortia.stats.linear import LinearRegression
from consortia.stats.logistic import LogisticRegression
from consortia.subgroups import PCA, ChooseK, KMeans, Subgroups
from consortia.survival._grid import day_grid
from consortia.survival.concordance import Concordance
from consortia.survival.cox import CoxPH
from consortia.survival.dp_kaplan_meier import DPKaplanMeier
from consortia.survival.kaplan_meier import KaplanMeier
from consortia.survival.logrank import LogRank
from consortia.testing.vector_sum import VectorSum
from consortia.wire import MAGIC, pack_arrays, unpack_arrays

OPEN = Policy(min_cell_count=1, allow_per_site=True, epsilon_budget=100.0)
GRID = day_grid(60)
DP = {"epsilon": 1.0, "delta": 1e-6}
PLAN = {"horizon": 60, "plan_cells": 10, "plan_epsilon": 1.0}


@pytest.fixture(scope="module")
def sites() -> dict[str, pd.DataFrame]:
    """Three sites with numeric, binary, categorical and survival (day times) columns."""
    rng = np.random.default_rng(2024)
    out = {}
    for i, n in enumerate((300, 250, 350)):
        x1, x2 = rng.normal(i * 0.3, 1, n), rng.normal(0, 2, n)
        event = (rng.random(n) < 1 / (1 + np.exp(-(0.3 + 0.8 * x1 - 0.4 * x2)))).astype(int)
        arm = rng.choice(["a", "b"], n)
        t = np.ceil(rng.exponential(30 * np.exp(-0.5 * x1) * np.where(arm == "a", 1, 1.5)))
        c = np.ceil(rng.uniform(1, 60, n))
        out[f"site{i}"] = pd.DataFrame(
            {
                "x1": x1,
                "x2": x2,
                "y": 1 + 0.5 * x1 - 0.25 * x2 + rng.normal(0, 1, n),
                "event": event,
                "arm": arm,
                "T": np.minimum(t, c),
                "E": (t <= c).astype(int),
            }
        )
    return out


# one or more cheap studies per registered algorithm (every variant of the result's shape)
CASES: dict[str, Callable[[tuple[str, ...]], Algorithm]] = {
    "count": lambda s: Count(columns=("x1",)),
    "mean": lambda s: Mean(columns=("x1", "y")),
    "variance": lambda s: Variance(columns=("x1",)),
    "histogram": lambda s: Histogram(column="x1", edges=(-3.0, -1.0, 0.0, 1.0, 3.0)),
    "crosstab": lambda s: CrossTab(
        row="arm", column="event", row_categories=("a", "b"), column_categories=(0, 1)
    ),
    "dp_count": lambda s: DPCount(columns=("x1",), **DP),
    "dp_histogram": lambda s: DPHistogram(column="x1", edges=(-3.0, 0.0, 3.0), **DP),
    "dp_crosstab": lambda s: DPCrossTab(
        row="arm", column="event", row_categories=("a", "b"), column_categories=(0, 1), **DP
    ),
    "dp_mean": lambda s: DPMean(columns=("x1",), lower=(-5.0,), upper=(5.0,), **DP),
    "linear": lambda s: LinearRegression(outcome="y", covariates=("x1", "x2")),
    "logistic": lambda s: LogisticRegression(outcome="event", covariates=("x1", "x2")),
    "vector_sum": lambda s: VectorSum(size=5, rounds=2),
    "subgroups_pca": lambda s: PCA(columns=("x1", "x2", "y"), n_components=2),
    "subgroups_pca_iterative": lambda s: PCA(
        columns=("x1", "x2", "y"), n_components=1, method="iterative", oversample=1
    ),
    "subgroups_kmeans": lambda s: KMeans(columns=("x1", "x2"), n_clusters=2, n_init=2),
    "subgroups_choose_k": lambda s: ChooseK(columns=("x1", "x2"), k_min=2, k_max=3, n_init=2),
    "subgroups_characterise": lambda s: Subgroups(
        columns=("x1", "x2"),
        n_clusters=2,
        n_init=2,
        time="T",
        event="E",
        time_grid=GRID,
        cox_covariates=("y",),
        crosstab=("arm",),
        crosstab_levels=(("a", "b"),),
    ),
    "deseq2": lambda s: DESeq2(
        design="~cond",
        levels={"cond": ("A", "B")},
        contrast=("cond", "B", "A"),
        cooks_filter=False,
        refit_cooks=False,
    ),
    "concordance": lambda s: Concordance(
        time="T", event="E", covariates=("x1",), coefficients=(0.5,), time_grid=GRID, sites=s
    ),
    "cox": lambda s: CoxPH(time="T", event="E", covariates=("x1", "x2"), time_grid=GRID),
    "cox_strata": lambda s: CoxPH(
        time="T",
        event="E",
        covariates=("x1",),
        strata="arm",
        strata_levels=("a", "b"),
        time_grid=GRID,
    ),
    "cox_planned": lambda s: CoxPH(time="T", event="E", covariates=("x1", "x2"), **PLAN),
    "cox_by_site": lambda s: CoxPH(
        time="T", event="E", covariates=("x1",), stratify_by_site=True, time_grid=GRID
    ),
    "cox_screen": lambda s: CoxScreen(
        time="T", event="E", genes=("x1", "x2", "y"), source="columns", time_grid=GRID
    ),
    "cox_screen_by_site": lambda s: CoxScreen(
        time="T",
        event="E",
        genes=("x1", "y"),
        covariates=("x2",),
        source="columns",
        stratify_by_site=True,
    ),
    "moderated_t": lambda s: ModeratedT(
        genes=("y", "T"), covariates=("x1", "x2"), source="columns", adjust_for_site=True
    ),
    "dp_kaplan_meier": lambda s: DPKaplanMeier(
        time="T",
        event="E",
        time_grid=tuple(float(x) for x in range(5, 61, 5)),
        group="arm",
        groups=("a", "b"),
        **DP,
    ),
    "kaplan_meier": lambda s: KaplanMeier(
        time="T", event="E", time_grid=GRID, group="arm", groups=("a", "b")
    ),
    "kaplan_meier_planned": lambda s: KaplanMeier(time="T", event="E", **PLAN),
    "logrank": lambda s: LogRank(
        time="T", event="E", group="arm", groups=("a", "b"), time_grid=GRID
    ),
    "logrank_planned": lambda s: LogRank(
        time="T", event="E", group="arm", groups=("a", "b"), **PLAN
    ),
    # model training (its local step needs torch: skipped without it)
    "learn_binary": lambda s: Training(
        model="linear",
        features=("x1", "x2"),
        task="binary",
        label="event",
        rounds=2,
        test_fraction=0.3,
        auc_bins=20,
    ),
    "learn_cox": lambda s: Training(
        model="cox_linear",
        features=("x1", "x2"),
        task="cox",
        time="T",
        event="E",
        rounds=2,
        local_steps=3,
        batch_size=8,
        strategy="fedyogi",
        time_grid=GRID,
        score_bins=16,
    ),
}


def assert_same(a: Any, b: Any, path: str = "result") -> None:
    """Deep equality: same types, bit-identical arrays, equal tables, recursively."""
    assert type(a) is type(b), path
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, path
        assert a.tobytes() == b.tobytes(), path
    elif isinstance(a, np.generic):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), path
    elif isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(a, b, check_exact=True)
    elif isinstance(a, pd.Series):
        pd.testing.assert_series_equal(a, b, check_exact=True)
    elif isinstance(a, pd.Index):
        pd.testing.assert_index_equal(a, b, exact=True)
    elif dataclasses.is_dataclass(a):
        for f in dataclasses.fields(a):
            assert_same(getattr(a, f.name), getattr(b, f.name), f"{path}.{f.name}")
    elif isinstance(a, (tuple, list)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, Mapping):
        assert list(a) == list(b), path
        for k in a:
            assert_same(a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), path
    else:
        assert a == b, path


def public_properties(obj: Any) -> dict[str, Any]:
    """Every public property of a result (``summary`` included), or the exception it raises."""
    out: dict[str, Any] = {}
    for name in dir(type(obj)):
        if not name.startswith("_") and isinstance(getattr(type(obj), name), property):
            try:
                out[name] = getattr(obj, name)
            except Exception as exc:  # the decoded object must fail the same way
                out[name] = type(exc)
    return out


def test_every_registered_algorithm_has_a_case() -> None:
    covered = {CASES[k](("site0",)).name for k in CASES}
    # consortia's own algorithms (tests and docs register others for themselves)
    product = {
        n for n, cls in registered_algorithms().items() if cls.__module__.startswith("consortia.")
    }
    assert product <= covered


def _count_sites() -> dict[str, Dataset]:
    """Three sites of 10 samples with raw counts of 30 genes (the omics cases)."""
    rng = np.random.default_rng(5)
    out = {}
    for i in range(3):
        ids = [f"p{i}_{j}" for j in range(10)]
        cond = np.tile(["A", "B"], 5)
        mu = np.exp(rng.normal(3, 1.5, 30))[None, :] * np.where(cond == "B", 2.0, 1.0)[:, None]
        counts = rng.negative_binomial(5, 5 / (5 + mu))
        out[f"site{i}"] = Dataset(
            frame=pd.DataFrame({"pid": ids, "cond": cond}),
            schema=Schema.from_mapping({"id": "pid"}),
            expression=pd.DataFrame(counts, index=ids, columns=[f"g{k}" for k in range(30)]),
        )
    return out


@pytest.mark.parametrize("case", sorted(CASES))
def test_result_round_trips(case: str, sites: dict[str, pd.DataFrame]) -> None:
    if case.startswith("learn"):
        pytest.importorskip("torch")
    data: Mapping[str, Any] = _count_sites() if case == "deseq2" else sites
    result = Simulation(data, policy=OPEN).run(CASES[case](tuple(data)))
    frame = encode_result(result)
    assert encode_result(result) == frame  # deterministic
    back = decode_result(frame)
    assert type(back) is type(result)
    assert encode_result(back) == frame
    assert_same(result, back)
    props = public_properties(result)
    assert props.keys() == public_properties(back).keys()
    for name, value in props.items():
        assert_same(value, public_properties(back)[name], f"result.{name}")
    if "summary" in props or hasattr(result, "summary"):
        s1, s2 = result.summary, back.summary
        if callable(s1):
            s1, s2 = s1(), s2()
        pd.testing.assert_frame_equal(s1, s2, check_exact=True)
    assert len(result_digest(frame)) == 64


def _type_refs(frame: bytes) -> set[str]:
    tree = unpack_arrays(frame)["result"].tobytes().decode()
    return {m for m in re.findall(r'"type":"([^"]+)"', tree)}


@pytest.mark.parametrize(
    ("case", "refs"),
    [
        ("count", {"consortia.stats.descriptive:CountResult"}),
        ("mean", {"consortia.stats.descriptive:MeanResult"}),
        ("variance", {"consortia.stats.descriptive:VarianceResult"}),
        ("histogram", {"consortia.stats.descriptive:HistogramResult"}),
        ("crosstab", {"consortia.stats.descriptive:CrossTabResult"}),
        (
            "kaplan_meier_planned",
            {
                "consortia.survival.kaplan_meier:KaplanMeierResult",
                "consortia.survival.kaplan_meier:KaplanMeierCurve",
                "consortia.survival._plan:GridPlan",
            },
        ),
        ("cox", {"consortia.survival._cox_result:CoxPHResult"}),
    ],
)
def test_result_types_keep_the_names_stored_frames_recorded(
    case: str, refs: set[str], sites: dict[str, pd.DataFrame]
) -> None:
    """Result classes defined in private modules are written under their public home, as
    before they moved: stored frames decode, and replays encode to the same bytes."""
    frame = encode_result(Simulation(sites, policy=OPEN).run(CASES[case](tuple(sites))))
    assert _type_refs(frame) == refs


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class _Inner:
    values: np.ndarray
    label: str


@dataclass(frozen=True)
class CustomResult:
    """A result of an algorithm registered outside consortia (this test module)."""

    inner: _Inner
    table: Mapping[Any, Any]
    derived: float = field(init=False, default=0.0)


@register
@dataclass(frozen=True, kw_only=True)
class CodecCustom(Algorithm):
    name = "test.codec_custom"
    column: str = "x1"

    def coordinate(self):  # type: ignore[no-untyped-def]
        sums = yield Round("total")
        res = CustomResult(_Inner(np.asarray(sums["s"]), "total"), {1: "one", (2, 3): None})
        object.__setattr__(res, "derived", float(sums["s"][0]) * 2)
        return res

    def local(self, step, public, data):  # type: ignore[no-untyped-def]
        return Contribution({"s": [float(data.frame[self.column].sum())]}, cohort=len(data.frame))


def test_registered_algorithm_module_and_init_false_field(sites: dict[str, pd.DataFrame]) -> None:
    result = Simulation(sites, policy=OPEN).run(CodecCustom())
    back = decode_result(encode_result(result))
    assert back == result and back.derived == result.derived != 0.0
    assert back.table == {1: "one", (2, 3): None}


def test_values_and_edge_cases() -> None:
    value = {
        "floats": (math.nan, math.inf, -math.inf, -0.0, 1e-310, 0.1),
        "ints": (0, -(2**70), True, False, None),
        "scalars": [np.float64(np.nan), np.int64(-3), np.bool_(True), np.uint8(7)],
        "arrays": (
            np.array([np.nan, -np.inf, -0.0]),
            np.arange(12, dtype=np.int32).reshape(3, 4).T,  # not C-contiguous
            np.zeros((0, 3)),
            np.array(5.0),
            np.array([True, False]),
        ),
        "sets": (frozenset({"b", "a", "c"}), {3, 1, 2}),
        "proxy": MappingProxyType({"k": 1.5}),
        "unicode": "µ\ud800",
        7: "int key",
        ("t", 1): "tuple key",
        "series": pd.Series([1.0, 2.0], index=pd.RangeIndex(2, 6, 2, name="r"), name="s"),
        "frame": pd.DataFrame(
            np.arange(6.0).reshape(3, 2),
            index=pd.Index([0.5, 1.5, 2.5], name="t"),
            columns=pd.Index([1, "b"], dtype=object),
        ),
        "dup_columns": pd.DataFrame([[1, 2]], columns=pd.Index(["a", "a"], dtype=object)),
        "empty_frame": pd.DataFrame(index=pd.Index([], dtype="float64")),
    }
    frame = encode_result(value)
    back = decode_result(frame)
    assert_same(value, back)
    assert encode_result(back) == frame
    # set items are sorted: an equal set built in another order encodes the same
    assert encode_result({3, 2, 1}) == encode_result({1, 2, 3})
    # arrays come back writable and independent of the frame
    arr = back["arrays"][0]
    arr[0] = 1.0
    assert np.isnan(decode_result(frame)["arrays"][0][0])


@pytest.mark.parametrize(
    ("value", "path", "what"),
    [
        ({"a": [1, 2j]}, "result['a'][1]", "complex"),
        ((np.array(["x"]),), "result[0]", "<U1"),
        ({"o": np.array([1, None], dtype=object)}, "result['o']", "|O"),
        ([lambda: 0], "result[0]", "function"),
        (_Inner(np.zeros(1), b"bytes"), "result.label", "bytes"),  # type: ignore[arg-type]
        ({"d": pd.DataFrame({"s": ["x"]})}, "result['d'].iloc[:, 0]", "|O"),
        (np.ma.masked_array([1.0]), "result", "MaskedArray"),
        (ProtocolError("x"), "result", "ProtocolError"),
    ],
)
def test_unsupported_values_name_their_path(value: Any, path: str, what: str) -> None:
    with pytest.raises(ResultCodecError) as info:
        encode_result(value)
    assert info.value.path == path and what in str(info.value)


def test_a_dataclass_outside_consortia_is_not_encoded() -> None:
    @dataclass
    class Local:
        x: int

    with pytest.raises(ResultCodecError, match="bad type reference") as info:
        encode_result({"r": Local(1)})  # a class in a function cannot be found by its name
    assert info.value.path == "result['r']"
    Local.__module__, Local.__qualname__ = "elsewhere", "Local"
    with pytest.raises(ResultCodecError, match="outside consortia"):
        encode_result((Local(1),))


def test_too_deep_is_refused_both_ways() -> None:
    deep: Any = 1.0
    for _ in range(MAX_DEPTH + 2):
        deep = [deep]
    with pytest.raises(ResultCodecError, match="nested deeper"):
        encode_result(deep)
    node: Any = 1
    for _ in range(MAX_DEPTH + 2):
        node = {"$": "list", "items": [node]}
    with pytest.raises(ResultCodecError, match="nested deeper"):
        decode_result(_frame(node))


# --------------------------------------------------------------------------- hostile frames


def _frame(value: Any, arrays: Mapping[str, np.ndarray] | None = None, **top: Any) -> bytes:
    tree = {"format": "consortia.result", "version": 1, "value": value, **top}
    raw = json.dumps(tree).encode()
    return pack_arrays({"result": np.frombuffer(raw, np.uint8), **(arrays or {})})


def _dc(ref: str, fields: list | None = None) -> dict:
    return {"$": "dataclass", "type": ref, "fields": fields or []}


def test_a_type_outside_consortia_is_never_imported(capsys: pytest.CaptureFixture) -> None:
    assert "this" not in sys.modules  # importing it prints the Zen of Python
    for ref in ("this:x", "os:system", "subprocess:Popen", "builtins:dict"):
        with pytest.raises(ResultCodecError, match="outside consortia"):
            decode_result(_frame(_dc(ref)))
    assert "this" not in sys.modules and capsys.readouterr().out == ""


@pytest.mark.parametrize(
    "ref",
    [
        "consortia.protocol:Coordinator",  # a class, not a dataclass
        "consortia.errors:ProtocolError",
        "consortia.protocol:register",  # a function
        "consortia.__main__:main",  # a dunder module
        "consortia.protocol:Round.__class__",
        "consortia.nowhere:X",
        "consortia:../x",
        "consortia.protocol:Algorithm",  # abstract (not a dataclass either)
    ],
)
def test_non_dataclass_types_are_refused(ref: str) -> None:
    with pytest.raises(ResultCodecError) as info:
        decode_result(_frame({"$": "tuple", "items": [_dc(ref)]}))
    assert info.value.path == "result[0]"


def test_dataclass_fields_must_match_exactly() -> None:
    ref = "consortia.protocol:Requirements"
    good = _dc(
        ref, [["n_parameters", 3], ["columns", {"$": "tuple", "items": ["a"]}], ["training", None]]
    )
    assert decode_result(_frame(good)).n_parameters == 3
    for fields in (
        [["n_parameters", 3]],  # one missing
        [["columns", []], ["n_parameters", 3]],  # another order
        [["n_parameters", 3], ["columns", []], ["extra", 1]],
    ):
        with pytest.raises(ResultCodecError, match="another version"):
            decode_result(_frame(_dc(ref, fields)))


def test_malformed_frames_are_refused() -> None:
    good = encode_result({"x": np.arange(4.0)})
    bad: list[bytes] = [
        b"",
        b"\x80\x04\x95pickle",  # a pickle
        good[:-8],  # truncated in the data
        good[:20],  # truncated in the header
        good + b"\0" * 8,  # trailing bytes
        pack_arrays({"x": np.zeros(2)}),  # a wire message, not a result
        _frame(1, version=2),
        _frame({"$": "array", "ref": "0"}),  # a missing array
        _frame({"$": "tuple", "items": [{"$": "array", "ref": "0"}] * 2}, {"0": np.zeros(1)}),
        _frame(1, {"0": np.zeros(1)}),  # an array no node refers to
        _frame(1, {"7": np.zeros(1)}),  # arrays out of order
        _frame({"$": "pickle", "data": "gASV"}),
        _frame({"$": "float", "value": "1e400"}),
        _frame({"$": "dict", "items": [[{"$": "list", "items": []}, 1]]}),  # unhashable key
        _frame({"$": "scalar", "ref": "0"}, {"0": np.zeros(2)}),
        _frame({"$": "tuple", "items": [], "extra": 1}),
        pack_arrays({"result": np.frombuffer(b'{"format": NaN}', np.uint8)}),
        pack_arrays({"result": np.frombuffer(b"\xff\xfe", np.uint8)}),
        pack_arrays({"result": np.zeros(3, np.int64)}),
    ]
    for data in bad:
        with pytest.raises(ResultCodecError):
            decode_result(data)


def test_huge_declared_size_and_oversized_frames_are_refused() -> None:
    header = json.dumps(
        {
            "arrays": [
                {"name": "result", "dtype": "uint8", "shape": [2], "offset": 0, "nbytes": 2},
                {"name": "0", "dtype": "float64", "shape": [2**40], "offset": 2, "nbytes": 2**43},
            ]
        }
    ).encode()
    header += b" " * (-(16 + len(header)) % 8)
    forged = MAGIC + struct.pack("<Q", len(header)) + header + b"{}"
    with pytest.raises(ResultCodecError, match="truncated"):
        decode_result(forged)
    forged_header = MAGIC + struct.pack("<Q", 2**62)
    with pytest.raises(ResultCodecError, match="too large"):
        decode_result(forged_header)
    frame = encode_result(np.zeros(1000))
    with pytest.raises(ResultCodecError, match="oversized"):
        decode_result(frame, max_bytes=len(frame) - 1)
    assert decode_result(frame, max_bytes=len(frame)).shape == (1000,)


@pytest.mark.parametrize("case", ["vector_sum", "cox"])
def test_the_parts_are_the_frame(case: str, sites: dict[str, pd.DataFrame]) -> None:
    from consortia.resultcodec import encode_result_parts

    result = Simulation(sites, policy=OPEN).run(CASES[case](tuple(sites)))
    parts = encode_result_parts(result)
    assert b"".join(parts) == encode_result(result)
    assert any(isinstance(p, memoryview) for p in parts)  # arrays are not copied
