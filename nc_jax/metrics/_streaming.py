"""Streaming accumulation: the optax-style states and their pure per-batch updates.

Owns :class:`CollapseStats` (per-class counts and means, pooled within-class scatter) with
its init/update, and :class:`SampleStats` (accuracy, NC4, cosine margin) of a second pass.
Batches are rows ``(N_batch, d)`` by default; :func:`collapse_report_from_stats` reads both.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from nc_jax.metrics._checks import _EXACT, _check_bias, _check_features, _concrete
from nc_jax.metrics._collapse import _nearest_center, _predict
from nc_jax.metrics._geometry import _cosine_margins


class CollapseStats(NamedTuple):
    """Streaming sufficient statistics of ``(features, labels)`` (an optax-style state).

    Built by :func:`collapse_stats_init`, advanced by :func:`collapse_stats_update`, read
    by :func:`collapse_report_from_stats`. A pytree of arrays: carry it through
    ``lax.scan`` or a jitted step like any optimizer state.

    Attributes:
      counts: ``(K,)`` integer number of samples seen per class.
      means: ``(d, K)`` running class means ``hbar_k`` (zero while a class is unseen), in
        the accumulation dtype.
      within_scatter: ``(d, d)`` pooled within-class scatter about the running means,
        ``S = sum_i (h_i - hbar_{y_i})(h_i - hbar_{y_i})^T`` (``N Sigma_W``).
    """

    counts: jax.Array
    means: jax.Array
    within_scatter: jax.Array


class SampleStats(NamedTuple):
    """Per-sample statistics of a second streaming pass (:func:`sample_stats_update`).

    Attributes:
      num_samples: integer number of samples seen.
      num_correct: integer count of samples with ``argmax_k (W h + b)_k == label``.
      num_ncc_mismatch: integer count of samples where the classifier and the
        nearest-class-center rule disagree (the numerator of NC4).
      margin_sum: sum of the cosine margins (Section 4).
      margin_min: smallest cosine margin (``+inf`` before any sample).
    """

    num_samples: jax.Array
    num_correct: jax.Array
    num_ncc_mismatch: jax.Array
    margin_sum: jax.Array
    margin_min: jax.Array


def _float_dtype(dtype):
    dtype = jnp.result_type(float) if dtype is None else jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"dtype must be a floating dtype; got {dtype}.")
    return dtype


def _stats_classifier(W, b, stats: CollapseStats) -> tuple[jax.Array, jax.Array]:
    """Checks ``W`` (K, d) and ``b`` (K,) or ``None`` against ``stats``; casts to its dtype."""
    d, K = stats.means.shape
    dtype = stats.means.dtype
    W = jnp.asarray(W)
    if W.shape != (K, d):
        raise ValueError(f"W must have shape (num_classes, d) = ({K}, {d}); got {W.shape}.")
    W = W.astype(dtype)
    return W, _check_bias(None if b is None else jnp.asarray(b).astype(dtype), W)


def _batch(features, labels, mask, feature_axis: int, d: int, num_classes: int, dtype):
    """Validates one batch. Returns ``(x, labels, valid)``.

    ``x`` is ``(B, d)`` in ``dtype`` with invalid rows zeroed, ``labels`` are clipped into
    ``[0, K)`` and ``valid`` (B,) is ``mask`` and-ed with the label range.
    """
    features = _check_features(
        features, layout="(N_batch, d) with feature_axis=-1, or (d, N_batch) with feature_axis=0")
    if isinstance(feature_axis, bool) or feature_axis not in (0, 1, -1, -2):
        raise ValueError(f"feature_axis must be -1 (rows are samples) or 0 (columns are "
                         f"samples); got {feature_axis!r}.")
    if feature_axis in (0, -2):
        features = features.T
    B = features.shape[0]
    if features.shape[1] != d:
        raise ValueError(
            f"features have {features.shape[1]} coordinates along feature_axis={feature_axis}; "
            f"the statistics hold d = {d} (features shape after layout: {features.shape})."
        )
    labels = jnp.asarray(labels)
    if labels.shape != (B,):
        raise ValueError(f"labels must have shape (N_batch,) = ({B},); got {labels.shape}.")
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(f"labels must be integers; got dtype {labels.dtype}.")
    if mask is None:
        valid = jnp.ones((B,), dtype=bool)
    else:
        mask = jnp.asarray(mask)
        if mask.shape != (B,):
            raise ValueError(f"mask must have shape (N_batch,) = ({B},); got {mask.shape}.")
        valid = mask.astype(bool)
    in_range = (labels >= 0) & (labels < num_classes)
    concrete_labels, concrete_valid = _concrete(labels), _concrete(valid)
    if concrete_labels is not None and concrete_valid is not None:
        bad = concrete_valid & ~((concrete_labels >= 0) & (concrete_labels < num_classes))
        if np.any(bad):
            raise ValueError(
                f"labels of unmasked samples must lie in [0, num_classes) = [0, {num_classes}); "
                f"got {sorted(set(concrete_labels[bad].tolist()))}."
            )
    valid = valid & in_range
    x = jnp.where(valid[:, None], features.astype(dtype), jnp.zeros((), dtype=dtype))
    return x, jnp.clip(labels, 0, num_classes - 1), valid


def collapse_stats_init(num_classes: int, feature_dim: int, dtype=None) -> CollapseStats:
    """Empty streaming statistics for ``num_classes`` classes of ``feature_dim`` features.

    Args:
      num_classes: ``K >= 2``.
      feature_dim: ``d >= 1``.
      dtype: accumulation dtype; ``None`` is JAX's default float (float64 when
        ``jax_enable_x64`` is on, float32 otherwise). Batches are cast to it, so float32
        (or bfloat16) model outputs can be accumulated in float64.

    Returns:
      A :class:`CollapseStats` of zeros (``memory: d^2 + d K`` floats).
    """
    for name, value, low in (("num_classes", num_classes, 2), ("feature_dim", feature_dim, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an int >= {low}; got {value!r}.")
    dtype = _float_dtype(dtype)
    K, d = int(num_classes), int(feature_dim)
    return CollapseStats(
        counts=jnp.zeros((K,), dtype=jnp.result_type(int)),
        means=jnp.zeros((d, K), dtype=dtype),
        within_scatter=jnp.zeros((d, d), dtype=dtype),
    )


def collapse_stats_update(state: CollapseStats, features, labels, mask=None, *,
                          feature_axis: int = -1) -> CollapseStats:
    """Adds one batch to the streaming statistics (pure; jit it at the call site).

    **Layout.** By default ``features`` is ``(N_batch, d)``: one *row* per sample, as a
    Flax model returns it. Pass ``feature_axis=0`` for nc_jax's ``(d, N_batch)`` columns.

    **Update** (Chan et al.'s pairwise rule, per class, pooled over classes). For class
    ``k`` with ``n_a`` samples seen (mean ``m_a``) and ``n_b`` in this batch (batch mean
    ``m_b``, batch scatter ``M_b = sum_{i in batch, y_i = k} (h_i - m_b)(h_i - m_b)^T``),
    with ``n = n_a + n_b`` and ``delta = m_b - m_a``::

        m   = m_a + (n_b / n) delta
        S_k = S_k + M_b + (n_a n_b / n) delta delta^T

    Since the batch residuals ``r_i = h_i - m_b`` sum to zero over the class,
    ``M_b + (n_a n_b / n) delta delta^T = sum_i y_i y_i^T`` with
    ``y_i = r_i + sqrt(n_a / n) delta``: the pooled ``S = sum_k S_k`` gets one
    ``(B, d)^T (B, d)`` product per batch (no ``d^2 K`` term). Every term added is
    positive semi-definite and built from differences to *means*, never
    ``sum h h^T - n m m^T``: that form loses about ``eps * (||h|| / spread)^2``
    relative accuracy, all of it at collapse (float32, NC1 ~ 1e-6: no digits left);
    this one loses about ``eps * ||h|| / spread``, the same as rounding the features.

    **Masking.** Samples with ``mask`` False (or 0) are ignored, so a padded last batch
    has the same shape and reuses the compiled update. Under ``jax.jit``, samples whose
    label lies outside ``[0, K)`` are ignored too; with concrete inputs they raise.

    Args:
      state: :class:`CollapseStats` from :func:`collapse_stats_init` or this function.
      features: ``(N_batch, d)`` float array (``(d, N_batch)`` with ``feature_axis=0``);
        cast to the state's dtype.
      labels: ``(N_batch,)`` integer labels in ``[0, K)``.
      mask: optional ``(N_batch,)`` bool (or 0/1) array; ``None`` keeps every sample.
      feature_axis: axis of ``features`` that holds the ``d`` coordinates: ``-1``/``1``
        (rows are samples, the default) or ``0``/``-2`` (columns are samples).

    Returns:
      The updated :class:`CollapseStats`.
    """
    d, K = state.means.shape
    dtype = state.means.dtype
    x, labels, valid = _batch(features, labels, mask, feature_axis, d, K, dtype)
    onehot = jax.nn.one_hot(labels, K, dtype=dtype) * valid[:, None].astype(dtype)  # (B, K)
    n_b = jnp.sum(onehot, axis=0)  # (K,) exact small integers
    one = jnp.ones_like(n_b)
    mean_b = jnp.matmul(x.T, onehot, precision=_EXACT) / jnp.where(n_b > 0, n_b, one)  # (d, K)
    n_a = state.counts.astype(dtype)
    n = n_a + n_b
    safe_n = jnp.where(n > 0, n, one)
    delta = jnp.where(n_b[None, :] > 0, mean_b - state.means, jnp.zeros_like(mean_b))
    means = state.means + delta * (n_b / safe_n)[None, :]
    shift = jnp.sqrt(n_a / safe_n)  # (K,): 0 for a class first seen in this batch
    rows = (x - mean_b.T[labels]) + shift[labels][:, None] * delta.T[labels]  # (B, d)
    rows = jnp.where(valid[:, None], rows, jnp.zeros_like(rows))
    return CollapseStats(
        counts=state.counts + n_b.astype(state.counts.dtype),
        means=means,
        within_scatter=state.within_scatter + jnp.matmul(rows.T, rows, precision=_EXACT),
    )


def sample_stats_init(dtype=None) -> SampleStats:
    """Empty per-sample statistics for the second pass (:func:`sample_stats_update`).

    Args:
      dtype: dtype of the margin sums; ``None`` is JAX's default float. Use the dtype of
        the :class:`CollapseStats` the pass reads.

    Returns:
      A :class:`SampleStats` of zeros (``margin_min = +inf``).
    """
    dtype = _float_dtype(dtype)
    zero = jnp.zeros((), dtype=jnp.result_type(int))
    return SampleStats(
        num_samples=zero, num_correct=zero, num_ncc_mismatch=zero,
        margin_sum=jnp.zeros((), dtype=dtype),
        margin_min=jnp.full((), jnp.inf, dtype=dtype),
    )


def sample_stats_update(state: SampleStats, stats: CollapseStats, W, b, features, labels,
                        mask=None, *, feature_axis: int = -1) -> SampleStats:
    """Adds one batch to the per-sample statistics: accuracy, NC4 and the cosine margin.

    These need every sample *and* the final class means (NC4's nearest class center, the
    cosine margin's global mean ``h_G = sum_k n_k hbar_k / N``), so they take a second
    pass over the data after the :class:`CollapseStats` pass is complete. Definitions as
    in :func:`nc4`, :func:`cosine_margin` and :class:`CollapseReport` ``.accuracy`` (the
    same rules, with full-precision matmuls).

    Args:
      state: :class:`SampleStats` from :func:`sample_stats_init` or this function.
      stats: the complete :class:`CollapseStats` of the same data.
      W: ``(K, d)`` classifier (rows ``w^k``; a Flax ``Dense`` kernel is ``W.T``).
      b: ``(K,)`` bias or ``None``.
      features, labels, mask, feature_axis: as in :func:`collapse_stats_update`.
        ``features``, ``W`` and ``b`` are cast to the dtype of ``stats``.

    Returns:
      The updated :class:`SampleStats`.
    """
    d, K = stats.means.shape
    dtype = stats.means.dtype
    x, labels, valid = _batch(features, labels, mask, feature_axis, d, K, dtype)
    W, b = _stats_classifier(W, b, stats)
    h = x.T  # (d, B): the layout of the one-shot rules
    pred = _predict(W, b, h, precision=_EXACT)
    ncc = _nearest_center(stats.means, h, precision=_EXACT)
    counts = stats.counts.astype(dtype)
    total = jnp.sum(counts)
    safe_total = jnp.where(total > 0, total, jnp.ones_like(total))
    h_g = jnp.matmul(stats.means, counts, precision=_EXACT) / safe_total  # global mean h_G
    margin = _cosine_margins(W, h - h_g[:, None], labels, K, precision=_EXACT)
    int_dtype = state.num_samples.dtype
    return SampleStats(
        num_samples=state.num_samples + jnp.sum(valid).astype(int_dtype),
        num_correct=state.num_correct + jnp.sum(valid & (pred == labels)).astype(int_dtype),
        num_ncc_mismatch=state.num_ncc_mismatch + jnp.sum(valid & (pred != ncc)).astype(int_dtype),
        margin_sum=state.margin_sum + jnp.sum(jnp.where(valid, margin, jnp.zeros_like(margin))),
        margin_min=jnp.minimum(state.margin_min, jnp.min(
            jnp.where(valid, margin, jnp.array(jnp.inf, dtype=dtype)), initial=jnp.inf)),
    )
