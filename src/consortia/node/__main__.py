"""``python -m consortia.node --config node.toml [--enrol-token T]``: run a node agent."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence

from consortia.errors import ConsortiaError
from consortia.node.agent import NodeAgent
from consortia.node.config import load_config


def main(argv: Sequence[str] | None = None) -> int:
    """Run the node until SIGTERM/SIGINT; enrol first if a token is given and not enrolled."""
    p = argparse.ArgumentParser(prog="python -m consortia.node")
    p.add_argument("--config", required=True)
    p.add_argument("--enrol-token")
    p.add_argument("--log-level", default="warning")
    a = p.parse_args(argv)
    logging.basicConfig(level=a.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    try:
        agent = NodeAgent(load_config(a.config))
        if a.enrol_token and not (agent.config.data_dir / "credential").exists():
            agent.enrol(a.enrol_token)
    except ConsortiaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    def _stop(*_: object) -> None:
        agent.stop()
        # interrupt a long-poll or a waiting answer; database writes are transactions and
        # a contribution not acknowledged is sent again (the same vector) after a restart
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        agent.run()
    except SystemExit:
        pass
    except ConsortiaError as exc:  # a dataset that breaks its schema, a refused credential...
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        agent.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
