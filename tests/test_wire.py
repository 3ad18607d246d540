"""The safe binary array container: round trips, and every malformed input refused."""

from __future__ import annotations

import json
import pickle
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from consortia.errors import ProtocolError
from consortia.wire import (
    MAGIC,
    SUPPORTED_DTYPES,
    check_layout,
    pack_arrays,
    pack_parts,
    unpack_arrays,
)


def _forge(entries: list[dict], payload: bytes, *, magic: bytes = MAGIC) -> bytes:
    """Build a message by hand with an arbitrary header."""
    header = json.dumps({"arrays": entries}).encode()
    return magic + struct.pack("<Q", len(header)) + header + payload


def _entry(name="x", dtype="float64", shape=(2,), offset=0, nbytes=16) -> dict:
    return {"name": name, "dtype": dtype, "shape": list(shape), "offset": offset, "nbytes": nbytes}


def test_round_trip_keeps_names_order_dtypes_shapes_and_values():
    arrays = {
        "masked": np.arange(1000, dtype=np.uint64) * np.uint64(2**60 + 12345),
        "sums": np.linspace(-1e300, 1e300, 7),
        "counts": np.array([[1, -2], [3, -(2**63)]], dtype=np.int64),
        "scalar": np.float64(np.pi),
        "empty": np.zeros((0, 3), dtype=np.int64),
        "special": np.array([np.nan, np.inf, -np.inf, -0.0]),
        "flags": np.array([True, False, True]),
    }
    out = unpack_arrays(pack_arrays(arrays))
    assert list(out) == list(arrays)
    for name, value in arrays.items():
        value = np.asarray(value)
        assert out[name].dtype == value.dtype and out[name].shape == value.shape
        np.testing.assert_array_equal(out[name], value)
    assert np.signbit(out["special"][3])


def test_parts_are_the_message_and_share_the_arrays_memory():
    big = np.arange(100_000, dtype=np.uint64)
    arrays = {"masked": big, "empty": np.zeros(0), "t": np.arange(6, dtype=">i8").reshape(2, 3).T}
    parts = pack_parts(arrays)
    assert b"".join(parts) == pack_arrays(arrays)
    assert len(parts) == 3  # the header, then the two non-empty arrays (none for "empty")
    body = np.frombuffer(parts[1], dtype=np.uint64)
    assert np.shares_memory(body, big)  # sent from the array's own buffer, not a copy
    with pytest.raises(TypeError):  # nothing written through a part changes the array
        parts[1][0] = 1
    assert not np.shares_memory(np.frombuffer(parts[2], dtype="<i8"), arrays["t"])
    with pytest.raises(ProtocolError, match="cannot be sent"):
        pack_parts({"o": np.array(["a"], dtype=object)})


def test_non_contiguous_and_big_endian_inputs_are_normalised():
    base = np.arange(24, dtype=">i8").reshape(4, 6)
    arrays = {"t": base.T, "s": base[::2, 1::3]}
    out = unpack_arrays(pack_arrays(arrays))
    for name, value in arrays.items():
        np.testing.assert_array_equal(out[name], value)
        assert out[name].dtype == np.dtype(np.int64)


def test_unpack_is_zero_copy_and_read_only_unless_copy_requested():
    message = pack_arrays({"m": np.arange(10, dtype=np.uint64)})
    view = unpack_arrays(message)["m"]
    assert not view.flags.writeable
    assert np.shares_memory(view, np.frombuffer(message, dtype=np.uint8))
    copied = unpack_arrays(message, copy=True)["m"]
    copied += np.uint64(1)  # writable and independent
    assert int(view[0]) == 0 and int(copied[0]) == 1


def test_million_uint64_round_trip():
    # its speed (one 8 MB copy, ~2 ms) is measured by bench/timings.py, not asserted here
    masked = np.random.default_rng(0).integers(0, 2**64, 10**6, dtype=np.uint64)
    for _ in range(10):
        out = unpack_arrays(pack_arrays({"masked": masked}))
    np.testing.assert_array_equal(out["masked"], masked)


def test_not_a_tensor_file():
    with pytest.raises(ProtocolError, match="not a tensor message"):
        unpack_arrays(b"hello world, this is JSON or text")
    with pytest.raises(ProtocolError, match="not a tensor message"):
        unpack_arrays(b"")
    with pytest.raises(ProtocolError, match="not a tensor message"):
        unpack_arrays(pickle.dumps({"x": np.zeros(3)}))
    with pytest.raises(ProtocolError, match="must be bytes"):
        unpack_arrays("a string")  # type: ignore[arg-type]


def test_truncated():
    message = pack_arrays({"x": np.arange(100.0)})
    with pytest.raises(ProtocolError, match="truncated"):
        unpack_arrays(message[:-8])
    with pytest.raises(ProtocolError, match="truncated"):
        unpack_arrays(message[:20])  # inside the header


def test_oversized():
    message = pack_arrays({"x": np.zeros(1000)})
    with pytest.raises(ProtocolError, match=r"oversized.*max_bytes=1024"):
        unpack_arrays(message, max_bytes=1024)
    assert unpack_arrays(message, max_bytes=len(message))["x"].shape == (1000,)


