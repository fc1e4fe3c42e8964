"""Class means, NC1 (the one implementation, from features or from scatter) and NC4.

Owns the class means and their centering, both NC1 variants (eq. 6 and the trace ratio)
behind a single rule :func:`_nc1` that :func:`nc1`, :func:`nc1_from_scatter` and the
streaming report all reach, and the per-sample classifier / nearest-class-center rules
that NC4 and the streaming second pass share.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from nc_jax.metrics._checks import (
    _EXACT,
    _check_bias,
    _check_features,
    _check_labelled,
    _check_labels,
    _check_variant,
    _concrete,
    _one_hot,
)


def _means(features: jax.Array, labels: jax.Array, num_classes: int):
    """Returns (class means (d, K), counts (K,)) in the features' dtype."""
    onehot = _one_hot(labels, num_classes, features.dtype)
    counts = jnp.sum(onehot, axis=0)
    sums = features @ onehot
    safe = jnp.where(counts > 0, counts, jnp.ones_like(counts))
    return sums / safe[None, :], counts


def _center(means: jax.Array) -> jax.Array:
    """``Hbar`` (d, K): class means centered at the unweighted mean of the class means."""
    return means - jnp.mean(means, axis=1, keepdims=True)


def _centered_means(features: jax.Array, labels: jax.Array, num_classes: int) -> jax.Array:
    return _center(_means(features, labels, num_classes)[0])


def class_means(features, labels, *, num_classes: int | None = None) -> jax.Array:
    """Per-class means ``hbar_k`` (uncentered) as a ``(d, K)`` array (Appendix A).

    Args:
      features: ``(d, N)`` float array.
      labels: ``(N,)`` integer labels in ``[0, num_classes)``.
      num_classes: static ``K >= 2``; inferred only from concrete labels.

    Returns:
      ``(d, K)`` array of class means.
    """
    features = _check_features(features)
    labels, K = _check_labels(labels, features.shape[1], num_classes)
    return _means(features, labels, K)[0]


# ----------------------------------------------------------------------------- NC1


def _nc1(means: jax.Array, num_samples, variant: str, *, within_trace,
         within_quadratic) -> jax.Array:
    """The one implementation of NC1 (:func:`nc1`, :func:`nc1_from_scatter`).

    ``means`` (d, K) are the class means (centered here at their unweighted mean);
    ``within_trace()`` returns ``tr(N Sigma_W)`` and ``within_quadratic(U)`` returns
    ``u_j^T (N Sigma_W) u_j`` for the columns of ``U`` (d, r); ``num_samples`` is ``N``.

    ``"trace"``: ``tr(Sigma_W) / tr(Sigma_B)`` with ``tr(Sigma_B) = ||Hbar||_F^2 / K``.
    ``"pinv"``: ``(1/K) tr(Sigma_W Sigma_B^+)`` from the thin SVD of ``Hbar``, keeping at
    most ``K - 1`` directions and only ``S_j > max(d, K) * eps * S_1``. NaN if
    ``Hbar = 0``.
    """
    d, K = means.shape
    dtype = means.dtype
    nan = jnp.array(jnp.nan, dtype=dtype)
    hbar = _center(means)  # (d, K)
    if variant == "trace":
        tr_w = within_trace() / num_samples
        tr_b = jnp.sum(hbar * hbar) / K
        return jnp.where(tr_b > 0, tr_w / jnp.where(tr_b > 0, tr_b, jnp.ones_like(tr_b)), nan)
    U, S, _ = jnp.linalg.svd(hbar, full_matrices=False)  # U (d, r), S (r,), r = min(d, K)
    eps = jnp.finfo(dtype).eps
    cutoff = max(d, K) * eps * S[0]
    idx = jnp.arange(S.shape[0])
    keep = (idx < K - 1) & (S > cutoff)
    within = within_quadratic(U) / num_samples  # u_j^T Sigma_W u_j
    inv = jnp.where(keep, 1.0 / jnp.where(keep, S * S, jnp.ones_like(S)), jnp.zeros_like(S))
    # (1/K) tr(Sigma_W Sigma_B^+) with Sigma_B^+ = sum_j u_j u_j^T K / S_j^2.
    value = jnp.sum(within * inv)
    return jnp.where(jnp.any(keep), value, nan)


