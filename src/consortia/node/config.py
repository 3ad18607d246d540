"""A node's configuration: one TOML file.

The file is validated by pydantic models (one per table, in
:mod:`consortia.node._config_schema`): an unknown key, a key of the wrong type
or a missing one is a :class:`~consortia.errors.ValidationError` naming the
table and the key (``node.toml: [node] poll_wiat: unknown key (did you mean
'poll_wait'?)``), never the value.

Paths are resolved once.  In the file, a relative path is relative to the
file's folder; in a :class:`NodeConfig` or :class:`DatasetConfig` built in
Python, to the current directory (made absolute when the object is built, so
:meth:`NodeConfig.write` writes absolute paths).  An absolute path is kept as
written.

Example (every path may be relative to the TOML file's folder)::

    [node]
    name = "hospital-a"                     # the node's name in the federation
    hub = "https://hub.example.org:8443"    # the hub's URL (outbound connection only)
    ca = "ca.pem"                           # CA certificate that signed the hub's (TLS)
    data_dir = "state"                      # keys, credential, SQLite (ledger, audit, peers)
    poll_wait = 20                          # long-poll seconds (optional)
    max_tasks = 4                           # tasks (of different studies) computed at once
    fsync = true                            # fsync the ledger and audit log on every write
    approval = "manual"                     # each new study waits for the owner (default "auto")
    auto_approve = ["stats.count", "stats.mean"]  # algorithm-name patterns approved at once
    audit_key_file = "audit.key"            # optional: HMAC key of the node's audit log (0600)

    trust_on_first_use = false              # default: only pinned peers are trusted

    [peers]                                 # the peers this owner trusts: pinned identity
                                            # fingerprints (or `consortia node peers add`)
    hospital-b = "3f1c9a0d3f1c9a0d3f1c9a0d3f1c9a0d3f1c9a0d3f1c9a0d3f1c9a0d3f1c9a0d"

    [datasets.cohort]
    path = "/data/cohort.csv"               # CSV, TSV or Parquet
    # expression = "/data/counts.h5ad"     # optional: raw counts (CSV/Parquet or AnnData)
    # expression_layer = "counts"          # .h5ad: the layer of raw counts (default X)
    # expression_patient_id = "patient"    # .h5ad: obs column of patient ids (default index)
    # expression_gene_id = "gene_id"       # .h5ad: var column of gene ids (default index)
    # expression_obs = ["batch"]           # .h5ad: obs columns joined to the clinical table
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

from pydantic import ValidationError as PydanticValidationError

from consortia.errors import ValidationError
from consortia.node._config_schema import (
    DatasetArguments,
    NodeArguments,
    NodeFile,
    describe,
    toml_key,
)
from consortia.privacy.policy import Policy

__all__ = ["APPROVAL_MODES", "DatasetConfig", "NodeConfig", "load_config"]

APPROVAL_MODES = ("auto", "manual")
"""``auto``: every study runs at once; ``manual``: each new study waits for the owner."""

_DATASET_KEYS = (
    "name",
    "path",
    "schema",
    "policy",
    "expression",
    "tiles",
    "expression_layer",
    "expression_patient_id",
    "expression_gene_id",
    "expression_obs",
)
_H5AD_KEYS = ("expression_layer", "expression_patient_id", "expression_gene_id")
_NODE_KEYS = (
    "name",
    "hub",
    "data_dir",
    "ca",
    "peers",
    "poll_wait",
    "max_tasks",
    "fsync",
    "trust_on_first_use",
    "approval",
    "auto_approve",
    "audit_key_file",
)


def _normalise(obj: Any, model: Any, keys: tuple[str, ...], origin: str) -> Any:
    """Validate ``obj``'s fields with ``model``; set the normalised values on ``obj``."""
    values = {key: getattr(obj, key) for key in keys}
    if isinstance(values.get("peers"), Mapping):
        values["peers"] = dict(values["peers"])
    try:
        checked = model.model_validate(values)
    except PydanticValidationError as exc:
        raise describe(exc, origin, top="flat") from None
    for key in keys:
        object.__setattr__(obj, key, getattr(checked, "schema_" if key == "schema" else key))
    return checked


@dataclass(frozen=True)
class DatasetConfig:
    """One dataset a node offers: its file, schema mapping and policy.

    Built in Python, the fields are validated as the TOML's ``[datasets.<name>]``
    table is (a relative path is made absolute against the current directory).

    Raises
    ------
    ValidationError
        Naming the field that is malformed.
    """

    name: str
    path: Path
    schema: Mapping[str, Any] | None = None
    policy: Policy = field(default_factory=Policy)
    expression: Path | None = None
    tiles: Path | None = None
    expression_layer: str | None = None
    expression_patient_id: str | None = None
    expression_gene_id: str | None = None
    expression_obs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _normalise(self, DatasetArguments, _DATASET_KEYS, "DatasetConfig")