def test_object_and_unsupported_dtypes():
    with pytest.raises(ProtocolError, match="cannot be sent"):
        pack_arrays({"x": np.array([{"a": 1}], dtype=object)})
    with pytest.raises(ProtocolError, match="cannot be sent"):
        pack_arrays({"x": np.array(["text"])})
    with pytest.raises(ProtocolError, match="object and other non-numeric dtypes are refused"):
        unpack_arrays(_forge([_entry(dtype="object", nbytes=16)], b"\0" * 16))
    with pytest.raises(ProtocolError, match="not a supported dtype"):
        unpack_arrays(_forge([_entry(dtype="|O", nbytes=16)], b"\0" * 16))
    message = pack_arrays({"x": np.zeros(2, dtype=np.float32)})
    with pytest.raises(ProtocolError, match="'float32' is not allowed"):
        unpack_arrays(message, allowed_dtypes={"float64", "uint64"})


def test_bad_names():
    for name in ["", "../etc/passwd", " x", "a b", "x" * 129, "é"]:
        with pytest.raises(ProtocolError, match="bad array name"):
            pack_arrays({name: np.zeros(1)})
    with pytest.raises(ProtocolError, match="bad array name"):
        unpack_arrays(_forge([_entry(name="bad name")], b"\0" * 16))
    with pytest.raises(ProtocolError, match="bad array name"):
        unpack_arrays(_forge([_entry(name=7)], b"\0" * 16))  # type: ignore[arg-type]


def test_shape_size_mismatch():
    with pytest.raises(ProtocolError, match="shape/size mismatch"):
        unpack_arrays(_forge([_entry(shape=(3,), nbytes=16)], b"\0" * 16))
    with pytest.raises(ProtocolError, match="shape must be a list of non-negative integers"):
        unpack_arrays(_forge([_entry(shape=(-2,))], b"\0" * 16))
    with pytest.raises(ProtocolError, match="shape must be a list"):
        unpack_arrays(_forge([_entry(shape=(2.0,))], b"\0" * 16))


def test_duplicate_names():
    entries = [_entry(name="x"), _entry(name="x", offset=16)]
    with pytest.raises(ProtocolError, match="duplicate array name 'x'"):
        unpack_arrays(_forge(entries, b"\0" * 32))


def test_overlapping_gaps_and_trailing_bytes():
    with pytest.raises(ProtocolError, match="offset 0 does not follow"):
        unpack_arrays(_forge([_entry(name="a"), _entry(name="b")], b"\0" * 32))
    with pytest.raises(ProtocolError, match="trailing bytes"):
        unpack_arrays(pack_arrays({"x": np.zeros(2)}) + b"\0" * 8)


def test_malformed_headers():
    with pytest.raises(ProtocolError, match="not valid UTF-8 JSON"):
        unpack_arrays(MAGIC + struct.pack("<Q", 4) + b"{{{{")
    bad = json.dumps({"arrays": [], "extra": 1}).encode()
    with pytest.raises(ProtocolError, match="single key 'arrays'"):
        unpack_arrays(MAGIC + struct.pack("<Q", len(bad)) + bad)
    with pytest.raises(ProtocolError, match="exactly the keys"):
        unpack_arrays(_forge([{"name": "x"}], b""))
    with pytest.raises(ProtocolError, match="header too large"):
        unpack_arrays(MAGIC + struct.pack("<Q", 2**40) + b"{}")
    with pytest.raises(ProtocolError, match="0 and 1"):
        unpack_arrays(_forge([_entry(dtype="bool", shape=(2,), nbytes=2)], b"\x00\x07"))


def test_pack_refuses_non_mapping():
    with pytest.raises(ProtocolError, match="mapping"):
        pack_arrays([np.zeros(2)])  # type: ignore[arg-type]


names = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.:/\-]{0,20}", fullmatch=True)
arrays = st.sampled_from(sorted(SUPPORTED_DTYPES)).flatmap(
    lambda dtype: hnp.arrays(
        np.dtype(dtype), hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5)
    )
)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(names, arrays, max_size=5))
def test_round_trip_property(data):
    out = unpack_arrays(pack_arrays(data))
    assert list(out) == list(data)
    for name, value in data.items():
        assert out[name].dtype == value.dtype
        assert out[name].shape == value.shape
        assert out[name].tobytes() == value.tobytes()  # bit-exact, NaN payloads included


def test_check_layout():
    arrays = unpack_arrays(pack_arrays({"s": np.zeros(3, np.uint64), "n": np.zeros((), np.uint64)}))
    check_layout(arrays, {"s": (3,), "n": ()}, dtype="uint64")
    with pytest.raises(ProtocolError, match=r"array 's' has shape \(3,\), expected \(4,\)"):
        check_layout(arrays, {"s": (4,), "n": ()})
    with pytest.raises(ProtocolError, match=r"missing \['t'\], unexpected \['s'\]"):
        check_layout(arrays, {"t": (3,), "n": ()})
    with pytest.raises(ProtocolError, match="dtype uint64, expected float64"):
        check_layout(arrays, {"s": (3,), "n": ()}, dtype="float64")
