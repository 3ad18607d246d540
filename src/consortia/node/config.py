"""A node's configuration: one TOML file.

Example (every path may be relative to the TOML file's folder)::

    [node]
    name = "hospital-a"                     # the node's name in the federation
    hub = "https://hub.example.org:8443"    # the hub's URL (outbound connection only)
    ca = "ca.pem"                           # CA certificate that signed the hub's (TLS)
    data_dir = "state"                      # keys, credential, SQLite (ledger, audit, peers)
    poll_wait = 20                          # long-poll seconds (optional)
    fsync = true                            # fsync the ledger and audit log on every write
    approval = "manual"                     # each new study waits for the owner (default "auto")
    auto_approve = ["stats.count", "stats.mean"]  # algorithm-name patterns approved at once
    audit_key_file = "audit.key"            # optional: HMAC key of the node's audit log (0600)

    trust_on_first_use = false              # default: only pinned peers are trusted

    [peers]                                 # the peers this owner trusts: pinned identity
    hospital-b = "3f1c...64 hex..."         # fingerprints (or `consortia node peers add`)

    [datasets.cohort]
    path = "/data/cohort.csv"               # CSV, TSV or Parquet
    [datasets.cohort.schema]                # see consortia.data.Schema.from_mapping
    id = "patient_id"
    time = "time"
    event = "event"
    covariates = { age = "float", stage = "int" }
    [datasets.cohort.policy]                # see consortia.Policy
    allowed_algorithms = ["stats.*", "survival.*"]
    min_cohort_size = 10
    min_sites = 3
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from consortia.errors import ValidationError
from consortia.privacy.policy import Policy

__all__ = ["APPROVAL_MODES", "DatasetConfig", "NodeConfig", "load_config"]

APPROVAL_MODES = ("auto", "manual")
"""``auto``: every study runs at once; ``manual``: each new study waits for the owner."""


@dataclass(frozen=True)
class DatasetConfig:
    """One dataset a node offers: its file, schema mapping and policy."""

    name: str
    path: Path
    schema: Mapping[str, Any] | None = None
    policy: Policy = field(default_factory=Policy)
    expression: Path | None = None
    tiles: Path | None = None


@dataclass(frozen=True)
class NodeConfig:
    """A node's whole configuration (see the module docstring for the TOML form)."""

    name: str
    hub: str
    data_dir: Path
    datasets: tuple[DatasetConfig, ...]
    ca: Path | None = None
    peers: Mapping[str, str] = field(default_factory=dict)
    poll_wait: float = 20.0
    fsync: bool = True
    trust_on_first_use: bool = False
    approval: str = "auto"  # see consortia.node.approvals
    auto_approve: tuple[str, ...] = ()
    audit_key_file: Path | None = None

    def to_toml(self) -> str:
        """The TOML form of this configuration (paths absolute)."""
        lines = ["[node]", f"name = {_q(self.name)}", f"hub = {_q(self.hub)}"]
        if self.ca is not None:
            lines.append(f"ca = {_q(str(self.ca))}")
        lines += [
            f"data_dir = {_q(str(self.data_dir))}",
            f"poll_wait = {self.poll_wait}",
            f"fsync = {_toml_value(self.fsync)}",
            f"trust_on_first_use = {_toml_value(self.trust_on_first_use)}",
            f"approval = {_q(self.approval)}",
            f"auto_approve = {_toml_value(list(self.auto_approve))}",
        ]
        if self.audit_key_file is not None:
            lines.append(f"audit_key_file = {_q(str(self.audit_key_file))}")
        lines.append("")
        if self.peers:
            lines.append("[peers]")
            lines += [f"{_q(k)} = {_q(v)}" for k, v in self.peers.items()]
            lines.append("")
        for ds in self.datasets:
            lines += [f"[datasets.{_q(ds.name)}]", f"path = {_q(str(ds.path))}"]
            if ds.expression is not None:
                lines.append(f"expression = {_q(str(ds.expression))}")
            if ds.tiles is not None:
                lines.append(f"tiles = {_q(str(ds.tiles))}")
            if ds.schema:
                lines += ["", f"[datasets.{_q(ds.name)}.schema]"]
                lines += [f"{_q(k)} = {_toml_value(v)}" for k, v in ds.schema.items()]
            lines += ["", f"[datasets.{_q(ds.name)}.policy]"]
            lines += [f"{k} = {_toml_value(v)}" for k, v in ds.policy.to_mapping().items()]
            lines.append("")
        return "\n".join(lines)

    def write(self, path: str | Path) -> Path:
        """Write the TOML form to ``path``; return it."""
        path = Path(path)
        path.write_text(self.to_toml())
        return path


