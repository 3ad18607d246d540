"""One large secure round: a hub and N node processes on loopback, n float64 per node.

    python bench/large_round.py                       # N = 10, n = 25,000,000 (200 MB a node)
    python bench/large_round.py --nodes 4 --n 1000000 # quick
    python bench/large_round.py --profile DIR         # also where the time goes (see below)

Runs one study of one round of the trivial vector-sum algorithm (``VectorSum``: every
node contributes a deterministic vector of ``n`` float64, encoded in fixed point,
pairwise- and self-masked, posted as one binary frame, securely summed and unmasked
by the hub) over a hub (SQLite in WAL mode, plain HTTP on 127.0.0.1) and N node
agents, every one a separate process, as ``bench/round_latency.py`` does.

``round_s``: the hub's persisted round timestamps, ``finished_at - opened_at`` of the
round (open the round, wake the nodes, every node computes, encodes, masks and posts
its vector, the hub receives, adds and persists each, the nodes reveal their
self-mask seeds, the hub unmasks and stores the sum).

``cpu_floor_s``: the privacy layer's work for the same round measured alone in this
process before the federation starts, in CPU seconds (``time.process_time``), divided
by the number of cores: ``SecureSite.mask`` of each of the N sites (encoding and
N masks streams each), ``SecureAggregator.add`` N times, and ``finish`` (removing
the N self-masks and decoding).  Generating the sites' vectors is not counted.  The
sum is checked against the plain sum (``max_abs_err``).

``hub_peak_over_payload`` and ``node_peak_over_payload``: the resident memory of the
hub (and of the worst node) above its baseline (its RSS just before the study),
divided by one site's encoded payload (``n * 8`` bytes).  The peak is the larger of
an RSS sampled every 5 ms (psutil) and the kernel's high-water mark ``VmHWM`` read
after the round, reset before it (``/proc/PID/clear_refs``) where the kernel allows.

With ``--profile DIR`` every child runs under ``bench/_stacks.py`` (a sampling
profiler: folded stacks of every thread, while the round runs), the bench process
profiles the floor with cProfile, and a psutil timeline (RSS and CPU of every process
every 50 ms) is written; a summary of each is printed and the raw files kept in DIR.

The last line is::

    large_round nodes=10 n=25000000 round_s=<s> cpu_floor_s=<s> \
hub_peak_over_payload=<x> node_peak_over_payload=<x>

Targets (issue 8): ``round_s <= 1.5 * cpu_floor_s``; ``hub_peak_over_payload <= 2``;
``node_peak_over_payload <= 3``.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import itertools
import pstats
import sqlite3
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

from consortia.hub import HubProcess
from consortia.node import DatasetConfig, NodeConfig, NodeProcess
from consortia.node.identity import mutual_pins
from consortia.privacy import (
    MemoryLedger,
    RoundContext,
    SecureAggregator,
    SecureSite,
    SiteIdentity,
)
from consortia.privacy.policy import Policy
from consortia.sdk import connect
from consortia.testing import VectorSum, site_vector  # the vector each node sends

MB = 2**20
_CORES = psutil.cpu_count() or 1
_ROWS = 20  # rows of every node's table (VectorSum's vector depends on it)
_STACKS = Path(__file__).with_name("_stacks.py")


# ----------------------------------------------------------------------------- the floor


@dataclass
class Floor:
    mask_cpu_s: float
    add_cpu_s: float
    finish_cpu_s: float
    max_abs_err: float
    profile: str = ""

    @property
    def cpu_s(self) -> float:
        return self.mask_cpu_s + self.add_cpu_s + self.finish_cpu_s


def measure_floor(nodes: int, n: int, *, profile: bool) -> Floor:
    """Mask N sites' vectors, add them and unmask the sum, in this process (CPU seconds)."""
    ids = {f"n{i:02d}": SiteIdentity.generate() for i in range(nodes)}
    trusted = {k: v.identity_public for k, v in ids.items()}
    peers = tuple(v.peer_key(k) for k, v in ids.items())
    sites = [SecureSite(k, v, trusted=trusted, ledger=MemoryLedger()) for k, v in ids.items()]
    warm = RoundContext("warm-up", 0, 0, peers)
    for site in sites:  # key checks and agreement happen once per node, not per round
        site.mask(warm, {"v": np.zeros(8)})
    ctx = RoundContext("floor", 0, 0, peers)
    agg = SecureAggregator(ctx)
    prof = cProfile.Profile() if profile else None
    mask_s = add_s = 0.0
    for site in sites:
        arrays = {"v": site_vector(_ROWS, 0, n)}  # the algorithm's work: not counted
        if prof:
            prof.enable()
        t0 = time.process_time()
        masked = site.mask(ctx, arrays)
        t1 = time.process_time()
        agg.add(masked)
        t2 = time.process_time()
        if prof:
            prof.disable()
        mask_s, add_s = mask_s + t1 - t0, add_s + t2 - t1
        del masked, arrays
    seeds = {s.site: s.reveal(ctx) for s in sites}
    if prof:
        prof.enable()
    t0 = time.process_time()
    total = agg.finish(seeds, consume=True)["v"]
    finish_s = time.process_time() - t0
    if prof:
        prof.disable()
    expected = site_vector(_ROWS, 0, n)
    expected *= nodes
    err = float(np.max(np.abs(total - expected)))
    text = ""
    if prof:
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(12)
        text = buf.getvalue()
    return Floor(mask_s, add_s, finish_s, err, text)


