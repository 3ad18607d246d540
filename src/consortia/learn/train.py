"""Federated model training as a consortia algorithm (``learn.train``).

Rounds
------
* ``train`` (one per training round): the hub broadcasts the global weights
  (``weights``; Scaffold adds ``control`` and ``previous``).  Each site scores the
  broadcast model on its splits (the round's metrics), trains a copy on its
  ``train`` split with PyTorch and releases, as sums over sites:
  ``update = n_i * clip(y_i - x)``, its split sizes ``counts`` and, per split, the
  summed loss ``loss`` and correct predictions ``correct`` (binary), ``clipped``
  (1 when its update was clipped), and for Scaffold ``grad = n_i * clip(g_i(x))``.
  The hub divides by ``sum n_i`` and lets the strategy move the global weights
  (:mod:`consortia.learn.strategies`).
* ``evaluate``: the final weights' metrics, plus AUC histograms (binary) or the
  evaluation split's risk moments and event counts on ``time_grid`` (cox);
* ``concordance`` (cox with a ``time_grid``): the cells of the C-index
  (:mod:`consortia.learn.evaluation`).

Clipping and the fixed-point range
----------------------------------
Every site clips its update to L2 norm ``clip_norm`` before weighting it, so each
value of ``update`` satisfies ``|v| <= n_i * clip_norm``; Scaffold's gradient is
clipped to ``clip_norm / lr``, so ``|v| <= n_i * clip_norm / lr``.  The privacy layer
accepts ``|v| <= 2**(63 - frac_bits) / n_parties`` (``5.5e8`` for the default 24
fractional bits and up to :data:`MAX_SITES` sites).  A site checks
``n_i * clip_norm / min(lr, 1) <= 2**(63 - 24) / MAX_SITES`` before it trains and
refuses otherwise, so the encoding of a clipped update can never overflow; losses are
checked against the same bound.  Each value of the mean update is exact to
``n_sites * 2**-25 / sum n_i`` (the codec's resolution).

Differential privacy
--------------------
With ``dp`` the study trains with record-level differential privacy by distributed
DP-SGD (:mod:`consortia.learn.dp`): each round every site releases the sum of the
per-sample clipped gradients of a secret Poisson sample of its training rows, in
integer units, and the runtime adds the site's share of the calibrated Gaussian
noise before masking; the study's ``(epsilon, delta)`` is declared by
:meth:`Training.privacy_cost` and charged by the node before the first round.

Determinism
-----------
Local training is seeded from ``(seed, round, site name)`` and runs single-threaded
with deterministic torch algorithms in float64: a simulation and a deployment of the
same study give bit-identical weights on CPU.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from consortia.data.dataset import Dataset
from consortia.errors import AlgorithmError, ValidationError
from consortia.learn import _local, _site
from consortia.learn import dp as _dp
from consortia.learn._hub import Evaluator, check_params
from consortia.learn._site import MAX_SITES
from consortia.learn.models import get_model
from consortia.learn.result import TrainingResult
from consortia.learn.strategies import Strategy, make_strategy
from consortia.protocol import (
    Algorithm,
    Contribution,
    Coordination,
    Requirements,
    Round,
    TrainingPlan,
    register,
)
from consortia.survival._grid import binned_on

__all__ = ["MAX_SITES", "Training"]


@register
@dataclass(frozen=True, kw_only=True)
class Training(Algorithm):
    """Train a registered model across sites with a federated strategy.

    Parameters
    ----------
    model
        A registered model name (:func:`consortia.learn.models.registered_models`).
    features
        Numeric feature columns, in the order of the model's inputs.
    task
        ``"binary"`` (``label`` holds 0/1; logistic loss on the first output),
        ``"regression"`` (squared error) or ``"cox"`` (``time`` and ``event``; the
        negative Breslow partial log-likelihood within each batch).
    label, time, event
        The outcome columns of the task.
    hyperparameters
        The model's JSON hyperparameters.
    strategy
        ``fedavg``, ``fedprox``, ``scaffold``, ``fedadam``, ``fedyogi`` or ``fedadagrad``.
    strategy_params
        The strategy's parameters (``server_lr``; ``mu``; ``beta1``, ``beta2``, ``tau``).
    rounds
        Most training rounds.
    local_steps
        SGD updates per site and round.
    batch_size
        Rows per update; ``None`` for the whole training split (full-batch gradient).
    lr
        The local (client) learning rate.
    clip_norm
        L2 bound of each site's update per round (see the module notes).
    seed
        The study's seed: initial weights, splits and local batches derive from it.
    init
        ``"uniform"`` (as torch's ``nn.Linear``) or ``"zeros"``.
    split_column
        A column holding ``train``/``val``/``test``; otherwise the split is hashed
        from (seed, patient id) with ``val_fraction`` and ``test_fraction``.
    id_column
        The patient-id column of the hashed split (default: the dataset's declared
        id column, else the row position).
    patience
        Early stopping: stop when the federated validation loss has not improved for
        this many rounds, and keep the weights of its lowest value (needs a ``val``
        split); a study that reaches ``rounds`` first keeps its last weights.
        ``None``: no early stopping.
    auc_bins
        Bins of the predicted probability for the AUC (binary).
    time_grid
        Public time grid of the C-index (cox); ``None``: no C-index.
    score_bins
        Score bins of the C-index.
    round_timeout
        Seconds a site may spend on a training round (``Round.timeout``).
    dp
        Record-level differential privacy by distributed DP-SGD
        (:mod:`consortia.learn.dp`): ``delta``, ``sample_rate`` (Poisson rate of each
        round's batch, default 1) and either ``noise_multiplier`` or a target
        ``epsilon`` (calibrated over ``rounds``).  Needs ``local_steps=1``, no
        ``batch_size``, task ``binary`` or ``regression``, and not Scaffold; with it,
        ``clip_norm`` bounds each record's gradient.  ``None``: no noise.
    """

    name = "learn.train"
    model: str
    features: tuple[str, ...]
    task: str
    label: str | None = None
    time: str | None = None
    event: str | None = None
    hyperparameters: Mapping[str, Any] = field(default_factory=dict)
    strategy: str = "fedavg"
    strategy_params: Mapping[str, Any] = field(default_factory=dict)
    rounds: int = 10
    local_steps: int = 1
    batch_size: int | None = None
    lr: float = 0.1
    clip_norm: float = 100.0
    seed: int = 0
    init: str = "uniform"
    split_column: str | None = None
    id_column: str | None = None
    val_fraction: float = 0.0
    test_fraction: float = 0.0
    patience: int | None = None
    auc_bins: int = 1000
    time_grid: tuple[float, ...] | None = None
    score_bins: int = 1024
    round_timeout: float | None = None
    dp: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        check_params(self)
        if self.dp is not None:
            self._check_dp()
        hp = get_model(self.model).validate(self.hyperparameters)
        object.__setattr__(self, "hyperparameters", MappingProxyType(hp))
        strat = make_strategy(self.strategy, self.strategy_params)
        object.__setattr__(self, "strategy_params", MappingProxyType(strat.params()))

    def _check_dp(self) -> None:
        for bad, why in (
            (self.local_steps != 1, "local_steps=1 (one noisy step per round)"),
            (self.batch_size is not None, "batch_size=None (batches are Poisson samples)"),
            (self.task == "cox", "a per-record loss (task 'binary' or 'regression')"),
            (self.strategy == "scaffold", "a strategy other than scaffold"),
        ):
            if bad:
                raise ValidationError(f"dp (differentially private training) needs {why}")
        norm = _dp.check_dp(self.dp or {}, rounds=self.rounds)
        object.__setattr__(self, "dp", MappingProxyType(norm))

    # ------------------------------------------------------------------ shared

    def privacy_cost(self) -> tuple[float, float]:
        """The study's ``(epsilon, delta)`` at each site's dataset (``(0, 0)`` without ``dp``).

        ``rounds`` Poisson-subsampled Gaussian steps, RDP accountant
        (:func:`consortia.learn.dp.epsilon_spent`); charged for every declared round.
        """
        if self.dp is None:
            return (0.0, 0.0)
        cached = self.__dict__.get("_privacy_cost")
        if cached is None:
            eps = _dp.epsilon_spent(
                noise_multiplier=float(self.dp["noise_multiplier"]),
                sample_rate=float(self.dp["sample_rate"]),
                steps=self.rounds * self.local_steps,
                delta=float(self.dp["delta"]),
            )
            cached = (eps, float(self.dp["delta"]))
            object.__setattr__(self, "_privacy_cost", cached)
        return cached

    @property
    def strategy_(self) -> Strategy:
        """The strategy object."""
        return make_strategy(self.strategy, self.strategy_params)

    @property
    def n_parameters(self) -> int:
        """Length of the model's parameter vector."""
        return get_model(self.model).n_parameters(len(self.features), self.hyperparameters)

    def _outcomes(self) -> tuple[str, ...]:
        if self.task == "cox":
            return (str(self.time), str(self.event))
        return (str(self.label),)

    def requirements(self, step: str) -> Requirements:
        """Every step: the model's parameter count; the feature, outcome and split columns."""
        cols = (*self.features, *self._outcomes())
        extra = tuple(c for c in (self.split_column, self.id_column) if c)
        plan = TrainingPlan(
            rounds=self.rounds,
            batch_rows=self.batch_size,
            sample_rate=None if self.dp is None else float(self.dp["sample_rate"]),
            clip_norm=self.clip_norm,
            dp=self.dp is not None,
        )
        return Requirements(n_parameters=self.n_parameters, columns=cols + extra, training=plan)

    # ------------------------------------------------------------------ hub side

    def coordinate(self) -> Coordination:
        spec = get_model(self.model)
        size = self.n_parameters
        if self.init == "zeros":
            weights = np.zeros(size)
        else:
            weights = spec.initial(len(self.features), self.hyperparameters, seed=self.seed)
        strategy = self.strategy_
        state = strategy.init_state(size)
        control, previous = np.zeros(size), None
        ev = Evaluator(task=self.task, auc_bins=self.auc_bins, score_bins=self.score_bins)
        best = (np.inf, weights, 0)
        stopped, done = False, 0
        for r in range(self.rounds):
            public: dict[str, Any] = {"weights": weights, "round": [r]}
            if strategy.control_variates:
                public["control"] = control
                if previous is not None:
                    public["previous"] = previous
            sums = yield Round("train", public, timeout=self.round_timeout)
            n_train = float(sums["counts"][0])
            if n_train < 1:
                raise AlgorithmError("no site has rows in its training split")
            if self.dp is None:
                delta = np.asarray(sums["update"]) / n_train
            else:  # the noisy sum of clipped gradients, in units, over the expected batch
                grad = np.asarray(sums["update"]) / _dp.quantise_scale(self.clip_norm)
                delta = -self.lr * grad / (float(self.dp["sample_rate"]) * n_train)
            ev.record(r, sums, float(np.linalg.norm(delta)))
            done = r + 1
            val = ev.last("val_loss")
            if self.patience is not None and np.isfinite(val):
                if val < best[0]:
                    best = (val, weights, r)
                elif r - best[2] >= self.patience:
                    stopped = True
                    break
            if strategy.control_variates:
                control, previous = np.asarray(sums["grad"]) / n_train, weights
            weights, state = strategy.step(weights, delta, state)
        best_round = done  # the weights after the last round
        if stopped:  # the weights of the lowest validation loss
            weights, best_round = best[1], best[2]
        sums = yield Round("evaluate", {"weights": weights})
        metrics, n = ev.final(sums)
        history = ev.history()
        if self.dp is not None:  # the training split's metrics were not released
            metrics = {k: v for k, v in metrics.items() if not k.startswith("train_")}
            history = {k: v for k, v in history.items() if not k.startswith("train_")}
        c_split = ""
        if self.task == "cox" and self.time_grid is not None:
            c_split, cells = ev.cindex_round(sums, n)
            if cells is not None:
                sums = yield Round("concordance", {"weights": weights, **cells})
                metrics.update(ev.cindex(sums))
        return TrainingResult(
            model=self.model,
            hyperparameters=dict(self.hyperparameters),
            features=tuple(self.features),
            task=self.task,
            weights=np.array(weights, dtype=np.float64),
            strategy=self.strategy,
            strategy_params=dict(self.strategy_params),
            rounds=done,
            best_round=int(best_round),
            stopped_early=stopped,
            history=history,
            metrics=metrics,
            n=n,
            c_index_split=c_split,
            privacy=_dp.privacy_block(
                self.dp, self.privacy_cost(), steps=self.rounds, clip_norm=self.clip_norm
            ),
        )

    # ------------------------------------------------------------------ site side

    def local(self, step: str, public: Mapping[str, np.ndarray], data: Dataset) -> Contribution:
        d = _site.read(self, data)
        spec, hp = get_model(self.model), self.hyperparameters
        weights = np.asarray(public["weights"], dtype=np.float64)
        score = _local.scores(spec=spec, hp=hp, x=d.x, weights=weights)
        arrays: dict[str, Any] = _site.metric_arrays(self, d, score)
        counts = {"counts", "correct"} if self.task == "binary" else {"counts"}
        kwargs: dict[str, Any] = {}
        noise: dict[str, float] = {}
        if step == "train":
            if self.dp is not None:
                arrays.update(_site.train_dp(self, d, public))
                noise["update"] = _dp.noise_std(
                    float(self.dp["noise_multiplier"]), self.n_parameters
                )
            else:
                arrays.update(_site.train(self, d, public, data.site))
        elif step == "evaluate":
            more, extra_counts = _site.evaluate(self, d, score)
            arrays.update(more)
            counts |= extra_counts
            if self.task == "cox" and self.time_grid is not None:
                kwargs = binned_on(str(self.time), self.time_grid)
        elif step == "concordance":
            arrays = _site.cells(self, d, score, public)
            counts = {"events", "censored"}
            kwargs = binned_on(str(self.time), self.time_grid or ())
        else:
            raise AlgorithmError(f"unknown step {step!r} for {self.name}")
        if self.dp is not None:
            _dp.hide_train_split(arrays, self.auc_bins)
        return Contribution(
            arrays,
            cohort=len(d.x),
            count_arrays=frozenset(counts),
            n_parameters=self.n_parameters,
            noise=noise,
            **kwargs,
        )
