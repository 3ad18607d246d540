"""Algorithms registered through the ``consortia.algorithms`` entry point group.

Each test installs a real distribution (a ``*.dist-info`` folder with ``METADATA`` and
``entry_points.txt``, and its modules) in a folder put on ``sys.path``: what ``pip
install`` of a separate package leaves behind.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap
import tomllib
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from consortia import Simulation, registry
from consortia.errors import AlgorithmEntryPointWarning, UnknownAlgorithmError
from consortia.protocol import algorithm_from_spec, get_algorithm, registered_algorithms
from consortia.stats import Mean

ROOT = Path(__file__).resolve().parents[1]

PLUGIN = '''
from dataclasses import dataclass

import numpy as np

from consortia.protocol import Algorithm, Contribution, Round, register


@register
@dataclass(frozen=True, kw_only=True)
class ColumnTotal(Algorithm):
    """The total of one column over the sites."""

    name = "lab.column_total"
    column: str = "y"

    def coordinate(self):
        sums = yield Round("total", {})
        return float(sums["total"][0])

    def local(self, step, public, data):
        x = data.frame[self.column].to_numpy(dtype=float)
        return Contribution({"total": np.array([x.sum()])}, cohort=len(x))
'''

UNREGISTERED = '''
from dataclasses import dataclass

import numpy as np

from consortia.protocol import Algorithm, Contribution, Round


@dataclass(frozen=True, kw_only=True)
class RowCount(Algorithm):
    """The number of rows over the sites (registered by its entry point, no decorator)."""

    name = "lab.row_count"

    def coordinate(self):
        sums = yield Round("count", {})
        return int(round(float(sums["n"][0])))

    def local(self, step, public, data):
        return Contribution({"n": np.array([float(len(data.frame))])}, cohort=len(data.frame))
'''


def _install_metadata(site: Path, dist: str, entry_points: dict[str, str]) -> Path:
    """Write ``dist``'s ``*.dist-info`` (METADATA, entry_points.txt) into ``site``."""
    info = site / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    lines = [f"{name} = {value}" for name, value in entry_points.items()]
    (info / "entry_points.txt").write_text("[consortia.algorithms]\n" + "\n".join(lines) + "\n")
    return site


@pytest.fixture
def install(tmp_path, monkeypatch):
    """``install(dist, entry_points, modules)``: a distribution on ``sys.path``.

    The registry's state and the modules imported are restored afterwards.
    """
    registered_algorithms()  # the registry as loaded from this process's path, restored after
    saved = (dict(registry._REGISTRY), dict(registry._FAILED), registry._loaded)
    before = set(sys.modules)
    site = tmp_path / "site-packages"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))

    def _install(dist: str, entry_points: dict[str, str], modules: dict[str, str]) -> None:
        _install_metadata(site, dist, entry_points)
        for dotted, source in modules.items():
            path = site.joinpath(*dotted.split(".")).with_suffix(".py")
            path.parent.mkdir(parents=True, exist_ok=True)
            for parent in path.relative_to(site).parents:
                if parent != Path("."):
                    (site / parent / "__init__.py").touch()
            path.write_text(textwrap.dedent(source))
        importlib.invalidate_caches()

    yield _install
    registry._REGISTRY.clear()
    registry._REGISTRY.update(saved[0])
    registry._FAILED.clear()
    registry._FAILED.update(saved[1])
    registry._loaded = saved[2]
    for name in set(sys.modules) - before:
        if name.startswith("labplugin"):
            del sys.modules[name]


def _sites() -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(3)
    return {f"s{i}": pd.DataFrame({"y": rng.normal(size=20 + i)}) for i in range(3)}


def test_a_separate_package_registers_its_algorithms(install):
    with pytest.raises(UnknownAlgorithmError):
        get_algorithm("lab.column_total")
    install(
        "lab-plugin",
        {
            "lab": "labplugin.algorithms",
            "lab.row_count": "labplugin.unregistered:RowCount",
        },
        {"labplugin.algorithms": PLUGIN, "labplugin.unregistered": UNREGISTERED},
    )
    with warnings.catch_warnings():  # a process that looked algorithms up before: reload
        warnings.simplefilter("error", AlgorithmEntryPointWarning)
        registry.reload_entry_points()
    total = get_algorithm("lab.column_total")
    assert total.__module__ == "labplugin.algorithms"
    assert get_algorithm("lab.row_count").__module__ == "labplugin.unregistered"
    names = registered_algorithms()
    assert {"lab.column_total", "lab.row_count", "stats.mean", "survival.cox"} <= set(names)
    sites = _sites()
    # through the whole runtime: spec, sites, secure sum; the reference from the raw data
    algo = algorithm_from_spec({"name": "lab.column_total", "params": {"column": "y"}})
    got = Simulation(sites).run(algo)
    want = sum(float(f["y"].sum()) for f in sites.values())
    assert got == pytest.approx(want, abs=1e-4)
    count = algorithm_from_spec({"name": "lab.row_count", "params": {}})
    assert Simulation(sites).run(count) == 20 + 21 + 22


