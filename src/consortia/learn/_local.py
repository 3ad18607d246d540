"""Site-side training and scoring with PyTorch: deterministic, single-threaded, float64.

Everything here runs inside :meth:`consortia.learn.train.Training.local`.  Torch is
imported on first use, so the hub (and every module that only coordinates) needs no
torch.  A call runs with one intra-op thread and restores the caller's setting
afterwards; with the same inputs and seed it gives
bit-identical weights on CPU, in a simulation as in a node process.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from consortia.errors import TrainingDivergedError
from consortia.learn.models import ModelSpec, flatten, unflatten

__all__ = ["batch_gradient", "clipped_gradient_sum", "loss_sum", "scores", "site_seed", "train"]


def site_seed(seed: int, round_index: int, site: str | None) -> int:
    """A 63-bit seed from (study seed, round, site name): the same everywhere."""
    body = f"consortia.learn:{int(seed)}:{int(round_index)}:{site or ''}".encode()
    return int.from_bytes(hashlib.sha256(body).digest()[:8], "big") >> 1


@contextlib.contextmanager
def deterministic() -> Iterator[Any]:
    """One intra-op thread on CPU; the caller's setting restored.

    Every op used here (linear layers, element-wise maths, ``logcumsumexp``,
    ``argsort(stable=True)``, indexing) is deterministic on CPU with one thread, so
    ``torch.use_deterministic_algorithms`` is not needed (it matters for CUDA
    kernels, and its first call imports torch's compiler stack: seconds per process).
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield torch
    finally:
        torch.set_num_threads(threads)


def _loss(torch: Any, task: str, out: Any, y: Any, *, reduction: str) -> Any:
    """Loss of a batch: mean (training) or sum (metrics) over its rows.

    ``cox``: ``y`` holds (time, event); the negative Breslow partial log-likelihood
    within the batch (risk set: the batch's rows with a time at or after the event's).
    """
    if task == "regression":
        err = (out[:, 0] - y[:, 0]) ** 2
    elif task == "binary":
        err = torch.nn.functional.binary_cross_entropy_with_logits(
            out[:, 0], y[:, 0], reduction="none"
        )
    else:  # cox
        risk, time, event = out[:, 0], y[:, 0], y[:, 1]
        order = torch.argsort(-time, stable=True)
        r, t, e = risk[order], time[order], event[order]
        cum = torch.logcumsumexp(r, dim=0)
        # tied times share the risk set of the last of them in descending order
        last = torch.searchsorted(-t, -t, right=True) - 1
        err = -(r - cum[last]) * e
    return err.mean() if reduction == "mean" else err.sum()


def _module(spec: ModelSpec, hp: Mapping[str, Any], n_features: int, weights: np.ndarray) -> Any:
    module = spec.build(n_features, hp)
    unflatten(module, weights)
    return module


def train(
    *,
    spec: ModelSpec,
    hp: Mapping[str, Any],
    task: str,
    x: np.ndarray,
    y: np.ndarray,
    weights: np.ndarray,
    lr: float,
    steps: int,
    batch_size: int | None,
    mu: float,
    correction: np.ndarray | None,
    seed: int,
) -> np.ndarray:
    """Local SGD from the global ``weights``; returns the site's new weights.

    Each of ``steps`` updates takes the next batch of a per-epoch permutation drawn
    from ``torch.Generator().manual_seed(seed)`` (the last batch of an epoch may be
    short), or the whole split when ``batch_size`` is None.  The gradient of the
    batch's mean loss gets ``mu * (w - weights)`` (FedProx) and ``correction``
    (Scaffold's ``c - c_i``) added; the update is ``w <- w - lr * gradient``.

    Raises
    ------
    TrainingDivergedError
        A batch loss or the weights became NaN or infinite.
    """
    with deterministic() as torch:
        module = _module(spec, hp, x.shape[1], weights)
        params = list(module.parameters())
        anchor = [p.detach().clone() for p in params]
        corr = None
        if correction is not None:
            corr, offset = [], 0
            for p in params:
                n = p.numel()
                corr.append(torch.from_numpy(correction[offset : offset + n].copy()).view(p.shape))
                offset += n
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        n = x.shape[0]
        size = n if batch_size is None else min(batch_size, n)
        gen = torch.Generator().manual_seed(int(seed))
        order, pos = None, n
        for _ in range(steps):
            if batch_size is None:
                bx, by = xt, yt
            else:
                if pos >= n:
                    order, pos = torch.randperm(n, generator=gen), 0
                assert order is not None
                idx = order[pos : pos + size]
                pos += size
                bx, by = xt[idx], yt[idx]
            module.zero_grad(set_to_none=True)
            loss = _loss(torch, task, module(bx), by, reduction="mean")
            if not bool(torch.isfinite(loss)):
                raise TrainingDivergedError(
                    f"the local {task} loss became NaN or infinite; lower the learning rate 'lr'"
                )
            loss.backward()
            with torch.no_grad():
                for i, p in enumerate(params):
                    g = p.grad if p.grad is not None else torch.zeros_like(p)
                    if mu:
                        g = g + mu * (p - anchor[i])
                    if corr is not None:
                        g = g + corr[i]
                    p.sub_(lr * g)
        out = flatten(module)
    if not np.all(np.isfinite(out)):
        raise TrainingDivergedError("local training produced NaN or infinite weights")
    return out


def batch_gradient(
    *,
    spec: ModelSpec,
    hp: Mapping[str, Any],
    task: str,
    x: np.ndarray,
    y: np.ndarray,
    weights: np.ndarray,
    batch_size: int | None,
    seed: int,
) -> np.ndarray:
    """Mean over one epoch's batches of the batch-mean-loss gradient at ``weights``.

    The batches partition a permutation drawn from ``torch.Generator().manual_seed(seed)``
    (the last one may be short); without ``batch_size``, the full-batch gradient.
    """
    with deterministic() as torch:
        module = _module(spec, hp, x.shape[1], weights)
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        n = x.shape[0]
        if batch_size is None or batch_size >= n:
            batches = [torch.arange(n)]
        else:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
            batches = list(torch.split(order, batch_size))
        total = None
        for idx in batches:
            module.zero_grad(set_to_none=True)
            loss = _loss(torch, task, module(xt[idx]), yt[idx], reduction="mean")
            if not bool(torch.isfinite(loss)):
                raise TrainingDivergedError(f"the local {task} loss is NaN or infinite")
            loss.backward()
            parts = [
                (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                for p in module.parameters()
            ]
            g = torch.cat(parts)
            total = g if total is None else total + g
        assert total is not None
        return (total / len(batches)).numpy().astype(np.float64, copy=True)


def clipped_gradient_sum(
    *,
    spec: ModelSpec,
    hp: Mapping[str, Any],
    task: str,
    x: np.ndarray,
    y: np.ndarray,
    weights: np.ndarray,
    clip_norm: float,
    chunk: int = 4096,
) -> tuple[np.ndarray, int]:
    """Sum over rows of each row's loss gradient at ``weights``, each clipped to ``clip_norm``.

    DP-SGD's per-sample clipping: the gradient of every row's own loss is computed
    with ``torch.func`` (``vmap`` of ``grad`` over a functional call of the module),
    scaled to L2 norm at most ``clip_norm``, and summed.  Returns the sum and the
    number of rows whose gradient was clipped.  ``task`` must be a per-row loss
    (``binary`` or ``regression``).

    Raises
    ------
    TrainingDivergedError
        A per-sample gradient is NaN or infinite.
    """
    size = int(weights.size)
    if x.shape[0] == 0:
        return np.zeros(size), 0
    with deterministic() as torch:
        from torch.func import functional_call, grad, vmap

        module = _module(spec, hp, x.shape[1], weights)
        names = [n for n, _ in module.named_parameters()]
        params = {n: p.detach() for n, p in module.named_parameters()}

        def one(p: dict[str, Any], xi: Any, yi: Any) -> Any:
            out = functional_call(module, p, (xi.unsqueeze(0),))
            return _loss(torch, task, out, yi.unsqueeze(0), reduction="sum")

        per_row = vmap(grad(one), in_dims=(None, 0, 0))
        total = torch.zeros(size, dtype=torch.float64)
        clipped = 0
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        for start in range(0, x.shape[0], chunk):
            g = per_row(params, xt[start : start + chunk], yt[start : start + chunk])
            flat = torch.cat([g[n].reshape(g[n].shape[0], -1) for n in names], dim=1)
            norms = torch.linalg.vector_norm(flat, dim=1)
            if not bool(torch.all(torch.isfinite(norms))):
                raise TrainingDivergedError(
                    f"a per-sample {task} gradient is NaN or infinite; lower the learning rate 'lr'"
                )
            factor = torch.clamp(clip_norm / torch.clamp(norms, min=1e-300), max=1.0)
            clipped += int(torch.sum(norms > clip_norm))
            total += (flat * factor[:, None]).sum(dim=0)
        return total.numpy().astype(np.float64, copy=True), clipped


def scores(
    *, spec: ModelSpec, hp: Mapping[str, Any], x: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """The model's first output (a logit, a prediction or a risk score) per row."""
    if x.shape[0] == 0:
        return np.zeros(0)
    with deterministic() as torch:
        module = _module(spec, hp, x.shape[1], weights)
        with torch.no_grad():
            out = module(torch.from_numpy(x))[:, 0]
        return out.numpy().astype(np.float64, copy=True)


def loss_sum(task: str, score: np.ndarray, y: np.ndarray) -> float:
    """The split's summed loss from its scores (numpy; the losses of :func:`train`).

    ``cox``: the negative Breslow partial log-likelihood of the split (risk sets
    within this site's split: a site-stratified likelihood).
    """
    if score.size == 0:
        return 0.0
    with np.errstate(over="ignore", invalid="ignore"):  # the caller refuses a non-finite sum
        return _loss_sum(task, score, y)


def _loss_sum(task: str, score: np.ndarray, y: np.ndarray) -> float:
    if task == "regression":
        return float(np.sum((score - y[:, 0]) ** 2))
    if task == "binary":
        return float(np.sum(np.logaddexp(0.0, score) - y[:, 0] * score))
    time, event = y[:, 0], y[:, 1]
    order = np.argsort(-time, kind="stable")
    r, t, e = score[order], time[order], event[order]
    cum = np.logaddexp.accumulate(r)
    last = np.searchsorted(-t, -t, side="right") - 1
    return float(-np.sum((r - cum[last]) * e))
