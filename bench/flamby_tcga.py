"""FLamby's Fed-TCGA-BRCA protocol with ``learn.train``, over secure aggregation.

Protocol (FLamby, NeurIPS 2022 Datasets & Benchmarks): 6 regions as sites, the
benchmark's fixed train/test split (``split_column="fold"``), a linear Cox model
(``cox_linear``: 39 inputs, no intercept, which the Cox likelihood ignores), the Cox
loss (Breslow) on batches of 8, SGD with 100 local updates per round, 5 rounds,
seeds 42-46.  Learning rates per strategy as FLamby used them: FedAvg 0.1; FedProx
0.1, mu 0.1; Scaffold 0.01, server lr 1.0; FedAdam 0.01, server 0.1; FedYogi 0.01,
server 0.1; FedAdagrad 0.01, server 1.0 (beta1 0.9, beta2 0.999, tau 1e-8; no bias
correction).  Our Scaffold uses control variates of option I (the site's full-batch
gradient at the previous global weights, recomputed, released as sums); FLamby's
uses option II.

Each run goes through ``consortia.Simulation`` (policy, fixed-point encoding, pairwise
masks, reveals).  Printed per strategy: the mean and standard deviation over seeds of
the pooled-test C-index of the final weights (lifelines ``concordance_index`` on the
pooled test set; the federated C-index from sums, with its bound, agrees), beside
FLamby's published figure and the exact ridge Cox fit on the pooled train set
(lifelines ``CoxPHFitter(penalizer=0.01)``, computed here).

``secure_over_plain``: the wall time of the same training (FedAdam, seed 42, every
round including the evaluation rounds) through ``Simulation`` over the time of a
plain driver that calls each site's ``local()`` and adds the arrays in the clear
(``consortia.protocol.Coordinator``), in this run; the best of 3 of each.  The two
give the same weights up to the fixed-point resolution (the maximum difference is
printed).

Policy: ``Policy(min_cell_count=1, max_params_per_sample=1.0)`` (39 parameters for
the 51 patients of Canada; the C-index cells are small counts).

Last line: ``flamby_tcga seeds=5 fedavg=<f> fedprox=<f> scaffold=<f> fedadam=<f>
fedyogi=<f> fedadagrad=<f> best=<f> secure_over_plain=<f>``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from lifelines import CoxPHFitter
from lifelines.utils import concordance_index

from consortia import Policy, Simulation
from consortia.data.dataset import Dataset
from consortia.data.tcga import load_tcga_brca
from consortia.learn import Training
from consortia.protocol import Coordinator, algorithm_from_spec
from consortia.survival._grid import day_grid

POLICY = Policy(min_cell_count=1, max_params_per_sample=1.0)
SEEDS = (42, 43, 44, 45, 46)
FLAMBY = {
    "fedavg": 0.735,
    "fedprox": 0.717,
    "scaffold": 0.700,
    "fedadam": 0.842,
    "fedyogi": 0.842,
    "fedadagrad": 0.834,
}
OPT = {"beta1": 0.9, "beta2": 0.999, "tau": 1e-8}
STRATEGIES: dict[str, tuple[float, dict[str, float]]] = {
    "fedavg": (0.1, {}),
    "fedprox": (0.1, {"mu": 0.1}),
    "scaffold": (0.01, {"server_lr": 1.0}),
    "fedadam": (0.01, {"server_lr": 0.1, **OPT}),
    "fedyogi": (0.01, {"server_lr": 0.1, **OPT}),
    "fedadagrad": (0.01, {"server_lr": 1.0, **OPT}),
}


def data_dir() -> Path:
    env = os.environ.get("CONSORTIA_SHARED_DATA")
    root = Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"
    return root / "tcga_brca"


def algorithm(covariates: tuple[str, ...], strategy: str, seed: int, grid: Any) -> Training:
    lr, params = STRATEGIES[strategy]
    return Training(
        model="cox_linear",
        features=covariates,
        task="cox",
        time="T",
        event="E",
        strategy=strategy,
        strategy_params=params,
        rounds=5,
        local_steps=100,
        batch_size=8,
        lr=lr,
        seed=seed,
        split_column="fold",
        clip_norm=1000.0,
        time_grid=grid,
        score_bins=4096,
    )


def plain_run(algo: Training, sites: dict[str, Any]) -> Any:
    """The same study with the sites' contributions added in the clear."""
    workers = {s: algorithm_from_spec(algo.spec()) for s in sites}
    data = {s: Dataset(df, site=s) for s, df in sites.items()}
    coord = Coordinator(algo)
    while not coord.done:
        rnd = coord.current
        assert rnd is not None
        total: dict[str, np.ndarray] = {}
        for s, w in workers.items():
            c = w.local(rnd.step, rnd.public, data[s])
            for k, v in c.arrays.items():
                total[k] = total[k] + v if k in total else np.array(v, dtype=np.float64)
        coord.advance(total)
    return coord.result


