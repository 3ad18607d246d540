"""``python -m consortia.hub [OPTIONS]``: serve a hub, the same as ``consortia hub start``.

The options are those of ``consortia hub start`` (``--help`` lists them): one command
line, defined once in :mod:`consortia.cli.hub`.
"""

from __future__ import annotations

from collections.abc import Sequence

from consortia.cli.hub import start

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> None:
    """Run ``consortia hub start`` with ``argv`` (default: ``sys.argv[1:]``)."""
    start.main(args=None if argv is None else list(argv), prog_name="python -m consortia.hub")


if __name__ == "__main__":
    main()
