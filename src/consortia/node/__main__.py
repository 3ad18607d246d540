"""``python -m consortia.node --config node.toml [--enrol-token-file F]``: run a node agent.

The same command as ``consortia node start`` (``--help`` lists its options): one
command line, defined once in :mod:`consortia.cli.node`.
"""

from __future__ import annotations

from collections.abc import Sequence

from consortia.cli.node import start

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> None:
    """Run ``consortia node start`` with ``argv`` (default: ``sys.argv[1:]``)."""
    start.main(args=None if argv is None else list(argv), prog_name="python -m consortia.node")


if __name__ == "__main__":
    main()
