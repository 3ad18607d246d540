"""Issue 8, item 2: one study, two transports (HTTP and in memory), the same bits.

The node agents and the SDK reach the hub only through a transport
(:mod:`consortia.transport`).  The same studies run through the HTTP transports
(the hub's FastAPI app on a loopback port) and through the in-memory ones (the
hub's study engine called directly) give results whose encodings are identical,
and identical to the simulation's; the hub's refusals become the same typed
errors through both.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from consortia import Simulation
from consortia.errors import HubUnreachable, ProtocolError, ValidationError
from consortia.protocol import algorithm_from_spec
from consortia.resultcodec import encode_result
from consortia.sdk import RemoteFederation
from consortia.stats import LogisticRegression, Mean
from consortia.testing.vector_sum import VectorSum
from consortia.transport import HttpResearcherTransport
from fedutil import MODES, PATIENCE, LocalFederation

ALGORITHMS = (
    Mean(columns=("x1", "x2", "y")),
    VectorSum(size=7, rounds=3),
    LogisticRegression(outcome="event", covariates=("x1", "x2")),
)


def _sites() -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(2024)
    out = {}
    for i, n in enumerate((40, 55, 60)):
        x1, x2 = rng.normal(i * 0.3, 1.0, n), rng.normal(0, 2.0, n)
        y = 1.0 + 0.5 * x1 - 0.25 * x2 + rng.normal(0, 1, n)
        event = (rng.random(n) < 1 / (1 + np.exp(-(0.3 + 0.8 * x1 - 0.4 * x2)))).astype(int)
        out[f"site{i}"] = pd.DataFrame({"x1": x1, "x2": x2, "y": y, "event": event})
    return out


@pytest.fixture(scope="module")
def federations(tmp_path_factory):
    sites = _sites()
    started = {}
    try:
        for mode in MODES:
            started[mode] = LocalFederation(tmp_path_factory.mktemp(mode), sites, mode=mode)
        yield started, sites
    finally:
        for fed in started.values():
            fed.stop()


def test_the_same_studies_give_the_same_bits_through_both_transports(federations):
    feds, _ = federations
    sim = Simulation(feds["memory"].datasets())  # the data as the nodes read it
    for algo in ALGORITHMS:
        # the algorithm as the hub rebuilds it from its spec (a tuple parameter is a list)
        ref = encode_result(sim.run(algorithm_from_spec(algo.spec())))
        for mode, fed in feds.items():
            got = fed.fed.run(algo, dataset="data", timeout=PATIENCE)
            assert encode_result(got) == ref, (mode, algo.name)
            # and the replay of the round sums, through the same transport
            sid = fed.fed.last_study["study_id"]
            assert encode_result(fed.fed.result(sid, verify=True)) == ref, mode
    views = {mode: fed.fed.rounds(fed.fed.last_study["study_id"]) for mode, fed in feds.items()}
    assert [r["round_index"] for r in views["http"]] == [r["round_index"] for r in views["memory"]]
    catalogues = {mode: fed.fed.catalogue() for mode, fed in feds.items()}
    assert catalogues["http"] == catalogues["memory"]


def test_refusals_are_the_same_typed_errors_through_both_transports(federations):
    feds, _ = federations
    for mode, fed in feds.items():
        with pytest.raises(ValidationError, match="no enrolled node publishes a dataset"):
            fed.fed.submit(Mean(columns=("x1",)), dataset="nowhere")
        with pytest.raises(ProtocolError, match="404"):
            fed.fed.status("no-such-study")
        assert fed.fed.whoami() == {"role": "researcher", "name": "alice"}, mode


def test_an_unreachable_hub_is_a_typed_error():
    fed = RemoteFederation(transport=HttpResearcherTransport("http://127.0.0.1:1", "t"))
    try:
        with pytest.raises(HubUnreachable, match="cannot reach the hub"):
            fed.whoami()
    finally:
        fed.close()