def main() -> None:
    tcga = load_tcga_brca(data_dir())
    covs = tcga.covariates
    sites = {
        r: df.reset_index(drop=True) for r, df in tcga.sites().items()
    }  # both folds: the split column says which rows train
    grid = day_grid(float(tcga.frame["T"].max()))
    test = tcga.pooled("test")
    x_test = test[list(covs)].to_numpy(dtype=np.float64)

    train = tcga.pooled("train")[[*covs, "T", "E"]]
    cph = CoxPHFitter(penalizer=0.01).fit(train, duration_col="T", event_col="E")
    ridge = concordance_index(test["T"], -cph.predict_partial_hazard(test), test["E"])
    print(f"exact ridge Cox (lifelines, penalizer 0.01), pooled test C-index: {ridge:.3f}")

    means: dict[str, float] = {}
    print(f"{'strategy':<11} {'mean':>6} {'sd':>6}  {'FLamby':>6}  seeds (fed C-index +- bound)")
    for name in STRATEGIES:
        cs, fed = [], []
        for seed in SEEDS:
            sim = Simulation(sites, policy=POLICY)
            res = sim.run(algorithm(covs, name, seed, grid))
            c = concordance_index(test["T"], -(x_test @ res.weights), test["E"])
            cs.append(c)
            fed.append(f"{res.metrics['c_index']:.3f}+-{res.metrics['c_index_bound']:.0e}")
            assert abs(res.metrics["c_index"] - c) <= res.metrics["c_index_bound"] + 1e-9
            clipped = float(np.sum(res.history["clipped_sites"]))
            assert clipped == 0, "the declared clipping bound changed the training"
        means[name] = float(np.mean(cs))
        print(
            f"{name:<11} {np.mean(cs):6.3f} {np.std(cs, ddof=1):6.3f}  {FLAMBY[name]:6.3f}  "
            + " ".join(f"{c:.3f}" for c in cs)
            + f"  ({', '.join(fed)})"
        )

    algo = algorithm(covs, "fedadam", 42, grid)
    secure_t, plain_t, secure_cpu, plain_cpu = [], [], [], []
    for _ in range(3):
        t0, c0 = time.perf_counter(), time.process_time()
        secure = Simulation(sites, policy=POLICY).run(algo)
        secure_t.append(time.perf_counter() - t0)
        secure_cpu.append(time.process_time() - c0)
        t0, c0 = time.perf_counter(), time.process_time()
        plain = plain_run(algo, sites)
        plain_t.append(time.perf_counter() - t0)
        plain_cpu.append(time.process_time() - c0)
    diff = float(np.max(np.abs(secure.weights - plain.weights)))
    ratio = min(secure_t) / min(plain_t)
    rounds = secure.rounds + 2  # the training rounds, the evaluation and the C-index cells
    print(
        f"fedadam seed 42, {rounds} rounds: secure {min(secure_t):.3f} s wall "
        f"({min(secure_cpu):.3f} s CPU), plain {min(plain_t):.3f} s wall "
        f"({min(plain_cpu):.3f} s CPU, {min(plain_cpu) / rounds:.3f} s CPU per round); "
        f"CPU ratio {min(secure_cpu) / min(plain_cpu):.2f}; "
        f"max |weight difference| {diff:.1e} (fixed-point resolution)"
    )
    best = max(means.values())
    print(
        f"flamby_tcga seeds={len(SEEDS)} "
        + " ".join(f"{k}={v:.3f}" for k, v in means.items())
        + f" best={best:.3f} secure_over_plain={ratio:.2f}"
    )


if __name__ == "__main__":
    main()