# ----------------------------------------------------------------------------- memory


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


@dataclass
class _Track:
    proc: psutil.Process
    baseline: int
    hwm_ok: bool
    peak: int = 0
    timeline: list[tuple[float, int, float]] = field(default_factory=list)


class Sampler(threading.Thread):
    """Largest RSS of several processes (every ``interval`` s), and a coarser timeline."""

    def __init__(self, pids: dict[str, int], interval: float = 0.005, every: float = 0.05):
        super().__init__(daemon=True)
        self.tracks: dict[str, _Track] = {}
        for name, pid in pids.items():
            proc = psutil.Process(pid)
            base = proc.memory_info().rss
            self.tracks[name] = _Track(proc, base, _reset_hwm(pid), base)
        self.interval, self.every = interval, every
        self.t0 = time.monotonic()
        self._halt = threading.Event()

    def run(self) -> None:
        next_mark = 0.0
        while not self._halt.is_set():
            now = time.monotonic() - self.t0
            mark = now >= next_mark
            for t in self.tracks.values():
                with contextlib.suppress(psutil.Error):
                    rss = t.proc.memory_info().rss
                    t.peak = max(t.peak, rss)
                    if mark:
                        c = t.proc.cpu_times()
                        t.timeline.append((now, rss, c.user + c.system))
            if mark:
                next_mark = now + self.every
            self._halt.wait(self.interval)

    def threads_cpu(self, name: str) -> dict[int, float]:
        """CPU seconds (user + system) used so far by each thread of one process."""
        with contextlib.suppress(psutil.Error):
            return {t.id: t.user_time + t.system_time for t in self.tracks[name].proc.threads()}
        return {}

    def stop(self) -> dict[str, int]:
        """Stop; the peak above baseline of every process (bytes)."""
        self._halt.set()
        self.join(10)
        out = {}
        for name, t in self.tracks.items():
            hwm = _hwm(t.proc.pid) if t.hwm_ok else None
            out[name] = max(t.peak, hwm or 0) - t.baseline
        return out


# ----------------------------------------------------------------------------- federation


class _Profiled:
    """Mixin: run the child under ``bench/_stacks.py`` (sampling while CONTROL exists)."""

    stacks_out: Path | None = None
    stacks_control: Path | None = None

    def command(self) -> list[str]:
        cmd = super().command()  # type: ignore[misc]
        if self.stacks_out is None:
            return cmd
        assert cmd[1] == "-m", cmd
        return [
            cmd[0],
            str(_STACKS),
            str(self.stacks_out),
            str(self.stacks_control),
            "0.005",
            *cmd[1:],
        ]


