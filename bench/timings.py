"""Timings that used to be assertions in tests (tests assert results, not speed).

* ``synthetic_20k_s``: ``synthetic_cohort`` of 2 sites x 500 patients x 20,000 genes
  (no tiles); target < 10 s (about 2 s on one core of the reference machine);
* ``wire_round_trip_ms``: ``pack_arrays`` + ``unpack_arrays`` of 1,000,000 uint64
  (one 8 MB copy); target < 50 ms (about 2 ms measured).

Best of ``--repeat`` runs (the machines are noisy).  Last line:
``timings synthetic_20k_s=<float> wire_round_trip_ms=<float> ok=<bool>``.

Usage: ``python bench/timings.py [--repeat 3]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from consortia.data import synthetic_cohort
from consortia.wire import pack_arrays, unpack_arrays

SYNTHETIC_TARGET_S = 10.0
WIRE_TARGET_MS = 50.0


def synthetic_20k() -> float:
    t0 = time.perf_counter()
    c = synthetic_cohort(n_sites=2, patients_per_site=500, n_genes=20_000, tiles=False, seed=1)
    elapsed = time.perf_counter() - t0
    assert c.pooled().expression.shape == (1000, 20_000)
    return elapsed


def wire_round_trip() -> float:
    masked = np.random.default_rng(0).integers(0, 2**64, 10**6, dtype=np.uint64)
    start = time.perf_counter()
    for _ in range(10):
        out = unpack_arrays(pack_arrays({"masked": masked}))
    per_round_trip = (time.perf_counter() - start) / 10
    np.testing.assert_array_equal(out["masked"], masked)
    return per_round_trip * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args()
    synth = min(synthetic_20k() for _ in range(a.repeat))
    wire = min(wire_round_trip() for _ in range(a.repeat))
    ok = synth < SYNTHETIC_TARGET_S and wire < WIRE_TARGET_MS
    print(f"timings synthetic_20k_s={synth:.3f} wire_round_trip_ms={wire:.3f} ok={ok}")


if __name__ == "__main__":
    main()
