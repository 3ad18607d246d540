"""``consortia model``: fetch a federated model from the hub as files."""

from __future__ import annotations

from pathlib import Path

import click

from consortia.cli.study import _ca, _connect, _hub, _token


@click.group(name="model")
def command() -> None:
    """Trained models (learn.train studies): download them as safetensors + model card."""


@command.command("download")
@_hub
@_token
@_ca
@click.argument("study_id")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for model.safetensors and model_card.json [default: model-STUDY_ID].",
)
@click.option("--overwrite", is_flag=True, help="Replace files already in the folder.")
def download(
    hub: str, token: str, ca: str | None, study_id: str, out: Path | None, overwrite: bool
) -> None:
    """Fetch a finished training study's model: weights (safetensors) and model card."""
    from consortia.errors import ConsortiaError
    from consortia.learn.export import export_model
    from consortia.learn.result import TrainingResult

    folder = out if out is not None else Path(f"model-{study_id}")
    with _connect(hub, token, ca) as fed:
        result = fed.result(study_id)
        if not isinstance(result, TrainingResult):
            raise click.ClickException(
                f"study {study_id} is not a training study (its result is a "
                f"{type(result).__name__}); `consortia study result` shows it"
            )
        st = fed.status(study_id)
        provenance = {
            "study": study_id,
            "hub": hub,
            "dataset": st.raw.get("dataset"),
            "sites": list(st.participants),
            "researcher": st.raw.get("researcher"),
            "created_at": st.raw.get("created_at"),
            "algorithm": st.raw.get("algorithm"),
        }
        try:
            files = export_model(result, folder, provenance=provenance, overwrite=overwrite)
        except ConsortiaError as exc:
            raise click.ClickException(str(exc)) from exc
    click.echo(f"weights: {files.weights}")
    click.echo(f"model card: {files.card}")