class _Hub(_Profiled, HubProcess):
    pass


class _Node(_Profiled, NodeProcess):
    pass


class Federation:
    """A hub and ``n`` node processes with generous deadlines, each node a 20-row table."""

    def __init__(self, root: Path, n: int, payload: int, profile: Path | None) -> None:
        self.root, self.n, self.profile = root, n, profile
        root.mkdir(parents=True, exist_ok=True)
        self.db = root / "hub.sqlite"
        self.control = (profile or root) / "sampling.on"
        # the frame adds a small header to the payload; a loaded 2-core machine may
        # take minutes over ten 200 MB uploads: nobody is excluded for being slow
        self.hub = _Hub(
            self.db,
            node_timeout=3600,
            reveal_timeout=3600,
            max_payload=max(256 * MB, payload + MB),
            log=root / "hub.log",
        )
        if profile:
            self.hub.stacks_out, self.hub.stacks_control = profile / "hub.stacks", self.control
        self.nodes: list[_Node] = []

    def start(self) -> None:
        self.hub.start(timeout=120)
        names = [f"n{i:02d}" for i in range(self.n)]
        pins = mutual_pins({name: self.root / name for name in names})
        for name in names:
            csv = self.root / f"{name}.csv"
            pd.DataFrame({"x": np.arange(float(_ROWS))}).to_csv(csv, index=False)
            policy = Policy(allowed_algorithms=(VectorSum.name,), min_sites=min(3, self.n))
            cfg = NodeConfig(
                name=name,
                hub=self.hub.url,
                data_dir=self.root / name,
                datasets=(DatasetConfig(name="bench", path=csv, policy=policy),),
                poll_wait=60,  # the node's socket timeout is poll_wait + 30 s
                peers=pins[name],
            )
            token = self.hub.create_token("enrolment", name)
            node = _Node(
                cfg.write(self.root / f"{name}.toml"),
                enrol_token=token,
                log=self.root / f"{name}.log",
            )
            if self.profile:
                node.stacks_out, node.stacks_control = self.profile / f"{name}.stacks", self.control
            self.nodes.append(node.start())
        self.fed = connect(self.hub.url, self.hub.create_token("researcher", "bench"))
        end = time.monotonic() + 300
        while len(self.fed.catalogue()) < self.n:
            if time.monotonic() > end:
                raise RuntimeError("the nodes did not publish their catalogues in 300 s")
            if not all(n.running for n in self.nodes):
                raise RuntimeError(f"a node exited; see {self.root}")
            time.sleep(0.1)

    def pids(self) -> dict[str, int]:
        out = {"hub": self.hub.pid}
        out.update({f"n{i:02d}": node.pid for i, node in enumerate(self.nodes)})
        return {k: v for k, v in out.items() if v is not None}

    def round_times(self, study_id: str) -> tuple[float, float]:
        with contextlib.closing(sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)) as c:
            opened, finished = c.execute(
                "SELECT opened_at, finished_at FROM rounds WHERE study_id = ? AND round_index = 0",
                (study_id,),
            ).fetchone()
        return float(opened), float(finished)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.fed.close()
        for node in self.nodes:
            node.stop(timeout=30)
        self.hub.stop(timeout=60)


@dataclass
class RoundResult:
    round_s: float
    sdk_s: float
    peaks: dict[str, int]
    timeline: dict[str, list[tuple[float, int, float]]]
    t_submit: float
    max_abs_err: float
    hub_threads_cpu: dict[str, float]


