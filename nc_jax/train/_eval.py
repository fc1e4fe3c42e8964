"""Evaluation of a trained state: losses, accuracies and neural-collapse metrics of a dataset.

Owns :func:`_evaluate` (inference over a whole dataset in padded batches), the collapse
report of the features and the final cosine margins; the metrics come from :mod:`nc_jax.metrics`.
"""

from __future__ import annotations

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from nc_jax import data as data_lib
from nc_jax import models
from nc_jax.io import save_npz_atomic


def _put_rows(array: np.ndarray, idx: np.ndarray, sharding) -> jax.Array:
    """``array[idx]`` as one array laid out by ``sharding`` (rows split over its devices).

    Each process reads and places only the rows of its own devices, so with several
    processes no host holds or sends the whole batch; in one process it is ``device_put``.
    """
    shape = (len(idx),) + array.shape[1:]
    shards = [jax.device_put(array[idx[index[0]]], device)
              for device, index in sharding.addressable_devices_indices_map(shape).items()]
    return jax.make_array_from_single_device_arrays(shape, sharding, shards)


def _evaluate(eval_fn, loss_fn, variables, ds: data_lib.Dataset, batch_size: int, sharding):
    """``(features, loss, accuracy)`` of a whole dataset (last batch padded, outputs trimmed).

    ``eval_fn`` returns replicated outputs: with several processes each gets every row."""
    n = ds.size
    logits, feats = [], []
    for start in range(0, n, batch_size):
        idx = np.arange(start, start + batch_size) % n
        lg, ft = eval_fn(variables, _put_rows(ds.images, idx, sharding))
        logits.append(lg)
        feats.append(ft)
    logits = np.concatenate([np.asarray(a) for a in logits])[:n]
    feats = np.concatenate([np.asarray(a) for a in feats])[:n]
    loss = float(loss_fn(jnp.asarray(logits), jnp.asarray(ds.labels)))
    return feats, loss, float(np.mean(np.argmax(logits, -1) == ds.labels))


def _collapse_fn(labels: np.ndarray, num_classes: int):
    """``collapse_report`` jitted once per dataset (static K and largest class size)."""
    from nc_jax import metrics

    max_class = int(np.bincount(labels, minlength=num_classes).max())
    return jax.jit(functools.partial(metrics.collapse_report, num_classes=num_classes, max_class_size=max_class))


def _classifier(model, params):
    """``(W, b)`` of the model as JAX arrays (``b`` is ``None`` without bias)."""
    w, b = models.classifier_weights(model, params)
    return jnp.asarray(w), None if b is None else jnp.asarray(b)


def _collapse(report_fn, model, params, feats, labels) -> dict:
    """The collapse report of ``feats`` (N x d) as ``{metric: float}``."""
    w, b = _classifier(model, params)
    rep = report_fn(w, b, jnp.asarray(feats.T), jnp.asarray(labels))
    return {k: float(v) for k, v in jax.device_get(rep)._asdict().items()}


def _final_features(path: Path | None, model, params, feats, labels, num_classes: int) -> np.ndarray:
    """Write ``path`` (features, labels, W, b, sorted cosine margins; None: nothing written);
    return the sorted margins."""
    from nc_jax import metrics

    w, b = _classifier(model, params)
    cm_fn = jax.jit(functools.partial(metrics.cosine_margin, num_classes=num_classes))
    cm = np.sort(np.asarray(cm_fn(w, b, jnp.asarray(feats.T), jnp.asarray(labels))))
    if path is None:
        return cm
    save_npz_atomic(path, features=feats, labels=labels, W=np.asarray(w),
                     b=np.zeros(num_classes, w.dtype) if b is None else np.asarray(b), cosine_margins_sorted=cm)
    return cm
