"""Ritz pairs of a Lanczos decomposition (the layer between the decomposition and the
restarted eigensolver).

The Ritz values are the eigenvalues of the symmetrised measured projection restricted
to the multiplied rows; the residual of a Ritz pair ``(theta, Q^T s)`` is
``||(C - theta) s||`` including the rows of the ``b`` directions that were generated but
not yet multiplied (for ``b = 1`` the classical ``|beta_p s_p|``, up to rounding).
Unused rows get a sentinel diagonal above the spectrum (a Gershgorin bound), so the
valid Ritz values are the first ``num_valid`` of the ascending list and nothing is ever
NaN; all shapes are fixed, so this jits and vmaps (e.g. over ``start``).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from nc_jax.hessian._decomp import LanczosDecomposition

__all__ = ["RitzPairs", "ritz_pairs", "ritz_vector"]

_HI = jax.lax.Precision.HIGHEST


class RitzPairs(NamedTuple):
    """Ritz pairs of the rows ``start .. p-1`` of a decomposition (see :func:`ritz_pairs`).

    Attributes:
      values: ``(m,)`` ascending Ritz values; entries from ``num_valid`` on are padding
        (a sentinel above the spectrum).
      coefficients: ``(m, m)`` column ``i`` is the Ritz vector of ``values[i]`` in basis
        coordinates (zero on rows outside ``start .. p-1``); the vector itself is
        ``coefficients[:, i] @ basis[:m]`` (:func:`ritz_vector`).
      residuals: ``(m,)`` Krylov residual estimates ``||(C - theta_i) s_i||``.
      num_valid: number of valid Ritz values ``p - start`` (``<= 0``: none).
      index_largest: ``max(num_valid - 1, 0)``, the index of the largest valid value.
      smallest, largest: ``values[0]`` and ``values[index_largest]``.
      norm_estimate: ``max(|smallest|, |largest|)``, a lower bound on ``||A||``.
    """

    values: jax.Array
    coefficients: jax.Array
    residuals: jax.Array
    num_valid: jax.Array
    index_largest: jax.Array
    smallest: jax.Array
    largest: jax.Array
    norm_estimate: jax.Array


def ritz_pairs(decomposition: LanczosDecomposition, *, start: jax.Array | int = 0) -> RitzPairs:
    """Ritz pairs of the multiplied rows ``start .. num_rows-1`` of ``decomposition``.

    ``start > 0`` restricts to a later Krylov sequence (after a breakdown the rows from
    ``decomposition.sequence_start`` on are the sequence grown from a fresh direction).
    """
    C = decomposition.projection
    num_applied = decomposition.num_rows
    m = C.shape[1]
    dtype = C.dtype
    idx = jnp.arange(m, dtype=jnp.int32)
    mask = (idx < num_applied) & (idx >= start)
    mm = mask[:, None] & mask[None, :]
    Cm = C[:m, :m]
    T = jnp.where(mm, 0.5 * (Cm + Cm.T), jnp.zeros_like(Cm))
    sentinel = 2.0 * jnp.max(jnp.sum(jnp.abs(T), axis=1)) + 1.0
    T = T + jnp.diag(jnp.where(mask, jnp.zeros((m,), dtype), sentinel.astype(dtype)))
    evals, S = jnp.linalg.eigh(T)
    S = jnp.where(mask[:, None], S, jnp.zeros_like(S))
    Spad = jnp.concatenate([S, jnp.zeros((C.shape[0] - m, m), dtype)], axis=0)
    R = jnp.matmul(C, S, precision=_HI) - Spad * evals[None, :]
    res = jnp.linalg.norm(R, axis=0)
    num_valid = (num_applied - start).astype(jnp.int32)
    i_max = jnp.maximum(num_valid - 1, 0)
    lo, hi = evals[0], evals[i_max]
    return RitzPairs(values=evals, coefficients=S, residuals=res, num_valid=num_valid,
                     index_largest=i_max, smallest=lo, largest=hi,
                     norm_estimate=jnp.maximum(jnp.abs(lo), jnp.abs(hi)))


def ritz_vector(decomposition: LanczosDecomposition, pairs: RitzPairs, index: jax.Array | int) -> jax.Array:
    """The unit Ritz vector ``coefficients[:, index] @ basis[:m]``, shape ``(n,)``."""
    m = decomposition.projection.shape[1]
    y = jnp.matmul(pairs.coefficients[:, index], decomposition.basis[:m], precision=_HI)
    return y / jnp.linalg.norm(y)