def run_round(fed: Federation, n: int) -> RoundResult:
    fed.fed.wait(fed.fed.submit(VectorSum(size=10, rounds=1), dataset="bench"), timeout=600)
    sampler = Sampler(fed.pids())
    sampler.start()
    if fed.profile:
        fed.control.touch()
    t_submit = time.monotonic() - sampler.t0
    hub_pid = fed.hub.pid
    threads0 = sampler.threads_cpu("hub")
    t0 = time.perf_counter()
    try:
        study = fed.fed.submit(VectorSum(size=n, rounds=1), dataset="bench")
        st = fed.fed.wait(study, timeout=3600)
    finally:
        fed.control.unlink(missing_ok=True)
        threads1 = sampler.threads_cpu("hub")
        peaks = sampler.stop()
    sdk_s = time.perf_counter() - t0
    if st.status != "finished":
        raise RuntimeError(f"study {st.status}: {st.error}")
    opened, finished = fed.round_times(study)
    # the result is fetched apart (not round processing) and checked against the plain sum
    result = fed.fed.result(study)
    expected = site_vector(_ROWS, 0, n)
    expected *= fed.n
    err = float(np.max(np.abs(np.asarray(result.last) - expected)))
    # the event loop (receiving bodies) runs in the hub's main thread, whose id is its pid
    main = threads1.get(hub_pid or -1, 0.0) - threads0.get(hub_pid or -1, 0.0)
    others = sum(threads1.values()) - sum(threads0.values()) - main
    return RoundResult(
        finished - opened,
        sdk_s,
        peaks,
        {k: t.timeline for k, t in sampler.tracks.items()},
        t_submit,
        err,
        {"main": main, "others": others},
    )


# ----------------------------------------------------------------------------- profile output


_IDLE = ("select (selectors.py", "wait (threading.py", "run (_stacks.py")


def _summarise_stacks(path: Path, top: int = 16) -> str:
    """Where each kind of thread of a child spent the sampled window (folded stacks file).

    Inclusive wall seconds of the heaviest project, numpy, hashlib, sqlite and wire
    frames, summed over the threads (a frame counted once per stack); the idle frames
    (waiting on a selector, a lock or a queue) are left out.
    """
    if not path.exists():
        return f"  (no samples: {path.name} missing)"
    lines = path.read_text().splitlines()
    head = lines[0].split() if lines and lines[0].startswith("# ticks") else []
    ticks, window = (int(head[2]), float(head[4])) if head else (0, 0.0)
    if not ticks:
        return "  (no ticks)"
    per_tick = window / ticks
    inclusive: dict[str, int] = {}
    busy: dict[str, int] = {}
    for line in lines[1:]:
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        leaf = frames[-1]
        if any(i in leaf for i in _IDLE):
            continue
        busy[frames[0]] = busy.get(frames[0], 0) + int(count)
        for frame in dict.fromkeys(frames[1:]):
            inclusive[frame] = inclusive.get(frame, 0) + int(count)
    skip = ("run (", "_bootstrap", "_run_module", "<module>", "main (", "worker (", "__call__")
    keep = [
        (k, v)
        for k, v in sorted(inclusive.items(), key=lambda kv: -kv[1])
        if not any(k.startswith(s) for s in skip)
    ][:top]
    out = [f"  window={window:.2f} s ticks={ticks}; non-idle thread-seconds by thread: "]
    out[0] += ", ".join(f"{k}={v * per_tick:.2f}" for k, v in busy.items())
    out += [f"  {v * per_tick:7.2f} s  {k}" for k, v in keep]
    return "\n".join(out)


def _busy(timeline: list[tuple[float, int, float]], t_from: float) -> str:
    pts = [p for p in timeline if p[0] >= t_from]
    if len(pts) < 2:
        return "n/a"
    cpu = pts[-1][2] - pts[0][2]
    # first and last moments the process used CPU at more than a quarter of a core
    active = [b[0] for a, b in itertools.pairwise(pts) if (b[2] - a[2]) / (b[0] - a[0]) > 0.25]
    span = f"{active[0] - t_from:6.2f}..{active[-1] - t_from:6.2f} s" if active else "idle"
    peak = max(p[1] for p in pts)
    return f"cpu={cpu:6.2f} s busy={span} rss_max={peak / MB:7.1f} MB"


