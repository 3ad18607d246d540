import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consortia.errors import EncodingRangeError, ValidationError
from consortia.privacy import FixedPoint


def test_round_trip_within_half_resolution():
    fp = FixedPoint()
    x = np.random.default_rng(0).normal(0, 1e4, 10_000)
    err = np.abs(fp.decode(fp.encode(x, n_parties=1)) - x)
    assert err.max() <= fp.resolution / 2 + 1e-12 * np.abs(x).max()


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=5, max_size=5),
        min_size=1,
        max_size=12,
    )
)
def test_sum_of_encodings_decodes_to_float_sum(rows):
    fp = FixedPoint()
    arrays = np.array(rows)
    n = len(arrays)
    acc = np.zeros(5, dtype=np.uint64)
    for a in arrays:
        acc += fp.encode(a, n_parties=n)
    got = fp.decode(acc)
    assert np.all(np.abs(got - arrays.sum(axis=0)) <= n * fp.resolution / 2 + 1e-9)


def test_negative_values_and_wraparound_arithmetic():
    fp = FixedPoint()
    a = fp.encode(np.array([-3.25, 1.5]), n_parties=2)
    b = fp.encode(np.array([1.25, -4.0]), n_parties=2)
    np.testing.assert_allclose(fp.decode(a + b), [-2.0, -2.5])


def test_out_of_range_raises_instead_of_wrapping():
    fp = FixedPoint(frac_bits=24)
    bound = fp.bound(10)
    assert bound == pytest.approx(2**39 / 10, rel=1e-9)
    fp.encode(np.array([bound * 0.999]), n_parties=10)
    with pytest.raises(EncodingRangeError, match=r"array 'hessian' has values beyond"):
        fp.encode(np.array([0.0, bound * 1.001]), n_parties=10, name="hessian")


def test_sum_at_the_bound_does_not_overflow():
    fp = FixedPoint(frac_bits=24)
    n = 7
    x = np.array([fp.bound(n), -fp.bound(n)])
    acc = np.zeros(2, dtype=np.uint64)
    for _ in range(n):
        acc += fp.encode(x, n_parties=n)
    np.testing.assert_allclose(fp.decode(acc), n * x, rtol=1e-12)


def test_nan_refused_and_bad_config():
    with pytest.raises(EncodingRangeError, match="NaN or infinite"):
        FixedPoint().encode(np.array([np.nan]), n_parties=3, name="g")
    with pytest.raises(ValidationError, match="frac_bits"):
        FixedPoint(frac_bits=60)
    with pytest.raises(ValidationError, match="n_parties"):
        FixedPoint().bound(0)


def test_decoding_in_place_gives_the_same_floats_in_the_same_memory():
    fp = FixedPoint(frac_bits=24)
    rng = np.random.default_rng(3)
    values = rng.normal(scale=1e6, size=200_003)  # not a multiple of the chunk
    enc = fp.encode(values, n_parties=10)
    expected = fp.decode(enc)
    got = fp.decode_in_place(enc, chunk=4096)
    assert np.shares_memory(got, enc) and got.dtype == np.float64
    assert got.tobytes() == expected.tobytes()  # bit for bit
    frozen = fp.encode(values[:10], n_parties=10)
    frozen.setflags(write=False)
    with pytest.raises(ValidationError, match="writable"):
        fp.decode_in_place(frozen)
