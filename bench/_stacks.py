"""A small in-process sampling profiler for benchmark child processes (no py-spy needed).

    python bench/_stacks.py OUT CONTROL INTERVAL -m MODULE [ARGS...]

runs ``python -m MODULE ARGS`` with a daemon thread that, while the file ``CONTROL``
exists, takes every ``INTERVAL`` seconds the stack of every other thread
(``sys._current_frames``) and counts it, folded (``thread;outer;...;inner``, the
format of flamegraph tools).  Every second, and at exit, the counts are written to
``OUT`` (one ``stack count`` line each) after a first line
``# ticks T window W``: T ticks taken over W seconds (a stack's wall seconds are
``count / T * W``).

Wall-clock attribution: a thread blocked in C code that released the GIL (socket
reads, hashlib, SQLite, numpy loops) is sampled where it waits, so a stack's share
of the ticks is the share of wall time that thread spent there.  The sampler needs
the GIL for each tick: under GIL contention ticks are late, not lost, and the tick
count and the window's length are reported so that ``count / ticks`` is a share of
the window.
"""

from __future__ import annotations

import atexit
import os
import runpy
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from types import FrameType


def _where(filename: str) -> str:
    for marker in ("/site-packages/", "/src/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return Path(filename).name  # the standard library: its module's file


def _fold(frame: FrameType | None, name: str) -> str:
    parts = []
    while frame is not None:
        code = frame.f_code
        parts.append(f"{code.co_name} ({_where(code.co_filename)}:{frame.f_lineno})")
        frame = frame.f_back
    return ";".join([name.split(" (")[0], *reversed(parts)])


class _Sampler(threading.Thread):
    def __init__(self, out: Path, control: Path, interval: float) -> None:
        super().__init__(daemon=True, name="stack-sampler")
        self.out, self.control, self.interval = out, control, interval
        self.counts: Counter[str] = Counter()
        self.ticks = 0
        self.window = 0.0  # seconds sampled (ticks come late under load: not ticks * interval)
        self.lock = threading.Lock()

    def run(self) -> None:
        last_dump = time.monotonic()
        me = threading.get_ident()
        last = None
        while True:
            time.sleep(self.interval)
            now = time.monotonic()
            if not self.control.exists():
                last = None
            else:
                if last is not None:
                    self.window += now - last
                last = now
                names = {t.ident: t.name for t in threading.enumerate()}
                frames = sys._current_frames()
                with self.lock:
                    self.ticks += 1
                    for ident, frame in frames.items():
                        if ident != me:
                            self.counts[_fold(frame, names.get(ident, str(ident)))] += 1
            if time.monotonic() - last_dump > 1.0:
                self.dump()
                last_dump = time.monotonic()

    def dump(self) -> None:
        with self.lock:
            lines = [f"# ticks {self.ticks} window {self.window:.3f}"]
            lines += [f"{stack} {n}" for stack, n in self.counts.most_common()]
        tmp = self.out.with_suffix(".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        os.replace(tmp, self.out)


def main() -> None:
    out, control, interval, flag, module, *rest = sys.argv[1:]
    if flag != "-m":
        raise SystemExit(__doc__)
    sampler = _Sampler(Path(out), Path(control), float(interval))
    sampler.start()
    atexit.register(sampler.dump)
    sys.argv = [module, *rest]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
