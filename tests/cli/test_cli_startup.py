"""Every CLI call pays for what ``consortia`` imports before a command runs: keep it small."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("numpy", "pandas", "sqlalchemy", "fastapi", "httpx", "rich", "cryptography", "scipy")

_PROBE = """
import json, sys
from consortia.cli import main
for args in (["--help"], ["hub", "--help"], ["node", "--help"], ["study", "--help"],
             ["audit", "--help"], ["token", "--help"], ["certs", "--help"]):
    try:
        main(args, standalone_mode=False)
    except SystemExit:
        pass
print(json.dumps(sorted(m for m in %r if m in sys.modules)))
"""


def test_help_loads_no_heavy_library() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE % (HEAVY,)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded == [], f"`consortia --help` imported {loaded}"
    assert "study" in out.stdout and "Commands" in out.stdout


def test_the_package_names_load_on_first_use() -> None:
    import consortia

    assert consortia.Simulation.__name__ == "Simulation"
    assert "connect" in dir(consortia)
    try:
        consortia.no_such_name  # noqa: B018
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("an unknown name must raise AttributeError")
