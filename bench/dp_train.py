"""Differentially private federated training (``learn.train`` with ``dp``): utility and cost.

* 3 sites of 3,000 synthetic patients, 10 features, a logistic outcome; a hashed
  20 % test split at every site.
* ``pooled_auc``: scikit-learn's ``LogisticRegression`` (C=inf: no penalty) fitted on the pooled
  training rows, scored on the pooled test split (the ceiling).
* ``plain_auc``: FedAvg, one full-batch step per round, 40 rounds, no noise.
* ``eps1_auc``, ``eps4_auc``: the same with record-level DP (distributed DP-SGD,
  Poisson rate 0.05, clip_norm 1, delta 1e-5), the noise multiplier calibrated for
  epsilon 1 and 4 by the RDP accountant (``consortia.learn.dp``).
* ``dp_step_over_plain``: one site's DP local step (per-sample gradients with
  ``torch.func``, clipped and summed, over all its 2,400 training rows) over its plain
  full-batch gradient, in one run (single-threaded torch).

The noise and the Poisson samples come from the operating system's entropy: the
DP figures vary from run to run.

Last line: ``dp_train sites=3 rows=<int> pooled_auc=<f> plain_auc=<f> eps1_auc=<f>
eps4_auc=<f> eps1_multiplier=<f> dp_step_over_plain=<f>``.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from consortia import Policy, Simulation
from consortia.learn import Training, _local
from consortia.learn.evaluation import split_codes
from consortia.learn.models import get_model

FEATURES = tuple(f"x{i}" for i in range(10))
POLICY = Policy(min_cell_count=1, epsilon_budget=100.0)


def cohort() -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(2026)
    beta = rng.normal(0, 0.6, len(FEATURES))
    out = {}
    for i in range(3):
        x = rng.normal(0.1 * i, 1.0, size=(3000, len(FEATURES)))
        p = 1 / (1 + np.exp(-(x @ beta - 0.3)))
        frame = pd.DataFrame(x, columns=list(FEATURES))
        frame["y"] = (rng.random(3000) < p).astype(int)
        frame["pid"] = [f"s{i}-{k}" for k in range(3000)]
        out[f"s{i}"] = frame
    return out


def train(sites, **kw) -> float:
    algo = Training(
        model="linear", features=FEATURES, task="binary", label="y", rounds=40, lr=0.5,
        clip_norm=1.0, init="zeros", id_column="pid", test_fraction=0.2, seed=3, **kw,
    )  # fmt: skip
    res = Simulation(sites, policy=POLICY).run(algo)
    return float(res.metrics["test_auc"])


def main() -> None:
    sites = cohort()
    pooled = pd.concat(sites.values(), ignore_index=True)
    split = split_codes(pooled["pid"].to_numpy(), seed=3, val_fraction=0.0, test_fraction=0.2)
    x, y = pooled[list(FEATURES)].to_numpy(), pooled["y"].to_numpy()
    ref = LogisticRegression(C=np.inf, max_iter=1000).fit(x[split == 0], y[split == 0])
    pooled_auc = roc_auc_score(y[split == 2], ref.decision_function(x[split == 2]))
    plain_auc = train(sites)
    dp = {"delta": 1e-5, "sample_rate": 0.05}
    eps1 = Training(
        model="linear", features=FEATURES, task="binary", label="y", rounds=40,
        dp={**dp, "epsilon": 1.0},
    )  # fmt: skip
    eps1_auc = train(sites, dp={**dp, "epsilon": 1.0})
    eps4_auc = train(sites, dp={**dp, "epsilon": 4.0})
    # the local step's cost, one site
    site = sites["s0"]
    rows = split_codes(site["pid"].to_numpy(), seed=3, val_fraction=0.0, test_fraction=0.2) == 0
    xs = site.loc[rows, list(FEATURES)].to_numpy()
    ys = site.loc[rows, ["y"]].to_numpy(dtype=np.float64)
    spec = get_model("linear")
    hp = spec.validate({})
    w = np.full(len(FEATURES) + 1, 0.05)
    common = {"spec": spec, "hp": hp, "task": "binary", "x": xs, "y": ys, "weights": w}
    _local.clipped_gradient_sum(**common, clip_norm=1.0)  # warm-up (imports)
    _local.batch_gradient(**common, batch_size=None, seed=0)
    reps = 20
    t0 = time.perf_counter()
    for _ in range(reps):
        _local.clipped_gradient_sum(**common, clip_norm=1.0)
    t_dp = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(reps):
        _local.batch_gradient(**common, batch_size=None, seed=0)
    t_plain = time.perf_counter() - t0
    print(
        f"pooled LogisticRegression test AUC {pooled_auc:.4f}; FedAvg {plain_auc:.4f}; "
        f"DP eps=1 {eps1_auc:.4f} (noise multiplier {eps1.dp['noise_multiplier']:.3f}); "
        f"DP eps=4 {eps4_auc:.4f}; DP step {t_dp / reps * 1e3:.2f} ms, "
        f"plain step {t_plain / reps * 1e3:.2f} ms"
    )
    print(
        f"dp_train sites=3 rows={len(pooled)} pooled_auc={pooled_auc:.4f} "
        f"plain_auc={plain_auc:.4f} eps1_auc={eps1_auc:.4f} eps4_auc={eps4_auc:.4f} "
        f"eps1_multiplier={eps1.dp['noise_multiplier']:.4f} "
        f"dp_step_over_plain={t_dp / t_plain:.2f}"
    )


if __name__ == "__main__":
    main()
