"""A child process with a log file, graceful stop and ``kill -9`` (hub and node wrappers)."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

__all__ = ["ChildProcess"]


class ChildProcess:
    """Base of :class:`~consortia.hub.HubProcess` and :class:`~consortia.node.NodeProcess`.

    Parameters
    ----------
    log
        File that receives the child's stdout and stderr (default: discarded).
    process_group
        Passed to :class:`subprocess.Popen`: 0 makes the child lead a new process
        group, a group id makes it join that group (so one ``killpg`` reaches every
        process of a federation started together, and a Ctrl-C at the terminal
        reaches only the parent, which then stops them in order).
    """

    def __init__(self, *, log: str | Path | None = None, process_group: int | None = None) -> None:
        self.log = Path(log) if log else None
        self.process_group = process_group
        self.proc: subprocess.Popen | None = None
        self._log_fh: IO[bytes] | None = None

    def command(self) -> list[str]:
        """The command line that starts the child."""
        raise NotImplementedError

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The process id, once started."""
        return self.proc.pid if self.proc is not None else None

    def _spawn(self, env: Mapping[str, str] | None = None) -> None:
        out: Any = subprocess.DEVNULL
        if self.log is not None:
            self._log_fh = open(self.log, "ab")  # noqa: SIM115 - closed in stop()
            out = self._log_fh
        environ = dict(os.environ if env is None else env)
        self.proc = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=environ,
            process_group=self.process_group,
        )

    def kill(self) -> None:
        """``kill -9`` the process (a crash, for tests) and reap it."""
        if self.running:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop gracefully (SIGTERM), killing the process after ``timeout`` seconds."""
        if self.running:
            assert self.proc is not None
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None

    def start(self) -> Any:  # subclasses return themselves
        raise NotImplementedError

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
