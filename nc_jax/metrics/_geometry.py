"""Per-sample geometry of features: numerical rank, cosine margin and its distribution PCM.

Owns the Section 4 quantities that need every sample (no per-class sums determine them),
including the cosine-margin rule :func:`_cosine_margins` that the streaming second pass
reuses.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from nc_jax.metrics._checks import (
    _check_bias,
    _check_features,
    _check_labelled,
    _check_labels,
    _check_max_class_size,
    _one_hot,
)


def _class_singular_values(features: jax.Array, labels: jax.Array, K: int,
                           max_class_size: int) -> jax.Array:
    """Singular values of each class block ``H_k``: ``(K, min(d, m))`` array.

    Zero columns do not change singular values, so each class is zero-padded to
    ``m = max_class_size`` columns (batched SVD); when ``m >= N`` the classes are masked
    in place one at a time with ``lax.map`` instead (memory ``d x N`` per class).
    """
    d, N = features.shape
    if max_class_size >= N:
        def one(k):
            mask = (labels == k).astype(features.dtype)
            return jnp.linalg.svd(features * mask[None, :], compute_uv=False)

        ks = jnp.arange(K, dtype=labels.dtype)
        return jax.lax.map(one, ks)
    onehot = jax.nn.one_hot(labels, K, dtype=labels.dtype)
    pos = jnp.take_along_axis(jnp.cumsum(onehot, axis=0) - 1, labels[:, None], axis=1)[:, 0]
    buf = jnp.zeros((K, max_class_size, d), dtype=features.dtype)
    buf = buf.at[labels, pos].set(features.T, mode="drop")
    return jnp.linalg.svd(buf, compute_uv=False)


def numerical_rank(features, labels, *, num_classes: int | None = None,
                   max_class_size: int | None = None) -> jax.Array:
    """Numerical rank ``(1/K) sum_k ||H_k||_*^2 / ||H_k||_F^2`` (Section 4).

    ``H_k`` is the ``d x n_k`` block of class-``k`` features (uncentered, as in the
    paper). Equals 1 when each class lies on a line through the origin. Singular values
    come from an SVD of each block (not from the Gram matrix, whose square-root noise
    would add about ``d * sqrt(eps)`` in float32).

    Args:
      features: ``(d, N)`` float array.
      labels: ``(N,)`` integer labels.
      num_classes: static ``K >= 2`` (required under ``jax.jit``).
      max_class_size: static upper bound on the class sizes; ``None`` means the true
        maximum when labels are concrete, ``N`` under tracing (exact but ``K`` times the
        work: pass it under ``jax.jit`` for large ``N``). Samples beyond it are dropped.

    Returns:
      Scalar in ``[1, min(d, max n_k)]`` in the features' dtype; NaN if a class is all
      zero.
    """
    features = _check_features(features)
    labels, K = _check_labels(labels, features.shape[1], num_classes)
    max_class_size = _check_max_class_size(max_class_size, labels, K)
    sv = _class_singular_values(features, labels, K, max_class_size)
    onehot = _one_hot(labels, K, features.dtype)
    fro2 = jnp.sum(features * features, axis=0) @ onehot  # (K,), exact sum of squares
    nuc = jnp.sum(sv, axis=1)
    nan = jnp.array(jnp.nan, dtype=features.dtype)
    ratio = jnp.where(fro2 > 0, nuc * nuc / jnp.where(fro2 > 0, fro2, jnp.ones_like(fro2)), nan)
    return jnp.mean(ratio)


def _cosine_margins(W: jax.Array, centered: jax.Array, labels: jax.Array, num_classes: int,
                    precision=None) -> jax.Array:
    """Cosine margins of the columns of ``centered`` (``h_i - h_G``, shape ``(d, N)``).

    The rule of :func:`cosine_margin`; zero-norm rows of ``W - w_G`` and zero columns get
    cosine 0.
    """
    dtype = centered.dtype
    Wc = W - jnp.mean(W, axis=0, keepdims=True)
    wn = jnp.linalg.norm(Wc, axis=1)
    hn = jnp.linalg.norm(centered, axis=0)
    Wu = Wc / jnp.where(wn > 0, wn, jnp.ones_like(wn))[:, None]
    Hu = centered / jnp.where(hn > 0, hn, jnp.ones_like(hn))[None, :]
    cos = jnp.matmul(Wu, Hu, precision=precision)  # (K, N)
    onehot = _one_hot(labels, num_classes, dtype).T  # (K, N)
    own = jnp.sum(cos * onehot, axis=0)
    others = jnp.where(onehot > 0, jnp.array(-jnp.inf, dtype=dtype), cos)
    return own - jnp.max(others, axis=0)


def cosine_margin(W, b, features, labels, *, num_classes: int | None = None) -> jax.Array:
    """Per-sample cosine margin ``CM_i = cos(theta_{i;y_i}) - max_{j != y_i} cos(theta_{i;j})``.

    Section 4: ``cos(theta_{i;j}) = <w^j - w_G, h_i - h_G> / (||w^j - w_G|| ||h_i - h_G||)``
    with ``h_G`` the global mean of all features and ``w_G`` the mean of the rows of
    ``W``. A sample with ``h_i = h_G`` (or a class with ``w^j = w_G``) gets cosine 0.

    Args:
      W: ``(K, d)`` classifier.
      b: bias, accepted for a uniform signature; the definition does not use it.
      features: ``(d, N)`` float array.
      labels: ``(N,)`` integer labels.
      num_classes: static ``K`` (``None``: taken from ``W``).

    Returns:
      ``(N,)`` array of margins in ``[-2, 2]`` (positive: correctly classified by angle).
    """
    W, features, labels, K = _check_labelled(W, features, labels, num_classes)
    _check_bias(b, W)
    centered = features - jnp.mean(features, axis=1, keepdims=True)
    return _cosine_margins(W, centered, labels, K)


def pcm(W, b, features, labels, *, num_classes: int | None = None) -> jax.Array:
    """The cosine-margin distribution ``PC_M``: margins sorted ascending (Section 4).

    Args:
      W, b, features, labels, num_classes: as in :func:`cosine_margin`.

    Returns:
      ``(N,)`` sorted array.
    """
    return jnp.sort(cosine_margin(W, b, features, labels, num_classes=num_classes))