def nc1(features, labels, *, num_classes: int | None = None, variant: str = "pinv") -> jax.Array:
    """Within-class variability collapse ``NC1 = tr(Sigma_W Sigma_B^+)/K`` (eq. 6).

    ``Sigma_W``, ``Sigma_B`` as in Appendix A (unbalanced labels: see the
    ``nc_jax.metrics`` docstring). ``Sigma_B = Hbar Hbar^T / K`` has rank at most
    ``K - 1``; its pseudo-inverse is taken from the thin SVD ``Hbar = U S V^T`` keeping at
    most ``K - 1`` singular directions and only those with
    ``S_j > max(d, K) * eps * S_1`` (``eps`` of the features' dtype). Then
    ``NC1 = sum_j (u_j^T Sigma_W u_j) / S_j^2`` over kept ``j``; ``Sigma_W`` is never
    formed. This is stable in float32, where a pseudo-inverse
    with a tiny relative cutoff (numpy's default ``rcond=1e-15``) inverts rounding noise in
    the ``d - K + 1`` null directions of ``Sigma_B`` and blows up on nearly collapsed
    features.

    Args:
      features: ``(d, N)`` float array ``H``.
      labels: ``(N,)`` integer labels.
      num_classes: static ``K >= 2`` (required under ``jax.jit``).
      variant: ``"pinv"`` for eq. (6); ``"trace"`` for ``tr(Sigma_W) / tr(Sigma_B)``.

    Returns:
      Scalar in the features' dtype; NaN when all class means coincide.
    """
    features = _check_features(features)
    labels, K = _check_labels(labels, features.shape[1], num_classes)
    _check_variant(variant)
    means, _ = _means(features, labels, K)
    resid = features - means[:, labels]  # (d, N)

    def within_quadratic(U):  # u_j^T (N Sigma_W) u_j from the residuals; Sigma_W never formed
        proj = U.T @ resid  # (r, N)
        return jnp.sum(proj * proj, axis=1)

    return _nc1(means, features.shape[1], variant, within_quadratic=within_quadratic,
                within_trace=lambda: jnp.sum(resid * resid))