@dataclass(frozen=True)
class NodeConfig:
    """A node's whole configuration (see the module docstring for the TOML form).

    Built in Python, the fields are validated as the TOML's tables are (a relative
    path is made absolute against the current directory, the hub's URL loses its
    trailing ``/``, fingerprints are lower-cased).

    Raises
    ------
    ValidationError
        Naming the field that is malformed.
    """

    name: str
    hub: str
    data_dir: Path
    datasets: tuple[DatasetConfig, ...]
    ca: Path | None = None
    peers: Mapping[str, str] = field(default_factory=dict)
    poll_wait: float = 20.0
    max_tasks: int = 4
    fsync: bool = True
    trust_on_first_use: bool = False
    approval: str = "auto"  # see consortia.node.approvals
    auto_approve: tuple[str, ...] = ()
    audit_key_file: Path | None = None

    def __post_init__(self) -> None:
        _normalise(self, NodeArguments, _NODE_KEYS, "NodeConfig")
        datasets = self.datasets
        if not isinstance(datasets, (list, tuple)) or not all(
            isinstance(ds, DatasetConfig) for ds in datasets
        ):
            raise ValidationError("NodeConfig: datasets: must be a tuple of DatasetConfig")
        object.__setattr__(self, "datasets", tuple(datasets))

    def to_toml(self) -> str:
        """The TOML form of this configuration (paths absolute)."""
        lines = ["[node]", f"name = {_q(self.name)}", f"hub = {_q(self.hub)}"]
        if self.ca is not None:
            lines.append(f"ca = {_q(str(self.ca))}")
        lines += [
            f"data_dir = {_q(str(self.data_dir))}",
            f"poll_wait = {self.poll_wait}",
            f"max_tasks = {self.max_tasks}",
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
            lines += [f"[datasets.{toml_key(ds.name)}]", f"path = {_q(str(ds.path))}"]
            if ds.expression is not None:
                lines.append(f"expression = {_q(str(ds.expression))}")
            if ds.tiles is not None:
                lines.append(f"tiles = {_q(str(ds.tiles))}")
            for key in _H5AD_KEYS:
                if getattr(ds, key) is not None:
                    lines.append(f"{key} = {_q(getattr(ds, key))}")
            if ds.expression_obs:
                lines.append(f"expression_obs = {_toml_value(list(ds.expression_obs))}")
            if ds.schema:
                lines += ["", f"[datasets.{toml_key(ds.name)}.schema]"]
                lines += [f"{_q(k)} = {_toml_value(v)}" for k, v in ds.schema.items()]
            lines += ["", f"[datasets.{toml_key(ds.name)}.policy]"]
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


def load_config(path: str | Path) -> NodeConfig:
    """Read and validate a node's TOML configuration.

    Parameters
    ----------
    path
        The TOML file; relative paths in it are relative to its folder.

    Returns
    -------
    NodeConfig
        With every path absolute.

    Raises
    ------
    ValidationError
        Naming the table and the key that is unknown, missing or malformed
        (for example ``node.toml: [node] poll_wait: must be a number of seconds
        in (0, 60]``); never the value.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ValidationError(f"no node configuration at {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValidationError(
            f"cannot read the node configuration {path}: {type(exc).__name__}"
        ) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValidationError(f"{path} is not valid TOML: {exc}") from None
    try:
        checked = NodeFile.model_validate(raw, context={"base": path.resolve().parent})
    except PydanticValidationError as exc:
        raise describe(exc, str(path)) from None
    node = checked.node
    return NodeConfig(
        name=node.name,
        hub=node.hub,
        data_dir=node.data_dir,
        datasets=tuple(
            DatasetConfig(
                name=name,
                path=ds.path,
                schema=ds.schema_,
                policy=ds.policy,
                expression=ds.expression,
                tiles=ds.tiles,
                expression_layer=ds.expression_layer,
                expression_patient_id=ds.expression_patient_id,
                expression_gene_id=ds.expression_gene_id,
                expression_obs=ds.expression_obs,
            )
            for name, ds in checked.datasets.items()
        ),
        ca=node.ca,
        peers=checked.peers,
        poll_wait=node.poll_wait,
        max_tasks=node.max_tasks,
        fsync=node.fsync,
        trust_on_first_use=node.trust_on_first_use,
        approval=node.approval,
        auto_approve=node.auto_approve,
        audit_key_file=node.audit_key_file,
    )
