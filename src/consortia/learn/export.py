"""A trained model as files: safetensors weights and a JSON model card.

:func:`export_model` writes, into one folder,

``model.safetensors``
    The final weights, one tensor per model parameter (the names and shapes of the
    registered model's layout, float64), in the safetensors format: no code and no
    pickle, readable by ``safetensors.numpy.load_file`` or ``safetensors.torch``.
    Its metadata names the model, its hyperparameters and its features.
``model_card.json``
    What the model is and how it was made: the model and its hyperparameters, the
    features in input order, the task, the strategy and its parameters, the rounds
    run and the round kept, the final federated metrics (with their error bounds),
    the patients per split pooled over sites, the privacy spent, the study's
    provenance when given (study id, dataset, participating sites, researcher), and
    the SHA-256 of the weights file.

:func:`load_model` reads the folder back, checking the weights against the card's
digest and the registered layout, and :func:`build_module` gives the torch module.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from consortia.errors import ValidationError
from consortia.learn.models import get_model
from consortia.learn.result import TrainingResult
from consortia.results import jsonable

__all__ = ["CARD_FORMAT", "ModelFiles", "build_module", "export_model", "load_model"]

CARD_FORMAT = "consortia.model-card/1"
"""The ``format`` field of a model card written by this version."""

WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "model_card.json"


@dataclass(frozen=True)
class ModelFiles:
    """The files of an exported model."""

    weights: Path
    card: Path


def _tensors(result: TrainingResult) -> dict[str, np.ndarray]:
    spec = get_model(result.model)
    shapes = spec.shapes(len(result.features), result.hyperparameters)
    weights = np.asarray(result.weights, dtype=np.float64)
    total = int(sum(int(np.prod(s)) for _, s in shapes))
    if weights.ndim != 1 or weights.size != total:
        raise ValidationError(
            f"the result's weights have {weights.size} values; model {result.model!r} "
            f"with {len(result.features)} features has {total} parameters"
        )
    out, pos = {}, 0
    for name, shape in shapes:
        n = int(np.prod(shape))
        out[name] = np.ascontiguousarray(weights[pos : pos + n].reshape(shape))
        pos += n
    return out


def export_model(
    result: TrainingResult,
    directory: str | Path,
    *,
    provenance: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> ModelFiles:
    """Write ``result``'s model as ``model.safetensors`` and ``model_card.json``.

    Parameters
    ----------
    result
        A federated training result (``learn.train``).
    directory
        The folder to write into (created if needed).
    provenance
        Facts about the study to record in the card (for example ``study``,
        ``dataset``, ``sites``, ``researcher``, ``created_at``); JSON values.
    overwrite
        Replace files already there; by default an existing file is an error.

    Returns
    -------
    ModelFiles
        The paths written.

    Raises
    ------
    ValidationError
        ``result`` is not a training result, its weights do not fit its model, or a
        file exists and ``overwrite`` is False.
    """
    from safetensors.numpy import save_file

    if not isinstance(result, TrainingResult):
        raise ValidationError(
            f"export_model needs a TrainingResult (learn.train), not {type(result).__name__}"
        )
    folder = Path(directory)
    weights_path, card_path = folder / WEIGHTS_FILE, folder / CARD_FILE
    if not overwrite:
        for path in (weights_path, card_path):
            if path.exists():
                raise ValidationError(f"{path} exists; pass overwrite=True to replace it")
    tensors = _tensors(result)
    folder.mkdir(parents=True, exist_ok=True)
    metadata = {
        "format": "consortia.model/1",
        "model": result.model,
        "hyperparameters": json.dumps(jsonable(dict(result.hyperparameters)), sort_keys=True),
        "features": json.dumps(list(result.features)),
        "task": result.task,
    }
    save_file(tensors, str(weights_path), metadata=metadata)
    digest = hashlib.sha256(weights_path.read_bytes()).hexdigest()
    card = {
        "format": CARD_FORMAT,
        "model": result.model,
        "hyperparameters": jsonable(dict(result.hyperparameters)),
        "features": list(result.features),
        "task": result.task,
        "parameters": [{"name": k, "shape": list(v.shape)} for k, v in tensors.items()],
        "strategy": result.strategy,
        "strategy_params": jsonable(dict(result.strategy_params)),
        "rounds": result.rounds,
        "best_round": result.best_round,
        "stopped_early": result.stopped_early,
        "metrics": jsonable(dict(result.metrics)),
        "patients_per_split": jsonable(dict(result.n)),
        "privacy": jsonable(dict(result.privacy)),
        "provenance": jsonable(dict(provenance or {})),
        "weights_file": WEIGHTS_FILE,
        "weights_sha256": digest,
    }
    card_path.write_text(json.dumps(card, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return ModelFiles(weights=weights_path, card=card_path)


def load_model(directory: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read an exported model: its tensors (by parameter name) and its card.

    Raises
    ------
    ValidationError
        A file is missing, the card is not a model card, the weights do not match
        the card's digest, or the tensors do not follow the registered model's layout.
    """
    from safetensors.numpy import load_file

    folder = Path(directory)
    card_path = folder / CARD_FILE
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValidationError(f"no model card at {card_path}") from None
    except ValueError as exc:
        raise ValidationError(f"{card_path} is not JSON: {exc}") from None
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
        raise ValidationError(f"{card_path} is not a {CARD_FORMAT} model card")
    weights_path = folder / str(card.get("weights_file", WEIGHTS_FILE))
    try:
        raw = weights_path.read_bytes()
    except FileNotFoundError:
        raise ValidationError(f"no weights file at {weights_path}") from None
    if hashlib.sha256(raw).hexdigest() != card.get("weights_sha256"):
        raise ValidationError(
            f"{weights_path} does not match the SHA-256 recorded in its model card"
        )
    tensors = load_file(str(weights_path))
    spec = get_model(str(card["model"]))
    expected = spec.shapes(len(card["features"]), card["hyperparameters"])
    got = [(k, tuple(v.shape)) for k, v in tensors.items()]
    if sorted(got) != sorted((k, tuple(s)) for k, s in expected):
        raise ValidationError(
            f"{weights_path}: its tensors do not follow model {spec.name!r}'s layout"
        )
    ordered = {name: tensors[name] for name, _ in expected}
    return ordered, card


def build_module(directory: str | Path) -> Any:
    """The torch module (float64, evaluation mode) of an exported model.

    Needs the ``learn`` extra (PyTorch).
    """
    import torch

    tensors, card = load_model(directory)
    module = get_model(str(card["model"])).build(len(card["features"]), card["hyperparameters"])
    with torch.no_grad():
        for name, param in module.named_parameters():
            param.copy_(torch.from_numpy(tensors[name]))
    return module.eval()
