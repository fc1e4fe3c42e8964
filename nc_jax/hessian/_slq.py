"""Stochastic Lanczos quadrature (spectral density) and Hutchinson's trace estimator."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from nc_jax.hessian._decomp import lanczos_decomposition
from nc_jax.hessian._ritz import ritz_pairs

__all__ = ["SLQResult", "slq_density", "TraceEstimate", "hutchinson_trace", "rademacher_probes"]


def rademacher_probes(key: jax.Array, num_probes: int, dim: int, dtype: Any) -> jax.Array:
    """``(num_probes, dim)`` Rademacher (+-1) probes; probe ``i`` uses ``fold_in(key, i)``."""
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(num_probes, dtype=jnp.uint32))
    return jax.vmap(lambda k: jax.random.rademacher(k, (dim,), dtype))(keys)


class TraceEstimate(NamedTuple):
    """Hutchinson estimate: ``trace`` (mean of ``z^T A z``), its ``stderr``, ``samples``."""

    trace: jax.Array
    stderr: jax.Array
    samples: jax.Array


def hutchinson_trace(
    matvec: Callable[[jax.Array], jax.Array],
    dim: int,
    *,
    key: jax.Array,
    num_probes: int,
    dtype: Any = None,
) -> TraceEstimate:
    """Hutchinson's estimator ``tr(A) ~ mean_i z_i^T A z_i`` with Rademacher ``z_i``.

    Probes are applied one at a time (``lax.map``) so memory stays at one vector.
    ``dtype`` defaults to JAX's default float.
    """
    if num_probes < 1:
        raise ValueError(f"num_probes={num_probes}: must be >= 1")
    dtype = jnp.result_type(float) if dtype is None else jnp.dtype(dtype)

    def one(i):
        z = jax.random.rademacher(jax.random.fold_in(key, i), (dim,), dtype)
        return jnp.vdot(z, matvec(z).astype(dtype))

    samples = jax.lax.map(one, jnp.arange(num_probes, dtype=jnp.uint32))
    std = jnp.std(samples, ddof=1) if num_probes > 1 else jnp.zeros((), dtype)
    return TraceEstimate(jnp.mean(samples), std / jnp.sqrt(jnp.asarray(num_probes, dtype)), samples)


class SLQResult(NamedTuple):
    """Stochastic Lanczos quadrature.

    Attributes:
      grid: evaluation points.
      density: Gaussian-broadened spectral density on ``grid`` (integrates to 1 over a
        grid covering the spectrum by several ``sigma``).
      nodes: ``(num_probes, num_matvecs)`` Ritz values (padding has weight 0).
      weights: ``(num_probes, num_matvecs)`` squared first components of the Ritz
        vectors; each row sums to 1.
      mean: ``sum(weights * nodes) / num_probes`` = Hutchinson's ``tr(A) / dim`` with the
        same probes.
    """

    grid: jax.Array
    density: jax.Array
    nodes: jax.Array
    weights: jax.Array
    mean: jax.Array


def slq_density(
    matvec: Callable[[jax.Array], jax.Array],
    dim: int,
    *,
    key: jax.Array,
    num_probes: int,
    num_matvecs: int,
    grid: jax.Array,
    sigma: float,
) -> SLQResult:
    """Spectral density by stochastic Lanczos quadrature (Ubaru, Chen, Saad 2017).

    For each Rademacher probe ``z`` (the same probes as :func:`hutchinson_trace` with the
    same key), ``num_matvecs`` Lanczos steps from ``z / ||z||`` give the Gauss quadrature
    ``z^T g(A) z / dim ~ sum_i w_i g(theta_i)`` with nodes ``theta_i`` (Ritz values) and
    weights ``w_i`` (squared first components of the Ritz vectors of the
    :func:`lanczos_decomposition`); the density is ``mean_z sum_i w_i N(x; theta_i,
    sigma^2)``. When the Krylov space of a probe is exhausted early (an invariant
    subspace), the unused nodes are padding with weight 0. Dtype follows ``grid``.
    """
    if num_probes < 1 or num_matvecs < 2:
        raise ValueError(f"num_probes={num_probes}, num_matvecs={num_matvecs}: need >= 1 and >= 2")
    if sigma <= 0:
        raise ValueError(f"sigma={sigma}: must be > 0")
    dtype = grid.dtype
    decompose = lanczos_decomposition(int(num_matvecs))

    def one(i):
        z = jax.random.rademacher(jax.random.fold_in(key, i), (dim,), dtype)
        d = decompose(lambda v: matvec(v).astype(dtype), z,
                      key=jax.random.fold_in(jax.random.fold_in(key, i), 1))
        pairs = ritz_pairs(d)
        return pairs.values, pairs.coefficients[0, :] ** 2

    nodes, weights = jax.lax.map(one, jnp.arange(num_probes, dtype=jnp.uint32))
    x = grid[:, None, None]
    gauss = jnp.exp(-0.5 * ((x - nodes[None]) / sigma) ** 2) / (sigma * jnp.sqrt(2.0 * jnp.pi))
    density = jnp.sum(gauss * weights[None], axis=(1, 2)) / num_probes
    mean = jnp.sum(weights * nodes) / num_probes
    return SLQResult(grid, density.astype(dtype), nodes, weights, mean)
