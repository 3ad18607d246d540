"""Start and stop a node agent as a real process (for the demo, benchmarks and tests)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from consortia._child import ChildProcess

__all__ = ["NodeProcess"]


class NodeProcess(ChildProcess):
    """A node running as ``python -m consortia.node --config FILE`` in a child process.

    Parameters
    ----------
    config
        Path of the node's TOML file (see :mod:`consortia.node.config`).
    enrol_token
        A one-time enrolment token; the node enrols on start unless already enrolled.
    log
        File to receive the node's output (default: discarded).
    process_group
        See :class:`consortia._child.ChildProcess` (0: lead a new group; a gid: join it).
    """

    def __init__(
        self,
        config: str | Path,
        *,
        enrol_token: str | None = None,
        log: str | Path | None = None,
        log_level: str = "warning",
        process_group: int | None = None,
    ) -> None:
        self.config = Path(config)
        self.enrol_token = enrol_token
        self.log_level = log_level
        super().__init__(log=log, process_group=process_group)

    def command(self) -> list[str]:
        """The command line that starts the node."""
        cmd = [sys.executable, "-m", "consortia.node", "--config", str(self.config)]
        # an enrolment token travels in the environment (CONSORTIA_ENROL_TOKEN), never on
        # the command line, which every local user can read
        return [*cmd, "--log-level", self.log_level]

    def start(self) -> NodeProcess:
        """Start the node (it enrols if needed, publishes its catalogue, then polls)."""
        if self.running:
            return self
        env = os.environ.copy()
        # large payloads: keep glibc from growing its mmap threshold (and the node's RSS),
        # as for the hub (HubProcess.start)
        env.setdefault("MALLOC_MMAP_THRESHOLD_", "1048576")
        env.pop("CONSORTIA_ENROL_TOKEN", None)
        if self.enrol_token:
            env["CONSORTIA_ENROL_TOKEN"] = self.enrol_token
        self._spawn(env)
        return self

    def wait_ready(self, timeout: float = 120.0) -> NodeProcess:
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
