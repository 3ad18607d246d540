"""Node faults with real processes: kill -9 mid-study, exclusion, restart, too few survivors."""

from __future__ import annotations

import signal
import time

import numpy as np
import pytest
from netutil import NETWORK_TEST_TIMEOUT, PATIENCE, start_federation, wait_until

from consortia import Simulation
from consortia.errors import PolicyError
from consortia.testing.vector_sum import VectorSum

pytestmark = pytest.mark.timeout(NETWORK_TEST_TIMEOUT)


@pytest.fixture(scope="module")
def hub_db(tmp_path_factory):
    """The hub on SQLite only: these tests kill and restart nodes, whose state is
    their own.
    The hub's PostgreSQL store runs the same state machine in tests/hub (engine,
    recovery, finishing) and over the network in test_network_federation.py.
    """
    return str(tmp_path_factory.mktemp("hubdb") / "hub.sqlite")


@pytest.fixture(scope="module")
def fed4(hub_db, tmp_path_factory):
    """Four nodes (policy min_sites 3) behind a hub that excludes a silent node after 15 s.

    Short enough for the tests to exclude a killed node quickly, long enough that an
    honest node on a loaded machine (the suite run twice at once) is not excluded.
    A node silent 15 s at the reveal is lost and its seed rebuilt from the others' shares.
    """
    f = start_federation(
        tmp_path_factory.mktemp("fed4"),
        hub_db,
        n_nodes=4,
        node_timeout=15.0,
        reveal_timeout=15.0,
        restricted=False,
    )
    yield f
    f.stop()


def kill_between_rounds(f, sid: str, victims: list[str], timeout: float = PATIENCE) -> None:
    """``kill -9`` the victims at a moment when none has sent its vector for the open attempt.

    A node that dies after sending its masked vector but before revealing its self-mask
    seed stalls the round until it restarts (its ledger lets it reveal then): secure
    aggregation cannot finish a sum without that seed.  The victims are frozen with
    SIGSTOP, the hub's state is read, and they are killed only if that state is safe.
    """
    end = time.monotonic() + timeout
    procs = [f.nodes[v].proc for v in victims]
    while time.monotonic() < end:
        for p in procs:
            p.send_signal(signal.SIGSTOP)
        time.sleep(0.2)  # let a request already on the wire land
        cur = f.fed.status(sid).raw.get("current") or {}
        if cur.get("phase") == "collect" and not set(victims) & set(cur.get("received", [])):
            for v in victims:
                f.nodes[v].kill()
            return
        for p in procs:
            p.send_signal(signal.SIGCONT)
        time.sleep(0.05)
    raise AssertionError("no safe moment to kill the victims")


def kill_after_its_vector(f, sid: str, victim: str, timeout: float = PATIENCE) -> int:
    """``kill -9`` the victim after the hub holds its vector and before it revealed its seed.

    Every node is frozen (SIGSTOP) and the hub's state read: if the open attempt is
    still collecting, holds the victim's vector and waits for another node's, the
    victim cannot have revealed (the reveal opens with the last vector).  It is killed
    there; the others resume.  Returns the round it died in.
    """
    end = time.monotonic() + timeout
    procs = [n.proc for n in f.nodes.values()]
    while time.monotonic() < end:
        for p in procs:
            p.send_signal(signal.SIGSTOP)
        time.sleep(0.2)  # let a request already on the wire land
        cur = f.fed.status(sid).raw.get("current") or {}
        received = set(cur.get("received", []))
        if cur.get("phase") == "collect" and victim in received and len(received) < len(procs):
            f.nodes[victim].kill()
            for name, node in f.nodes.items():
                if name != victim:
                    node.proc.send_signal(signal.SIGCONT)
            return int(cur["round_index"])
        for p in procs:
            p.send_signal(signal.SIGCONT)
        time.sleep(0.05)
    raise AssertionError("no moment between the victim's vector and its reveal")


def _rounds_done(f, sid: str, n: int):
    """A wait predicate: ``n`` rounds done; fails at once, with the reason, if the study ended."""

    def done() -> bool:
        st = f.fed.status(sid)
        if st.status != "running":
            raise AssertionError(f"the study ended early ({st.status}): {st.error}")
        return st.rounds_done >= n

    return done


def _restart_dead(f) -> None:
    for node in f.nodes.values():
        if not node.running:
            node.start()
    for node in f.nodes.values():
        node.wait_ready(PATIENCE)


