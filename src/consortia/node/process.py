"""Start and stop a node agent as a real process (for the demo, benchmarks and tests)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

__all__ = ["NodeProcess"]


class NodeProcess:
    """A node running as ``python -m consortia.node --config FILE`` in a child process.

    Parameters
    ----------
    config
        Path of the node's TOML file (see :mod:`consortia.node.config`).
    enrol_token
        A one-time enrolment token; the node enrols on start unless already enrolled.
    log
        File to receive the node's output (default: discarded).
    """

    def __init__(
        self,
        config: str | Path,
        *,
        enrol_token: str | None = None,
        log: str | Path | None = None,
        log_level: str = "warning",
    ) -> None:
        self.config = Path(config)
        self.enrol_token = enrol_token
        self.log = Path(log) if log else None
        self.log_level = log_level
        self.proc: subprocess.Popen | None = None
        self._log_fh: IO[bytes] | None = None

    def command(self) -> list[str]:
        """The command line that starts the node."""
        cmd = [sys.executable, "-m", "consortia.node", "--config", str(self.config)]
        if self.enrol_token:
            cmd += ["--enrol-token", self.enrol_token]
        return [*cmd, "--log-level", self.log_level]

    def start(self) -> NodeProcess:
        """Start the node (it enrols if needed, publishes its catalogue, then polls)."""
        if self.proc is not None and self.proc.poll() is None:
            return self
        out = subprocess.DEVNULL
        if self.log is not None:
            self._log_fh = open(self.log, "ab")  # noqa: SIM115 - closed in stop()
            out = self._log_fh
        self.proc = subprocess.Popen(self.command(), stdout=out, stderr=out, env=os.environ.copy())
        return self

    def wait_ready(self, timeout: float = 30.0) -> NodeProcess:
        """Wait until the node has enrolled, published its catalogue and is polling.

        Raises
        ------
        ConsortiaError
            If the process exited or ``timeout`` seconds passed first.
        """
        from consortia.errors import ConsortiaError
        from consortia.node.config import load_config

        marker = load_config(self.config).data_dir / "agent.pid"
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc is None or self.proc.poll() is not None:
                code = None if self.proc is None else self.proc.returncode
                raise ConsortiaError(f"node {self.config} is not running (exit code {code})")
            try:
                if marker.read_text().strip() == str(self.proc.pid):
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        raise ConsortiaError(f"node {self.config} was not ready within {timeout:g}s")

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """``kill -9`` the node and reap it."""
        if self.running:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop gracefully (SIGTERM), killing after ``timeout`` seconds."""
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

    def __enter__(self) -> NodeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
