"""The pydantic models that validate a node's TOML file, and their error messages.

One model per TOML table (``[node]``, ``[peers]``, ``[datasets.<name>]``), strict
about unknown keys and about TOML types.  :func:`describe` turns a pydantic
``ValidationError`` into one line per problem, each naming the table and the key
(``[node] poll_wait: must be a number of seconds in (0, 60]``), never the value
(a value may be a secret).  Paths are resolved here, exactly once: a relative
path against the folder given in the validation context (the TOML file's
folder) or, without one, against the current directory; an absolute path is
kept as written.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationInfo,
)
from pydantic import ValidationError as PydanticValidationError
from pydantic_core import PydanticCustomError

from consortia.errors import ValidationError
from consortia.privacy.policy import Policy

__all__ = [
    "DatasetArguments",
    "DatasetTable",
    "NodeArguments",
    "NodeFile",
    "NodeTable",
    "describe",
    "toml_key",
]

_FINGERPRINT = re.compile(r"[0-9a-fA-F]{64}")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def toml_key(key: str) -> str:
    """``key`` as TOML writes it in a table header (quoted unless a bare key)."""
    if _BARE_KEY.fullmatch(key):
        return key
    return '"' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _kind(value: Any) -> str:
    """The TOML kind of ``value`` (for messages: the kind, never the value)."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, (list, tuple)):
        return "an array"
    return f"a {type(value).__name__}"


def _fail(kind: str, message: str) -> PydanticCustomError:
    return PydanticCustomError(kind, message)


# ---------------------------------------------------------------------- field types


def _path(value: Any, info: ValidationInfo) -> Path:
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value:
        raise _fail("path", f"must be a path (a non-empty string), not {_kind(value)}")
    p = Path(value).expanduser()
    if p.is_absolute():
        return p  # as written: never resolved again
    base = (info.context or {}).get("base")
    return (Path(base) if base is not None else Path.cwd()).joinpath(p).resolve()