def write_profile(dirpath: Path, res: RoundResult, floor: Floor) -> None:
    with open(dirpath / "timeline.csv", "w") as fh:
        fh.write("process,t_s,rss_bytes,cpu_s\n")
        for name, pts in res.timeline.items():
            for t, rss, cpu in pts:
                fh.write(f"{name},{t - res.t_submit:.3f},{rss},{cpu:.3f}\n")
    (dirpath / "floor.pstats.txt").write_text(floor.profile)
    print("profile: floor (cProfile, bench process, by own time):")
    print("\n".join("  " + line for line in floor.profile.splitlines()[:40] if line.strip()))
    print("profile: per process, from submit (psutil timeline, 50 ms):")
    for name, pts in res.timeline.items():
        print(f"  {name:4s} {_busy(pts, res.t_submit)}")
    for name in res.timeline:
        print(f"profile: {name} (sampled stacks, inclusive wall seconds over all threads):")
        print(_summarise_stacks(dirpath / f"{name}.stacks"))


# ----------------------------------------------------------------------------- main


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--nodes", type=int, default=10)
    p.add_argument("--n", type=int, default=25_000_000, help="float64 per node")
    p.add_argument("--profile", type=Path, default=None, help="profile into this folder")
    a = p.parse_args()
    payload = a.n * 8
    if a.profile:
        a.profile = a.profile.resolve()
        a.profile.mkdir(parents=True, exist_ok=True)
    free = psutil.virtual_memory().available
    need = (a.nodes * 4 + 4) * payload
    if free < need:
        print(f"warning: {free / 2**30:.1f} GiB available, about {need / 2**30:.1f} GiB needed")
    floor = measure_floor(a.nodes, a.n, profile=a.profile is not None)
    floor_s = floor.cpu_s / _CORES
    print(
        f"floor nodes={a.nodes} n={a.n} cores={_CORES} mask_cpu_s={floor.mask_cpu_s:.3f} "
        f"add_cpu_s={floor.add_cpu_s:.3f} finish_cpu_s={floor.finish_cpu_s:.3f} "
        f"cpu_floor_s={floor_s:.3f} max_abs_err={floor.max_abs_err:.3g}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="large-round-") as tmp:
        fed = Federation(Path(tmp), a.nodes, payload, a.profile)
        try:
            fed.start()
            res = run_round(fed, a.n)
        finally:
            fed.stop()
        if a.profile:
            for log in Path(tmp).glob("*.log"):
                (a.profile / log.name).write_bytes(log.read_bytes())
    cpu = {k: t[-1][2] - t[0][2] if len(t) > 1 else 0.0 for k, t in res.timeline.items()}
    hub = res.peaks.pop("hub") / payload
    worst = max(res.peaks, key=lambda k: res.peaks[k])
    node = res.peaks[worst] / payload
    print(
        f"round nodes={a.nodes} n={a.n} payload_mb={payload / MB:.1f} round_s={res.round_s:.2f} "
        f"sdk_s={res.sdk_s:.2f} round_over_floor={res.round_s / floor_s:.2f} "
        f"max_abs_err={res.max_abs_err:.3g} hub_cpu_s={cpu['hub']:.2f} "
        f"node_cpu_s_max={max(v for k, v in cpu.items() if k != 'hub'):.2f} "
        f"hub_cpu_s_event_loop={res.hub_threads_cpu['main']:.2f} "
        f"hub_cpu_s_other_threads={res.hub_threads_cpu['others']:.2f} "
        f"load1={psutil.getloadavg()[0]:.1f} node_peaks_over_payload="
        + ",".join(f"{k}:{v / payload:.2f}" for k, v in sorted(res.peaks.items())),
        flush=True,
    )
    if a.profile:
        write_profile(a.profile, res, floor)
    sys.stdout.flush()
    print(
        f"large_round nodes={a.nodes} n={a.n} round_s={res.round_s:.2f} "
        f"cpu_floor_s={floor_s:.2f} hub_peak_over_payload={hub:.2f} "
        f"node_peak_over_payload={node:.2f}"
    )


if __name__ == "__main__":
    main()
