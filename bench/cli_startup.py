"""Start-up time of the command line: what every ``consortia`` call pays before it works.

Times, in fresh interpreter processes, interleaved so that a load burst on the
machine hits all three alike:

* ``help_s``: ``consortia --help``;
* ``study_help_s``: ``consortia study --help``;
* ``baseline_s``: ``python -c "import click"`` (an interpreter with the CLI's one
  mandatory library: the floor of any click program).

Each figure is the median of ``--repeat`` runs (after one warm-up run of each, so
that the file-system cache is warm for all three).  ``ratio`` is the slower help
over the baseline; the target is ``ratio <= 4``.

The CLI runs as ``python -m consortia`` (the code the ``consortia`` script runs,
and the checkout's when ``PYTHONPATH=src``).

Usage: ``python bench/cli_startup.py [--repeat 7]``
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "help": [sys.executable, "-m", "consortia", "--help"],
    "study_help": [sys.executable, "-m", "consortia", "study", "--help"],
    "baseline": [sys.executable, "-c", "import click"],
}


def _once(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="runs of each command")
    args = parser.parse_args()
    for argv in COMMANDS.values():  # warm-up: imports compiled, files cached
        _once(argv)
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.repeat):
        for name, argv in COMMANDS.items():
            times[name].append(_once(argv))
    med = {name: statistics.median(t) for name, t in times.items()}
    for name, t in times.items():
        runs = " ".join(f"{x:.3f}" for x in t)
        print(f"{name:>10}: median {med[name]:.3f} s  (runs: {runs})")
    ratio = max(med["help"], med["study_help"]) / med["baseline"]
    print(
        f"cli_startup help_s={med['help']:.3f} study_help_s={med['study_help']:.3f} "
        f"baseline_s={med['baseline']:.3f} ratio={ratio:.2f}"
    )


if __name__ == "__main__":
    main()
