"""``consortia node init`` and ``consortia node check``: draft and check a node's configuration.

Both work without a hub: ``init`` writes a TOML from a data file, ``check`` validates
the TOML and every dataset and prints the catalogue the hub would see.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from consortia.errors import ConsortiaError

_CONFIG = click.option(
    "--config",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The node's TOML file.",
)


@click.command("init")
@click.option("--name", required=True, help="The node's name in the federation, e.g. hospital-a.")
@click.option("--hub", "hub_url", required=True, help="The hub's URL, e.g. https://hub:8443.")
@click.option(
    "--data",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The clinical table (CSV, TSV or Parquet) to draft a schema from.",
)
@click.option("--dataset", default="cohort", show_default=True, help="The dataset's name.")
@click.option("--id", "id_col", help="The patient-id column.")
@click.option("--time", "time_col", help="The survival time column.")
@click.option("--event", "event_col", help="The event indicator column (1 event, 0 censored).")
@click.option("--group", "group_col", help="A grouping column (arm, stage...).")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("node.toml"),
    show_default=True,
    help="Where to write the draft; an existing file is never overwritten.",
)
def init(
    name: str,
    hub_url: str,
    data: Path,
    dataset: str,
    id_col: str | None,
    time_col: str | None,
    event_col: str | None,
    group_col: str | None,
    out: Path,
) -> None:
    """Draft a node's TOML from a data file: column types inferred, default policy.

    Read the draft before starting the node: the policy's defaults (every algorithm
    allowed, cohorts of at least 10, at least 3 trusted sites) are the owner's to tighten.
    """
    from consortia.data.loaders import read_table
    from consortia.data.schema import Schema
    from consortia.node import DatasetConfig, NodeConfig, load_config

    if out.exists():
        raise click.ClickException(f"{out} exists; give another --out or remove it first")
    try:
        frame = read_table(data)
        schema = Schema.infer(frame, id=id_col, time=time_col, event=event_col, group=group_col)
        cfg = NodeConfig(
            name=name,
            hub=hub_url,
            data_dir=out.resolve().parent / "state",
            datasets=(
                DatasetConfig(name=dataset, path=data.resolve(), schema=schema.to_mapping()),
            ),
        )
        cfg.write(out)
        load_config(out)  # the draft is valid as written
    except ConsortiaError as exc:
        out.unlink(missing_ok=True)
        raise click.ClickException(str(exc)) from exc
    click.echo(f"wrote {out}: dataset {dataset!r} with {len(schema.columns)} columns")
    click.echo(f"next: review it, then `consortia node check --config {out}`")


@click.command("check")
@_CONFIG
@click.option("--json", "as_json", is_flag=True, help="Print the catalogue as JSON.")
def check(config: Path, as_json: bool) -> None:
    """Validate the configuration and every dataset; print the catalogue. Contacts no hub.

    The catalogue is what the hub would see (column names, roles, types and rounded
    counts; no values). Exits 1 if a dataset does not load, naming it and the rule.
    """
    from consortia.data import catalogue, load_dataset
    from consortia.node import load_config

    try:
        cfg = load_config(config)
    except ConsortiaError as exc:
        raise click.ClickException(str(exc)) from exc
    entries: dict[str, Any] = {}
    failed: list[str] = []
    for ds in cfg.datasets:
        try:
            data = load_dataset(
                str(ds.path),
                schema=ds.schema,
                name=ds.name,
                expression=str(ds.expression) if ds.expression else None,
                tiles=str(ds.tiles) if ds.tiles else None,
            )
        except (ConsortiaError, OSError, ValueError, TypeError, KeyError) as exc:
            failed.append(ds.name)
            entries[ds.name] = {"name": ds.name, "available": False, "error": type(exc).__name__}
            click.echo(f"dataset {ds.name!r}: does not load: {type(exc).__name__}: {exc}", err=True)
            continue
        entries[ds.name] = catalogue(data)
    if as_json:
        click.echo(json.dumps(entries, indent=2, sort_keys=True, default=str))
    else:
        click.echo(f"node {cfg.name!r} (hub {cfg.hub}): configuration is valid")
        for name, entry in entries.items():
            if name in failed:
                continue
            policy = next(d.policy for d in cfg.datasets if d.name == name)
            click.echo(f"dataset {name!r}: {entry['rows']} rows (rounded as the hub sees them)")
            for col in entry["columns"]:
                click.echo(f"  column {col['name']}: {col['role']}, {col['type']}")
            for modality, shape in entry["modalities"].items():
                facts = ", ".join(f"{k} {v}" for k, v in shape.items())
                click.echo(f"  modality {modality}: {facts}")
            click.echo(
                f"  policy: algorithms {', '.join(policy.allowed_algorithms) or 'none'}; "
                f"min cohort {policy.min_cohort_size}; min sites {policy.min_sites}"
            )
    if failed:
        raise click.ClickException(
            f"{len(failed)} of {len(cfg.datasets)} datasets do not load: {', '.join(failed)}"
        )