BROKEN = {
    "missing": "labplugin.not_there",
    "raises": "labplugin.raises",
    "not_an_algorithm": "labplugin.thing:THING",
    "taken": "labplugin.taken",
    "hijack": "labplugin.hijack",
}


def test_broken_entry_points_are_named_and_leave_the_others_working(install):
    install(
        "lab-broken",
        {"fine": "labplugin.algorithms", **BROKEN},
        {
            "labplugin.algorithms": PLUGIN,
            "labplugin.raises": "raise RuntimeError('the lab forgot a dependency')\n",
            "labplugin.thing": "THING = 42\n",
            "labplugin.taken": PLUGIN.replace("lab.column_total", "stats.mean"),
            # the same class name as the built-in one: still refused (another module)
            "labplugin.hijack": PLUGIN.replace("lab.column_total", "stats.mean").replace(
                "class ColumnTotal", "class Mean"
            ),
        },
    )
    with pytest.warns(AlgorithmEntryPointWarning) as caught:
        registry.reload_entry_points()
    messages = [str(w.message) for w in caught]
    assert len(messages) == len(BROKEN)
    for name, value in BROKEN.items():
        label = f"{name} = {value} (distribution lab-broken)"
        assert any(label in m and "consortia.algorithms" in m for m in messages), label
    failed = registry.failed_entry_points()
    assert (
        "ModuleNotFoundError" in failed["missing = labplugin.not_there (distribution lab-broken)"]
    )
    assert (
        "the lab forgot a dependency"
        in failed["raises = labplugin.raises (distribution lab-broken)"]
    )
    assert (
        "neither a module nor an Algorithm"
        in failed["not_an_algorithm = labplugin.thing:THING (distribution lab-broken)"]
    )
    assert "already registered" in failed["taken = labplugin.taken (distribution lab-broken)"]
    assert "already registered" in failed["hijack = labplugin.hijack (distribution lab-broken)"]
    # the working entry point and every built-in algorithm are unaffected
    assert get_algorithm("stats.mean") is Mean
    sites = _sites()
    got = Simulation(sites).run(Mean(columns=("y",)))
    pooled = pd.concat(sites.values())["y"]
    np.testing.assert_allclose(got.mean, [pooled.mean()], atol=1e-6)
    assert get_algorithm("lab.column_total").__module__ == "labplugin.algorithms"
    # a name that is missing points at the entry points that failed
    with pytest.raises(UnknownAlgorithmError, match=r"failed to load: .*missing = labplugin"):
        get_algorithm("lab.absent")


def _declared() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return dict(project["entry-points"]["consortia.algorithms"])


def test_pyproject_declares_every_built_in_algorithm_module():
    modules = {cls.__module__ for cls in registered_algorithms().values()}
    builtin = {m for m in modules if m.startswith("consortia.")}  # not other tests' ones
    assert builtin == set(_declared().values())
    assert all(m.startswith(registry.BUILTIN_PACKAGES) for m in builtin)


_FRESH_PROCESS = """
import json, warnings
from consortia import registry
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    names = sorted(registry.registered_algorithms())
print(json.dumps({"names": names, "warnings": [str(w.message) for w in caught]}))
"""


def _fresh_process(site: Path) -> dict:
    """Registry of a new interpreter with ``site`` (then consortia's source) on its path."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT / "src")])}
    out = subprocess.run(
        [sys.executable, "-c", _FRESH_PROCESS],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return json.loads(out.stdout.splitlines()[-1])


def test_own_entry_points_are_used_and_stale_ones_fall_back_to_the_source_tree(tmp_path):
    declared = _declared()
    builtin = {
        name
        for name, cls in registered_algorithms().items()
        if cls.__module__.startswith("consortia.")
    }
    # consortia's metadata as this release installs it: every algorithm, no warning
    current = _install_metadata(tmp_path / "current", "consortia", declared)
    got = _fresh_process(current)
    assert got["warnings"] == [] and builtin <= set(got["names"])
    # as a release made before the vector sum moved would have it: named, then the
    # source tree's modules fill the registry in
    stale = {**declared, "testing.vector_sum": "consortia.stats.vector_sum"}
    got = _fresh_process(_install_metadata(tmp_path / "stale", "consortia", stale))
    assert len(got["warnings"]) == 1
    assert (
        "testing.vector_sum = consortia.stats.vector_sum (distribution consortia)"
        in (got["warnings"][0])
    )
    assert builtin <= set(got["names"]) and "stats.vector_sum" not in got["names"]