def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return _q(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{ " + ", ".join(f"{_q(str(k))} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise ValidationError(f"cannot write a {type(v).__name__} to TOML")


def _path(base: Path, value: Any, what: str) -> Path:
    if not isinstance(value, str) or not value:
        raise ValidationError(f"{what} must be a path string")
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base / p).resolve()


def load_config(path: str | Path) -> NodeConfig:
    """Read and validate a node's TOML configuration.

    Raises
    ------
    ValidationError
        Naming the key that is missing or malformed.
    """
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ValidationError(f"no node configuration at {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValidationError(f"{path} is not valid TOML: {exc}") from None
    base = path.resolve().parent
    unknown = set(raw) - {"node", "peers", "datasets"}
    if unknown:
        raise ValidationError(f"unknown section(s) {sorted(unknown)} in {path}")
    node = raw.get("node")
    if not isinstance(node, dict):
        raise ValidationError(f"{path} needs a [node] table")
    unknown = set(node) - {
        "name",
        "hub",
        "ca",
        "data_dir",
        "poll_wait",
        "fsync",
        "trust_on_first_use",
        "approval",
        "auto_approve",
        "audit_key_file",
    }
    if unknown:
        raise ValidationError(f"unknown key(s) {sorted(unknown)} in [node]")
    for key in ("name", "hub", "data_dir"):
        if not isinstance(node.get(key), str) or not node[key]:
            raise ValidationError(f"[node] needs a string {key!r}")
    hub = node["hub"].rstrip("/")
    if not hub.startswith(("http://", "https://")):
        raise ValidationError("[node] hub must be an http:// or https:// URL")
    peers = raw.get("peers", {})
    if not isinstance(peers, dict) or not all(
        isinstance(v, str) and len(v) == 64 for v in peers.values()
    ):
        raise ValidationError("[peers] maps node names to 64-hex identity fingerprints")
    datasets = []
    for name, entry in (raw.get("datasets") or {}).items():
        if not isinstance(entry, dict):
            raise ValidationError(f"[datasets.{name}] must be a table")
        unknown = set(entry) - {"path", "schema", "policy", "expression", "tiles"}
        if unknown:
            raise ValidationError(f"unknown key(s) {sorted(unknown)} in [datasets.{name}]")
        datasets.append(
            DatasetConfig(
                name=name,
                path=_path(base, entry.get("path"), f"[datasets.{name}] path"),
                schema=entry.get("schema"),
                policy=Policy.from_mapping(entry.get("policy", {})),
                expression=_path(base, entry["expression"], "expression")
                if "expression" in entry
                else None,
                tiles=_path(base, entry["tiles"], "tiles") if "tiles" in entry else None,
            )
        )
    if not datasets:
        raise ValidationError(f"{path} declares no [datasets.<name>] table")
    poll = node.get("poll_wait", 20.0)
    if not isinstance(poll, (int, float)) or not 0 < poll <= 60:
        raise ValidationError("[node] poll_wait must be a number of seconds in (0, 60]")
    fsync = node.get("fsync", True)
    if not isinstance(fsync, bool):
        raise ValidationError("[node] fsync must be true or false")
    tofu = node.get("trust_on_first_use", False)
    if not isinstance(tofu, bool):
        raise ValidationError("[node] trust_on_first_use must be true or false")
    approval = node.get("approval", "auto")
    if approval not in APPROVAL_MODES:
        raise ValidationError(f"[node] approval must be one of {list(APPROVAL_MODES)}")
    auto_approve = node.get("auto_approve", [])
    if not isinstance(auto_approve, list) or not all(
        isinstance(p, str) and p for p in auto_approve
    ):
        raise ValidationError(
            "[node] auto_approve must be a list of algorithm-name patterns (strings)"
        )
    return NodeConfig(
        name=node["name"],
        hub=hub,
        data_dir=_path(base, node["data_dir"], "[node] data_dir"),
        datasets=tuple(datasets),
        ca=_path(base, node["ca"], "[node] ca") if "ca" in node else None,
        peers={str(k): v.lower() for k, v in peers.items()},
        poll_wait=float(poll),
        fsync=fsync,
        trust_on_first_use=tofu,
        approval=approval,
        auto_approve=tuple(auto_approve),
        audit_key_file=_path(base, node["audit_key_file"], "[node] audit_key_file")
        if "audit_key_file" in node
        else None,
    )
