"""A federated model exported as safetensors + model card, and read back."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from consortia import Policy, Simulation
from consortia.errors import ValidationError
from consortia.learn import Training
from consortia.learn.export import build_module, export_model, load_model
from consortia.learn.models import get_model, unflatten

torch = pytest.importorskip("torch")
safe_open = pytest.importorskip("safetensors").safe_open

OPEN = Policy(max_params_per_sample=1.0, min_cell_count=1)


@pytest.fixture(scope="module")
def trained(toy_sites_module):
    algo = Training(
        model="mlp", features=("x1", "x2"), task="regression", label="y", rounds=2, lr=0.05,
        hyperparameters={"hidden": [4]}, seed=3,
    )  # fmt: skip
    return Simulation(toy_sites_module, policy=OPEN).run(algo)


@pytest.fixture(scope="module")
def toy_sites_module():
    rng = np.random.default_rng(11)
    sites = {}
    for i, n in enumerate((30, 35, 32)):
        x = rng.normal(size=(n, 2))
        sites[f"s{i}"] = pd.DataFrame(
            {"x1": x[:, 0], "x2": x[:, 1], "y": x @ [1.0, -2.0] + rng.normal(0, 0.1, n)}
        )
    return sites


def test_export_then_load_gives_the_same_weights_and_predictions(trained, tmp_path):
    files = export_model(trained, tmp_path / "m", provenance={"study": "s-1", "sites": ["s0"]})
    tensors, card = load_model(tmp_path / "m")
    assert np.array_equal(np.concatenate([t.ravel() for t in tensors.values()]), trained.weights)
    assert card["model"] == "mlp" and card["features"] == ["x1", "x2"]
    assert card["rounds"] == trained.rounds and card["strategy"] == trained.strategy
    assert card["provenance"] == {"study": "s-1", "sites": ["s0"]}
    assert card["privacy"]["epsilon_spent"] == 0.0
    assert set(card["metrics"]) == set(trained.metrics)
    json.dumps(card, allow_nan=False)  # strict JSON
    module = build_module(tmp_path / "m")
    x = torch.tensor([[0.5, -1.0], [2.0, 0.1]], dtype=torch.float64)
    ref = get_model("mlp").build(2, trained.hyperparameters)
    unflatten(ref, trained.weights)
    assert torch.equal(module(x), ref(x))
    with safe_open(str(files.weights), framework="numpy") as f:
        meta = f.metadata()
    assert meta["model"] == "mlp" and json.loads(meta["features"]) == ["x1", "x2"]


def test_a_tampered_or_missing_file_and_overwrites_are_refused(trained, tmp_path):
    files = export_model(trained, tmp_path)
    with pytest.raises(ValidationError, match="exists; pass overwrite=True"):
        export_model(trained, tmp_path)
    export_model(trained, tmp_path, overwrite=True)
    raw = bytearray(files.weights.read_bytes())
    raw[-1] ^= 1
    files.weights.write_bytes(bytes(raw))
    with pytest.raises(ValidationError, match="does not match the SHA-256"):
        load_model(tmp_path)
    files.card.unlink()
    with pytest.raises(ValidationError, match="no model card"):
        load_model(tmp_path)
    with pytest.raises(ValidationError, match="needs a TrainingResult"):
        export_model(object(), tmp_path / "x")  # type: ignore[arg-type]
