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



def _evaluate(eval_fn, loss_fn, variables, ds: data_lib.Dataset, batch_size: int, sharding):
    """``(features, loss, accuracy)`` of a whole dataset (last batch padded, outputs trimmed)."""
    n = ds.size
    logits, feats = [], []
    for start in range(0, n, batch_size):
        idx = np.arange(start, start + batch_size) % n
        lg, ft = eval_fn(variables, jax.device_put(ds.images[idx], sharding))
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


def _final_features(path: Path, model, params, feats, labels, num_classes: int) -> np.ndarray:
    """Write ``path`` (features, labels, W, b, sorted cosine margins); return the sorted margins."""
    from nc_jax import metrics

    w, b = _classifier(model, params)
    cm_fn = jax.jit(functools.partial(metrics.cosine_margin, num_classes=num_classes))
    cm = np.sort(np.asarray(cm_fn(w, b, jnp.asarray(feats.T), jnp.asarray(labels))))
    save_npz_atomic(path, features=feats, labels=labels, W=np.asarray(w),
                     b=np.zeros(num_classes, w.dtype) if b is None else np.asarray(b), cosine_margins_sorted=cm)
    return cm
