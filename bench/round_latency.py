"""Round latency and hub memory: a hub and N node processes on loopback, 50 rounds each.

    python bench/round_latency.py                 # N = 10, 10 and 1,000,000 float64
    python bench/round_latency.py --rounds 10     # quicker
    python bench/round_latency.py --nodes 3 10 --sizes 10

Each configuration runs one study of the trivial ``testing.vector_sum`` algorithm
(every node contributes a vector of ``size`` float64 per round, masked and
securely summed) for ``--rounds`` rounds, over a hub (SQLite in WAL mode, plain
HTTP on 127.0.0.1) and N node agents, every one a separate process.

How latency is measured: from the **hub's persisted round timestamps** (the
``rounds`` table: ``opened_at`` when the hub opened the round, ``finished_at``
when the last seed of the round was in and the sum was written).  The latency of
round ``i`` is ``finished_at[i] - finished_at[i-1]`` (the whole cycle: open the
round, wake the nodes' long-polls, the nodes compute, mask and post, the hub
sums and commits, the nodes reveal their self-mask seeds, the hub unmasks);
round 0 is left out (it also carries the study's start).  The median is
reported, with its split into ``collect+reveal`` (``finished_at - opened_at``)
and the SDK's view (wall time of ``fed.run`` divided by the rounds).

Hub memory: the hub's resident set size is sampled every 5 ms (psutil) and its
kernel high-water mark (``VmHWM``) is read right after the study, having been
reset (``/proc/PID/clear_refs``) before it when the kernel allows; the peak is the
larger of the two.  The baseline is the hub's RSS just before the study; the
payload is ``size * 8`` bytes.  ``hub_peak_mb_fetching_result`` is the high-water
mark while the SDK then downloads the study's round sums (reset at the RSS left by
the study, so it includes memory the study left allocated).

Also printed per run, to show where the time goes: the CPU time (user + system)
the hub and each node used per round (psutil), and the SDK's requests per round
(its status long-poll); and, for the largest N, the hub CPU and client wall time
of single requests on an idle hub (``request_cost``: ``/healthz``, an
authenticated ``/v1/whoami``, a study status, an empty node task poll).  On a
small machine the round latency is bounded below by ``(hub CPU + N * node CPU) /
cores``, printed as ``cpu_floor_ms`` (with every process on the same machine, as
here; the hub's own CPU per round is a floor too, its requests being served one
at a time).  For a sampling profile of the hub or a node during a run, attach
``py-spy record -p PID --gil -f raw`` to its process (not a dependency of consortia).

The last line is (for the largest N; ``cpu_floor_ms`` is that of the small run,
measured in the same run as ``small_ms``)::

    round_latency nodes=10 small_ms=<median> cpu_floor_ms=<floor> large_ms=<median> \
hub_peak_mb=<peak RSS MB>

Targets (issue 8): ``small_ms <= 1.2 * cpu_floor_ms`` and no worse than 36 ms; the
hub's peak memory within a few payloads of its baseline, not N of them.
"""

from __future__ import annotations

import argparse
import contextlib
import sqlite3
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import psutil

from consortia.hub import HubProcess
from consortia.node import DatasetConfig, NodeConfig, NodeProcess
from consortia.node.identity import mutual_pins
from consortia.privacy.policy import Policy
from consortia.sdk import connect
from consortia.testing.vector_sum import VectorSum

MB = 2**20
_CORES = psutil.cpu_count() or 1


@dataclass
class RunResult:
    nodes: int
    size: int
    rounds: int
    median_ms: float
    p90_ms: float
    collect_reveal_ms: float
    sdk_ms: float
    baseline_mb: float
    peak_mb: float
    hwm_mb: float | None
    hub_cpu_ms: float
    node_cpu_ms: float
    sdk_requests: float
    result_peak_mb: float | None


class _Sampler(threading.Thread):
    """Largest RSS of a process, sampled every ``interval`` seconds."""

    def __init__(self, pid: int, interval: float = 0.005) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            with contextlib.suppress(psutil.Error):
                self.peak = max(self.peak, self.proc.memory_info().rss)
            self._halt.wait(self.interval)

    def stop(self) -> int:
        self._halt.set()
        self.join(5)
        return self.peak


