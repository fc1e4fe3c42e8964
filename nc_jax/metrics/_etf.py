"""NC2, NC2 of the class means and NC3: distances of a K x K matrix to the simplex ETF.

Owns eqs. (7) and (8) and their rank-d analogue for d < K - 1 (Theorem 3.1, case 1),
through one rule, :func:`_distance_to_etf_gram`, used here and by the streaming report.
The rank-d target is derived in the ``nc_jax.metrics`` docstring.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from nc_jax.metrics._checks import (
    _check_features,
    _check_labelled,
    _check_labels,
    _check_rank,
)
from nc_jax.metrics._collapse import _centered_means


def _safe_normalize_fro(A: jax.Array) -> jax.Array:
    norm = jnp.linalg.norm(A)
    nan = jnp.array(jnp.nan, dtype=A.dtype)
    return jnp.where(norm > 0, A / jnp.where(norm > 0, norm, jnp.ones_like(norm)), nan)


def _distance_to_etf_gram(A: jax.Array, rank: int) -> jax.Array:
    """``min_Q ||A/||A||_F - Q/sqrt(rank)||_F`` over rank-``rank`` projectors in ``1^perp``.

    For ``rank = K - 1`` this is eq. (7)/(8): ``Q = I - 11^T/K``. See the
    ``nc_jax.metrics`` docstring for the rank-d case (Theorem 3.1, d < K - 1).
    """
    K = A.shape[0]
    dtype = A.dtype
    A_hat = _safe_normalize_fro(A)
    eye = jnp.eye(K, dtype=dtype)
    ones = jnp.ones((K, K), dtype=dtype)
    J = eye - ones / K
    if rank == K - 1:
        Q = J
    else:
        S = 0.5 * (A_hat + A_hat.T)
        # Deflate the 1-direction to eigenvalue -K (<= -2 < -||S||_2) so the top-`rank`
        # eigenvectors always lie in 1^perp.
        M = J @ S @ J - ones
        M = 0.5 * (M + M.T)
        M = jnp.where(jnp.isfinite(M), M, jnp.zeros_like(M))
        _, vecs = jnp.linalg.eigh(M)  # ascending
        V = vecs[:, K - rank:]
        Q = V @ V.T
    return jnp.linalg.norm(A_hat - Q / jnp.sqrt(jnp.asarray(rank, dtype=dtype)))


def nc2(W, *, center: bool = False, rank: int | None = None) -> jax.Array:
    """Convergence of the classifier to a simplex ETF (eq. 7).

    ``NC2 = || W W^T / ||W W^T||_F - (I - 11^T/K) / sqrt(K-1) ||_F``.

    For ``rank < K - 1`` (by default ``rank = min(d, K-1)``, so automatic when
    ``d < K - 1``) the target is the nearest normalized best rank-``rank`` approximation
    of ``I - 11^T/K`` (Theorem 3.1, case d < K-1); see the ``nc_jax.metrics``
    docstring. Exactly collapsed optimal solutions give 0 in every case.

    Args:
      W: ``(K, d)`` classifier, rows ``w^k``.
      center: subtract the row mean ``w_G`` first (as the official code does).
      rank: static target rank in ``[1, K-1]``; ``None`` means ``min(d, K-1)``.

    Returns:
      Scalar in ``W``'s dtype; NaN for ``W = 0``.
    """
    W = _check_features(W, name="W", layout="(K, d)")
    K, d = W.shape
    if K < 2:
        raise ValueError(f"W must have K >= 2 rows; got shape {W.shape}.")
    rank = _check_rank(rank, d, K)
    if center:
        W = W - jnp.mean(W, axis=0, keepdims=True)
    return _distance_to_etf_gram(W @ W.T, rank)


def nc2_means(features, labels, *, num_classes: int | None = None,
              rank: int | None = None) -> jax.Array:
    """Eq. (7) applied to the centered class means: ``Hbar^T Hbar`` against the ETF Gram.

    Theorem 3.1 (NC2) states the collapse for ``Hbar^T Hbar``; this is that statement as
    a metric, with the same rank-d analogue as :func:`nc2` when ``d < K - 1``.

    Args:
      features: ``(d, N)`` float array.
      labels: ``(N,)`` integer labels.
      num_classes: static ``K >= 2`` (required under ``jax.jit``).
      rank: static target rank in ``[1, K-1]``; ``None`` means ``min(d, K-1)``.

    Returns:
      Scalar in the features' dtype.
    """
    features = _check_features(features)
    labels, K = _check_labels(labels, features.shape[1], num_classes)
    rank = _check_rank(rank, features.shape[0], K)
    hbar = _centered_means(features, labels, K)
    return _distance_to_etf_gram(hbar.T @ hbar, rank)


def nc3(W, features, labels, *, num_classes: int | None = None,
        rank: int | None = None) -> jax.Array:
    """Self-duality ``NC3 = || W Hbar / ||W Hbar||_F - (I - 11^T/K)/sqrt(K-1) ||_F`` (eq. 8).

    ``Hbar`` are the centered class means. For ``d < K - 1`` (or an explicit
    ``rank < K - 1``) the target is the nearest normalized rank-``rank`` projector inside
    ``1^perp``, as in :func:`nc2`: at the optimum of Theorem 3.1 ``W`` is proportional to
    ``Hbar^T`` so ``W Hbar`` is proportional to ``C_1 P_d(I - 11^T/K)``.

    Args:
      W: ``(K, d)`` classifier.
      features: ``(d, N)`` float array.
      labels: ``(N,)`` integer labels.
      num_classes: static ``K`` (``None``: inferred from concrete labels or ``W``).
      rank: static target rank in ``[1, K-1]``; ``None`` means ``min(d, K-1)``.

    Returns:
      Scalar in the features' dtype.
    """
    W, features, labels, K = _check_labelled(W, features, labels, num_classes)
    rank = _check_rank(rank, features.shape[0], K)
    hbar = _centered_means(features, labels, K)
    return _distance_to_etf_gram(W @ hbar, rank)