def test_node_kill_9_mid_study_completes_with_the_survivors(fed4):
    # enough rounds that a safe moment to kill (victim frozen before sending) comes up
    # well before the study ends, even on a loaded machine
    n_rounds = 80
    algo = VectorSum(size=5, rounds=n_rounds)
    sid = fed4.fed.submit(algo, dataset="data")
    victim = "site2"
    try:
        wait_until(_rounds_done(fed4, sid, 2), PATIENCE, "two rounds")
        kill_between_rounds(fed4, sid, [victim])
        st = fed4.fed.wait(sid, timeout=PATIENCE)
    finally:
        _restart_dead(fed4)
    assert st.status == "finished", st.error
    assert victim not in st.participants and len(st.participants) == 3
    rounds = fed4.fed.rounds(sid, limit=1000)
    assert [r["round_index"] for r in rounds] == list(range(n_rounds))
    first_without = next(r["round_index"] for r in rounds if victim not in r["participants"])
    assert first_without >= 2
    assert rounds[first_without]["attempt"] >= 1  # re-run among the survivors, fresh masks
    got = fed4.fed.result(sid)
    sim = Simulation(fed4.sites(), fail=lambda site, r, a: site == victim and r >= first_without)
    ref = sim.run(algo)
    np.testing.assert_allclose(got.checksums, ref.checksums, rtol=0, atol=1e-12)
    np.testing.assert_allclose(got.last, ref.last, rtol=0, atol=1e-12)


def test_node_kill_9_between_its_vector_and_its_reveal_is_recovered(fed4):
    """Liveness at the reveal: the survivors' seed shares finish the round with its vector."""
    _restart_dead(fed4)
    n_rounds = 80
    # a query of its own: the nodes refuse one answered before over another set of sites
    algo = VectorSum(size=7, rounds=n_rounds)
    sid = fed4.fed.submit(algo, dataset="data")
    victim = "site1"
    try:
        wait_until(_rounds_done(fed4, sid, 1), PATIENCE, "one round")
        died = kill_after_its_vector(fed4, sid, victim)
        st = fed4.fed.wait(sid, timeout=PATIENCE)
    finally:
        _restart_dead(fed4)
    assert st.status == "finished", st.error
    assert victim not in st.participants and len(st.participants) == 3
    rounds = fed4.fed.rounds(sid, limit=1000)
    assert [r["round_index"] for r in rounds] == list(range(n_rounds))
    # the round it died in kept its vector (one attempt, all four), later ones are without it
    assert victim in rounds[died]["participants"] and rounds[died]["attempt"] == 0
    assert all(victim not in r["participants"] for r in rounds[died + 1 :])
    got = fed4.fed.result(sid, verify=True)
    sim = Simulation(
        fed4.sites(),
        fail=lambda site, r, a: site == victim and r > died,
        fail_at_reveal=lambda site, r, a: site == victim and r == died,
    )
    ref = sim.run(algo)
    np.testing.assert_array_equal(got.checksums, ref.checksums)
    np.testing.assert_array_equal(got.last, ref.last)


def test_too_few_survivors_fail_the_study_with_the_min_sites_rule(fed4):
    _restart_dead(fed4)  # the nodes killed by the previous test are back
    sid = fed4.fed.submit(VectorSum(size=3, rounds=50), dataset="data")
    try:
        wait_until(_rounds_done(fed4, sid, 1), PATIENCE, "one round")
        kill_between_rounds(fed4, sid, ["site0", "site1"])
        st = fed4.fed.wait(sid, timeout=PATIENCE)
    finally:
        _restart_dead(fed4)
    assert st.status == "failed"
    assert st.error_rule == "min_sites"
    with pytest.raises(PolicyError, match="min_sites"):
        fed4.fed.result(sid)


def test_restarted_node_picks_its_work_up(fed4):
    """A node killed and restarted before its timeout answers the same task (no exclusion)."""
    _restart_dead(fed4)
    algo = VectorSum(size=4, rounds=6)
    # the hub excludes a silent node after 15 s: restart at once
    sid = fed4.fed.submit(algo, dataset="data")
    wait_until(_rounds_done(fed4, sid, 1), PATIENCE, "one round")
    fed4.nodes["site3"].kill()
    fed4.nodes["site3"].start()
    st = fed4.fed.wait(sid, timeout=PATIENCE)
    assert st.status == "finished", st.error
    got = fed4.fed.result(sid)
    rounds = fed4.fed.rounds(sid)
    first_without = next(
        (r["round_index"] for r in rounds if "site3" not in r["participants"]), None
    )
    sim = Simulation(
        fed4.sites(),
        fail=lambda site, r, a: (
            first_without is not None and site == "site3" and r >= first_without
        ),
    )
    np.testing.assert_allclose(got.checksums, sim.run(algo).checksums, rtol=0, atol=1e-12)