def _name(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise _fail("name", f"must be a non-empty string, not {_kind(value)}")
    return value


def _hub(value: Any) -> str:
    if not isinstance(value, str):
        raise _fail("hub", f"must be an http:// or https:// URL (a string), not {_kind(value)}")
    if not value.startswith(("http://", "https://")):
        raise _fail("hub", "must be an http:// or https:// URL")
    return value.rstrip("/")


def _poll_wait(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail("poll_wait", f"must be a number of seconds, not {_kind(value)}")
    if not 0 < value <= 60:
        raise _fail("poll_wait", "must be a number of seconds in (0, 60]")
    return float(value)


def _max_tasks(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail("max_tasks", f"must be a whole number of tasks, not {_kind(value)}")
    if not 1 <= value <= 256:
        raise _fail("max_tasks", "must be a whole number of tasks in [1, 256]")
    return value


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _fail("flag", f"must be true or false, not {_kind(value)}")
    return value


def _patterns(value: Any) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(p, str) and p for p in value):
        raise _fail(
            "patterns",
            f"must be a list of algorithm-name patterns (non-empty strings), not {_kind(value)}",
        )
    return tuple(value)


def _approval(value: Any) -> Any:
    if not isinstance(value, str):
        raise _fail("approval", f"must be one of ['auto', 'manual'] (a string), not {_kind(value)}")
    return value


def _fingerprint(value: Any) -> str:
    if not isinstance(value, str) or not _FINGERPRINT.fullmatch(value):
        raise _fail("fingerprint", "must be a 64-hex identity fingerprint")
    return value.lower()


def _option(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise _fail("name", f"must be a non-empty string, not {_kind(value)}")
    return value


def _names(value: Any) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
        raise _fail(
            "names", f"must be a list of column names (non-empty strings), not {_kind(value)}"
        )
    return tuple(value)


def _schema(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise _fail("schema", f"must be a table (see consortia.data.Schema), not {_kind(value)}")
    return dict(value)


def _policy(value: Any) -> Policy:
    """A :class:`Policy` as is, or one built from a TOML table.

    Policy's own validation decides; its error is narrowed to the first key
    that fails on its own (the messages name the key, never the value).
    """
    if isinstance(value, Policy):
        return value
    if not isinstance(value, Mapping):
        raise _fail("policy", f"must be a table (see consortia.Policy), not {_kind(value)}")
    known = [f.name for f in fields(Policy)]
    for key in value:
        if key not in known:
            raise PydanticCustomError(
                "policy_key",
                "{key}: unknown key" + _did_you_mean(str(key), known) + f"; known: {known}",
                {"key": str(key)},
            )
    try:
        return Policy.from_mapping(value)
    except ValidationError as exc:
        for key, item in value.items():
            try:
                Policy(**{key: item})
            except ValidationError as one:
                raise PydanticCustomError(
                    "policy_key", "{key}: {message}", {"key": key, "message": _strip(one, key)}
                ) from None
        raise PydanticCustomError("policy", "{message}", {"message": str(exc)}) from None


def _strip(exc: ValidationError, key: str) -> str:
    """Policy's message without its ``Policy.<key>`` prefix."""
    text = str(exc)
    prefix = f"Policy.{key} "
    return text[len(prefix) :] if text.startswith(prefix) else text


Name = Annotated[str, PlainValidator(_name)]
Hub = Annotated[str, PlainValidator(_hub)]
ConfigPath = Annotated[Path, PlainValidator(_path)]
PollWait = Annotated[float, PlainValidator(_poll_wait)]
MaxTasks = Annotated[int, PlainValidator(_max_tasks)]
Flag = Annotated[bool, PlainValidator(_flag)]
Patterns = Annotated[tuple[str, ...], PlainValidator(_patterns)]
Approval = Annotated[Literal["auto", "manual"], BeforeValidator(_approval)]
Fingerprint = Annotated[str, PlainValidator(_fingerprint)]
Option = Annotated[str | None, PlainValidator(_option)]
Names = Annotated[tuple[str, ...], PlainValidator(_names)]
SchemaTable = Annotated[dict[str, Any] | None, PlainValidator(_schema)]
PolicyTable = Annotated[Policy, PlainValidator(_policy)]


# ---------------------------------------------------------------------- tables


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)


class NodeTable(_Table):
    """``[node]``."""

    name: Name
    hub: Hub
    data_dir: ConfigPath
    ca: ConfigPath | None = None
    poll_wait: PollWait = 20.0
    max_tasks: MaxTasks = 4
    fsync: Flag = True
    trust_on_first_use: Flag = False
    approval: Approval = "auto"
    auto_approve: Patterns = ()
    audit_key_file: ConfigPath | None = None


class DatasetTable(_Table):
    """``[datasets.<name>]`` (with its ``schema`` and ``policy`` sub-tables)."""

    path: ConfigPath
    schema_: SchemaTable = Field(default=None, alias="schema")
    policy: PolicyTable = Field(default_factory=Policy)
    expression: ConfigPath | None = None
    tiles: ConfigPath | None = None
    # an AnnData (.h5ad) expression file: its layer of raw counts (default X), the obs
    # column of patient ids (default the obs index), the var column of gene ids (default
    # the var index), obs columns joined to the clinical table
    expression_layer: Option = None
    expression_patient_id: Option = None
    expression_gene_id: Option = None
    expression_obs: Names = ()


class NodeFile(_Table):
    """The whole file."""

    node: NodeTable
    peers: dict[Name, Fingerprint] = Field(default_factory=dict)
    datasets: dict[Name, DatasetTable] = Field(min_length=1)


class NodeArguments(NodeTable):
    """A :class:`NodeConfig` built in Python: ``[node]`` and ``peers``, flat."""

    peers: dict[Name, Fingerprint] = Field(default_factory=dict)


class DatasetArguments(DatasetTable):
    """A :class:`DatasetConfig` built in Python: its table and its name."""

    name: Name


# ---------------------------------------------------------------------- messages

_EXPECTED = {
    "model_type": "a table",
    "model_attributes_type": "a table",
    "dict_type": "a table",
    "string_type": "a string",
    "bool_type": "true or false",
    "float_type": "a number",
    "int_type": "an integer",
    "tuple_type": "an array",
    "list_type": "an array",
}


def _did_you_mean(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _known(model: type[BaseModel]) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items()]


def _where(loc: tuple[int | str, ...], top: str) -> tuple[str, str | None, type[BaseModel] | None]:
    """(table, key, model of the table) of a location in :class:`NodeFile`'s input."""
    head = str(loc[0]) if loc else ""
    if top != "file":  # a NodeConfig/DatasetConfig built in Python: keyword arguments
        return "", ".".join(str(part) for part in loc) or None, None
    if head == "node":
        return "[node]", str(loc[1]) if len(loc) > 1 else None, NodeTable
    if head == "peers":
        return "[peers]", str(loc[1]) if len(loc) > 1 else None, None
    if head == "datasets" and len(loc) > 1:
        table = f"[datasets.{toml_key(str(loc[1]))}]"
        return table, str(loc[2]) if len(loc) > 2 else None, DatasetTable
    if head == "datasets":
        return "[datasets]", None, None
    return "the top level", head or None, NodeFile


def _one(err: Any, top: str) -> str:
    kind, loc, ctx = err["type"], tuple(err["loc"]), err.get("ctx") or {}
    table, key, model = _where(loc, top)
    if kind == "policy_key" and top == "file":
        table, key = table[:-1] + ".policy]", str(ctx["key"])
        return f"{table} {key}: {err['msg'][len(key) + 2 :]}"
    if kind == "policy_key":
        return f"policy.{err['msg']}"
    if top == "file" and loc == ("node",) and kind == "missing":
        return "needs a [node] table"
    if top == "file" and loc == ("datasets",) and kind in ("missing", "too_short"):
        return "declares no [datasets.<name>] table"
    if kind == "extra_forbidden":
        hint = _did_you_mean(key or "", _known(model)) if model is not None else ""
        if top == "file" and len(loc) == 1:
            return f"unknown section or key {key!r} at the top level{hint}"
        return f"{table} {key}: unknown key{hint}"
    if kind == "missing":
        message = "missing (a required key)"
    elif kind in _EXPECTED:
        message = f"must be {_EXPECTED[kind]}, not {_kind(err.get('input'))}"
    elif kind == "literal_error":
        message = f"must be one of [{ctx.get('expected', '')}]".replace(" or ", ", ")
    else:
        message = str(err["msg"])
    return f"{table} {key or ''}".strip() + f": {message}"


def describe(exc: PydanticValidationError, origin: str, top: str = "file") -> ValidationError:
    """A typed error naming each bad key and its table, never a value.

    Parameters
    ----------
    exc
        What pydantic raised.
    origin
        What is being validated (the TOML file's path, or ``"NodeConfig"``).
    top
        ``"file"`` for :class:`NodeFile`'s tables; ``"flat"`` for the keyword
        arguments of a configuration built in Python.
    """
    lines = [_one(err, top) for err in exc.errors(include_url=False, include_input=True)]
    return ValidationError(f"{origin}: " + "; ".join(lines))