def _reset_hwm(pid: int) -> bool:
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _hwm(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _round_times(db: Path, study_id: str) -> tuple[np.ndarray, np.ndarray]:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as c:
        rows = c.execute(
            "SELECT opened_at, finished_at FROM rounds WHERE study_id = ? ORDER BY round_index",
            (study_id,),
        ).fetchall()
    arr = np.asarray(rows, dtype=float)
    return arr[:, 0], arr[:, 1]


class Federation:
    """A hub and ``n`` node processes, each node holding a 20-row table."""

    def __init__(self, root: Path, n: int) -> None:
        self.root, self.n = root, n
        root.mkdir(parents=True, exist_ok=True)
        self.db = root / "hub.sqlite"
        self.hub = HubProcess(
            self.db, node_timeout=120, reveal_timeout=120, max_payload=64 * MB, log=root / "hub.log"
        )
        self.nodes: list[NodeProcess] = []

    def start(self) -> None:
        self.hub.start(timeout=60)
        names = [f"n{i:02d}" for i in range(self.n)]
        pins = mutual_pins({name: self.root / name for name in names})  # owners trust each other
        for name in names:
            csv = self.root / f"{name}.csv"
            pd.DataFrame({"x": np.arange(20.0)}).to_csv(csv, index=False)
            policy = Policy(allowed_algorithms=(VectorSum.name,), min_sites=3)
            cfg = NodeConfig(
                name=name,
                hub=self.hub.url,
                data_dir=self.root / name,
                datasets=(DatasetConfig(name="bench", path=csv, policy=policy),),
                poll_wait=20,
                peers=pins[name],
            )
            token = self.hub.create_token("enrolment", name)
            node = NodeProcess(cfg.write(self.root / f"{name}.toml"), enrol_token=token)
            self.nodes.append(node.start())
        self.researcher = self.hub.create_token("researcher", "bench")
        self.fed = connect(self.hub.url, self.researcher)
        end = time.monotonic() + 120
        while len(self.fed.catalogue()) < self.n:
            if time.monotonic() > end:
                raise RuntimeError("the nodes did not publish their catalogues in 120 s")
            if not all(n.running for n in self.nodes):
                raise RuntimeError(f"a node exited; see {self.root}")
            time.sleep(0.05)

    def run(self, size: int, rounds: int) -> RunResult:
        pid = self.hub.pid
        assert pid is not None
        baseline = psutil.Process(pid).memory_info().rss
        hwm_ok = _reset_hwm(pid)
        sampler = _Sampler(pid)
        sampler.start()
        cpu0 = self._cpu()
        calls = [0]
        # count the SDK's requests (its status long-poll wakes on every hub change)
        http = self.fed.transport._http  # the HTTP transport's httpx client
        http.event_hooks["request"] = [lambda request: calls.__setitem__(0, calls[0] + 1)]
        t0 = time.perf_counter()
        try:
            study = self.fed.submit(VectorSum(size=size, rounds=rounds), dataset="bench")
            st = self.fed.wait(study, timeout=600)
        finally:
            peak = sampler.stop()
        wall = time.perf_counter() - t0
        cpu1 = self._cpu()
        hwm = _hwm(pid) if hwm_ok else None
        if st.status != "finished":
            raise RuntimeError(f"study {st.status}: {st.error}")
        # fetching the result is measured apart: it is not round processing
        result_hwm_ok = _reset_hwm(pid)
        result = self.fed.result(study)
        result_peak = _hwm(pid) if result_hwm_ok else None
        assert result.rounds == rounds
        opened, finished = _round_times(self.db, study)
        cycle = np.diff(finished) * 1e3
        return RunResult(
            nodes=self.n,
            size=size,
            rounds=rounds,
            median_ms=float(np.median(cycle)) if len(cycle) else float("nan"),
            p90_ms=float(np.percentile(cycle, 90)) if len(cycle) else float("nan"),
            collect_reveal_ms=float(np.median(finished - opened) * 1e3),
            sdk_ms=wall * 1e3 / rounds,
            baseline_mb=baseline / MB,
            peak_mb=max(peak, hwm or 0) / MB,
            hwm_mb=None if hwm is None else hwm / MB,
            hub_cpu_ms=(cpu1[0] - cpu0[0]) * 1e3 / rounds,
            node_cpu_ms=(cpu1[1] - cpu0[1]) * 1e3 / rounds / self.n,
            sdk_requests=calls[0] / rounds,
            result_peak_mb=None if result_peak is None else result_peak / MB,
        )

    def _cpu(self) -> tuple[float, float]:
        """CPU seconds (user + system) used so far by the hub and by all nodes."""

        def cpu(pid: int | None) -> float:
            t = psutil.Process(pid).cpu_times()
            return t.user + t.system

        nodes = sum(cpu(n.proc.pid) for n in self.nodes if n.proc is not None)
        return cpu(self.hub.pid), nodes

    def request_costs(self, count: int = 300) -> dict[str, tuple[float, float]]:
        """Hub CPU ms and client wall ms per request, for a few request kinds (idle hub)."""
        from consortia.node.identity import read_private

        pid = self.hub.pid
        researcher = self.researcher
        node_cred = read_private(self.root / "n00" / "credential").decode()
        study = self.fed.submit(VectorSum(size=10, rounds=1), dataset="bench")
        self.fed.wait(study, timeout=60)
        probes = {
            "healthz": ("/healthz", None),
            "whoami": ("/v1/whoami", researcher),
            "study_status": (f"/v1/studies/{study}", researcher),
            "node_tasks_poll": ("/v1/node/tasks?wait=0", node_cred),
        }
        out = {}
        with httpx.Client(base_url=self.hub.url, timeout=30) as client:
            for name, (path, token) in probes.items():
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                assert client.get(path, headers=headers).status_code == 200, name
                before = psutil.Process(pid).cpu_times()
                t0 = time.perf_counter()
                for _ in range(count):
                    client.get(path, headers=headers)
                wall = time.perf_counter() - t0
                after = psutil.Process(pid).cpu_times()
                cpu = (after.user + after.system) - (before.user + before.system)
                out[name] = (cpu * 1e3 / count, wall * 1e3 / count)
        return out

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.fed.close()
        for n in self.nodes:
            n.stop(timeout=10)
        self.hub.stop(timeout=30)


def _floor_ms(r: RunResult) -> float:
    """``(hub CPU + N * node CPU per round) / cores``: the latency bound on this machine."""
    return (r.hub_cpu_ms + r.nodes * r.node_cpu_ms) / _CORES


def _line(r: RunResult) -> str:
    payload = r.size * 8 / MB
    # in payloads only where a payload is large enough for the ratio to mean something
    ratio = f"{(r.peak_mb - r.baseline_mb) / payload:6.2f}" if payload >= 1 else "   n/a"
    return (
        f"nodes={r.nodes:<3d} floats={r.size:<8d} payload_mb={payload:8.3f} rounds={r.rounds} "
        f"median_ms={r.median_ms:8.2f} p90_ms={r.p90_ms:8.2f} "
        f"collect_reveal_ms={r.collect_reveal_ms:8.2f} sdk_ms_per_round={r.sdk_ms:8.2f} "
        f"hub_cpu_ms_per_round={r.hub_cpu_ms:7.2f} node_cpu_ms_per_round={r.node_cpu_ms:7.2f} "
        f"cpu_floor_ms={_floor_ms(r):7.2f} "
        f"sdk_requests_per_round={r.sdk_requests:5.1f} "
        f"hub_baseline_mb={r.baseline_mb:6.1f} hub_peak_mb={r.peak_mb:6.1f} "
        f"peak_over_baseline_payloads={ratio} "
        f"hub_peak_mb_fetching_result={r.result_peak_mb or float('nan'):6.1f}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--nodes", type=int, nargs="+", default=[10])
    p.add_argument("--sizes", type=int, nargs="+", default=[10, 1_000_000])
    p.add_argument("--rounds", type=int, default=50)
    a = p.parse_args()
    results: dict[tuple[int, int], RunResult] = {}
    with tempfile.TemporaryDirectory(prefix="round-latency-") as tmp:
        for n in a.nodes:
            fed = Federation(Path(tmp) / f"n{n}", n)
            try:
                fed.start()
                fed.run(10, 3)  # warm-up: imports, key agreement, first-use caches
                for size in a.sizes:
                    r = fed.run(size, a.rounds)
                    results[(n, size)] = r
                    print(_line(r), flush=True)
                if n == max(a.nodes):
                    costs = fed.request_costs()
                    print(
                        f"request_cost nodes={n} (hub CPU ms / client wall ms per request, idle "
                        "hub, keep-alive): "
                        + " ".join(f"{k}={c:.2f}/{w:.2f}" for k, (c, w) in costs.items()),
                        flush=True,
                    )
            finally:
                fed.stop()
    n = max(a.nodes)
    small, large = results.get((n, min(a.sizes))), results.get((n, max(a.sizes)))
    if small is None or large is None:
        return
    print(
        f"round_latency nodes={n} small_ms={small.median_ms:.2f} "
        f"cpu_floor_ms={_floor_ms(small):.2f} "
        f"large_ms={large.median_ms:.2f} hub_peak_mb={large.peak_mb:.1f}"
    )


if __name__ == "__main__":
    main()