def nc1_from_scatter(class_means, within_scatter, num_samples, *,
                     variant: str = "pinv") -> jax.Array:
    """NC1 (eq. 6) from sufficient statistics: class means and the within-class scatter.

    The same quantity and the same pseudo-inverse rule as :func:`nc1` (one shared
    implementation), for callers that hold statistics instead of the features: the
    streaming accumulator (:func:`collapse_stats_update`) and the sufficient-statistics
    descent of ``nc_jax.landscape``. With ``Sigma_W = within_scatter / num_samples`` and
    the thin SVD ``Hbar = U S V^T`` of the centered class means,
    ``NC1 = sum_j (u_j^T Sigma_W u_j) / S_j^2`` over the kept directions (at most
    ``K - 1``, and only ``S_j > max(d, K) * eps * S_1``). Quadratic forms that rounding
    leaves slightly negative are clamped to 0.

    Accuracy: from the features, :func:`nc1` projects each residual onto ``u_j`` before
    squaring; here ``S`` is already summed, so a quadratic form carries an absolute error
    of about ``eps * ||S||_2``. That only matters in float32 when the within-class spread
    along the class-mean directions is orders of magnitude below the spread in the other
    directions (anisotropic collapse, NC1 ~ 1e-11); prefer :func:`nc1` when the features
    are at hand.

    Args:
      class_means: ``(d, K)`` class means ``hbar_k`` (centered or not: they are centered
        at their unweighted mean here, as in :func:`nc1`).
      within_scatter: ``(d, d)`` within-class scatter
        ``S = sum_i (h_i - hbar_{y_i})(h_i - hbar_{y_i})^T`` (``N Sigma_W``), same dtype.
      num_samples: ``N``, the number of samples summed in ``S``: an int or a scalar array
        (traced values allowed).
      variant: ``"pinv"`` for eq. (6); ``"trace"`` for ``tr(Sigma_W) / tr(Sigma_B)``.

    Returns:
      Scalar in the class means' dtype; NaN when all class means coincide.
    """
    class_means = _check_features(class_means, name="class_means", layout="(d, K)")
    d, K = class_means.shape
    if K < 2:
        raise ValueError(f"class_means must have K >= 2 columns; got shape {class_means.shape}.")
    within_scatter = jnp.asarray(within_scatter)
    if within_scatter.shape != (d, d):
        raise ValueError(
            f"within_scatter must have shape (d, d) = ({d}, {d}) to match class_means; "
            f"got {within_scatter.shape}."
        )
    if within_scatter.dtype != class_means.dtype:
        raise ValueError(
            f"within_scatter and class_means must share one dtype; got "
            f"{within_scatter.dtype} and {class_means.dtype}."
        )
    _check_variant(variant)
    concrete = _concrete(num_samples)
    if concrete is not None and (concrete.ndim != 0 or not concrete > 0):
        raise ValueError(f"num_samples must be a positive scalar; got {num_samples!r}.")
    n = jnp.asarray(num_samples).astype(class_means.dtype)

    def within_quadratic(U):  # diag(U^T S U), clamped: a summed S may round below 0
        SU = jnp.matmul(within_scatter, U, precision=_EXACT)
        return jnp.maximum(jnp.sum(U * SU, axis=0), 0.0)

    return _nc1(class_means, n, variant, within_quadratic=within_quadratic,
                within_trace=lambda: jnp.trace(within_scatter))


# ----------------------------------------------------------------------------- NC4


def _predict(W: jax.Array, b: jax.Array, features: jax.Array, precision=None) -> jax.Array:
    """Classifier decisions ``argmax_k (W h_i + b)_k`` for the columns of ``features``."""
    return jnp.argmax(jnp.matmul(W, features, precision=precision) + b[:, None], axis=0)


def _nearest_center(means: jax.Array, features: jax.Array, precision=None) -> jax.Array:
    """Nearest-class-center decisions ``argmin_k ||h_i - m_k||`` for the columns."""
    # ||h - m_k||^2 = ||h||^2 - 2 m_k^T h + ||m_k||^2; the ||h||^2 term is common.
    dist = (jnp.sum(means * means, axis=0)[:, None]
            - 2.0 * jnp.matmul(means.T, features, precision=precision))
    return jnp.argmin(dist, axis=0)


def nc4(W, b, features, labels, *, num_classes: int | None = None) -> jax.Array:
    """Fraction of samples where the classifier disagrees with the nearest class center.

    ``NC4 = mean_i [ argmax_k (W h_i + b)_k != argmin_k ||h_i - hbar_k|| ]`` (Papyan et
    al.'s NC4); 0 at collapse. ``labels`` are only used to form the class means.

    Args:
      W: ``(K, d)`` classifier.
      b: ``(K,)`` bias or ``None`` (zero).
      features: ``(d, N)`` float array.
      labels: ``(N,)`` integer labels.
      num_classes: static ``K`` (``None``: taken from ``W``).

    Returns:
      Scalar in ``[0, 1]`` in the features' dtype.
    """
    W, features, labels, K = _check_labelled(W, features, labels, num_classes)
    b = _check_bias(b, W)
    means, _ = _means(features, labels, K)
    pred = _predict(W, b, features)
    ncc = _nearest_center(means, features)
    return jnp.mean((pred != ncc).astype(features.dtype))
