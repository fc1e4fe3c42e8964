"""Thick-restarted (block) Lanczos for both ends of a symmetric spectrum.

Built on the two layers below it: cycles extend a :class:`LanczosDecomposition` one
product at a time (:func:`lanczos_step`, full reorthogonalisation, breakdown handling
with fresh directions), :func:`ritz_pairs` measures convergence, and a thick restart
(Wu and Simon) keeps Ritz vectors of the wanted end(s): the new decomposition has the
kept Ritz vectors as its first rows, their values on the diagonal of the projection and
the couplings of the residual block below them (an arrowhead), which the next products
extend like any other decomposition.

Convergence is checked on the Ritz pairs of all multiplied rows and, after a
(near-)breakdown, on those of the latest Krylov sequence alone: that sequence's extremes
must converge too, otherwise an exact eigenpair of the earlier invariant subspace would
pass for the extreme one.

Multiplicities: single-vector Lanczos sees one copy of a repeated eigenvalue (in exact
arithmetic the Krylov space meets each eigenspace in one direction). The reported
``multiplicity_*`` counts converged Ritz values within ``cluster_rtol * norm`` of the
extreme one; it is a lower bound, exact up to ``block_size`` (a block of ``b`` random
starts meets an eigenspace of dimension ``p`` in ``min(b, p)`` directions) or when the
space is exhausted. Use ``block_size >= p`` to count a ``p``-fold eigenvalue.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from nc_jax.hessian._decomp import (
    LanczosDecomposition,
    can_continue,
    lanczos_step,
    start_decomposition,
    thick_restart,
)
from nc_jax.hessian._ritz import RitzPairs, ritz_pairs, ritz_vector

__all__ = ["LanczosResult", "lanczos_extremes", "DEFAULT_RTOL", "default_rtol"]

DEFAULT_RTOL = 1e-9
"""Default convergence tolerance (residual relative to the norm estimate), raised to
``100 * eps`` of the matvec dtype where that is larger (see :func:`default_rtol`)."""


def default_rtol(matvec_dtype: Any, rtol: float | None = None) -> float:
    """``rtol`` if given, else ``max(DEFAULT_RTOL, 100 * eps(matvec_dtype))``."""
    if rtol is not None:
        return float(rtol)
    return max(DEFAULT_RTOL, 100.0 * float(jnp.finfo(matvec_dtype).eps))


class LanczosResult(NamedTuple):
    """Result of :func:`lanczos_extremes` (all leaves are arrays; vmaps cleanly).

    Attributes:
      lambda_min, lambda_max: smallest and largest Ritz values.
      vector_min, vector_max: the unit Ritz vectors, shape ``(n,)``.
      residual_min, residual_max: ``||A y - theta y||``, recomputed with one fresh
        matvec each (or the Krylov estimates when ``fresh_residuals=False``).
      converged_min, converged_max: residual ``<= rtol * norm_estimate`` (absolute, so an
        eigenvalue at zero is handled).
      norm_estimate: ``max(|lambda_min|, |lambda_max|)``, a lower bound on ``||A||``.
      multiplicity_min, multiplicity_max: Ritz values within ``cluster_rtol *
        norm_estimate`` of the extreme whose residual estimate is below the same bound
        (a lower bound; see module doc).
      num_matvecs: products with ``A`` used, fresh residuals included.
      num_cycles: Lanczos cycles run (1 + restarts used).
      breakdown: an invariant subspace was met (a coupling fell below the breakdown
        threshold) at some step.
      exhausted: no new direction could be found, or a random direction was itself an
        eigenvector (then ``A`` is a multiple of the identity on the unexplored
        complement, with probability one): the Ritz values are exact eigenvalues.
      ritz_values: ``(m,)`` ascending; entries from ``num_ritz`` on are padding.
      ritz_residuals: ``(m,)`` Krylov residual estimates of the Ritz pairs.
      num_ritz: number of valid Ritz values (rows multiplied in the last cycle).
      basis: ``(m + b, n)`` last cycle's basis (rows).
      arnoldi: ``(m + b, m)`` measured projection; ``A basis[:p]^T = basis^T arnoldi[:, :p]``
        with ``p = num_ritz``.
    """

    lambda_min: jax.Array
    lambda_max: jax.Array
    vector_min: jax.Array
    vector_max: jax.Array
    residual_min: jax.Array
    residual_max: jax.Array
    converged_min: jax.Array
    converged_max: jax.Array
    norm_estimate: jax.Array
    multiplicity_min: jax.Array
    multiplicity_max: jax.Array
    num_matvecs: jax.Array
    num_cycles: jax.Array
    breakdown: jax.Array
    exhausted: jax.Array
    ritz_values: jax.Array
    ritz_residuals: jax.Array
    num_ritz: jax.Array
    basis: jax.Array
    arnoldi: jax.Array


class _Settings(NamedTuple):
    """Static settings of :func:`lanczos_extremes` (hashable)."""

    num_matvecs: int
    block_size: int
    which: str
    restarts: int
    num_keep: int
    keep: tuple[int, ...]
    rtol: float | None
    cluster_rtol: float | None
    matvec_dtype: Any
    check_every: int
    fresh_residuals: bool


class _Operator(NamedTuple):
    """The data of one run: operator, its parameters, key and resolved tolerances."""

    matvec: Callable[..., jax.Array]
    params: tuple
    key: jax.Array | None
    matvec_dtype: Any
    rtol: float
    cluster_rtol: float


class _RestartState(NamedTuple):
    decomposition: LanczosDecomposition
    ritz: RitzPairs  # of all multiplied rows, as of the last check
    converged: jax.Array
    cycle: jax.Array


def _ends_converged(which, r_lo, r_hi, tol):
    if which == "smallest":
        return r_lo <= tol
    if which == "largest":
        return r_hi <= tol
    return (r_lo <= tol) & (r_hi <= tol)


def _check(cfg: _Settings, op: _Operator, s: _RestartState) -> _RestartState:
    """Ritz pairs of all multiplied rows and of the latest Krylov sequence (one batched eigh)."""
    d = s.decomposition
    starts = jnp.stack([jnp.zeros((), jnp.int32), d.sequence_start])
    pairs = jax.vmap(lambda st: ritz_pairs(d, start=st))(starts)
    tol = op.rtol * pairs.norm_estimate[0]
    r_hi = jnp.take_along_axis(pairs.residuals, pairs.index_largest[:, None], 1)[:, 0]
    ok = jax.vmap(lambda lo, hi: _ends_converged(cfg.which, lo, hi, tol))(pairs.residuals[:, 0], r_hi)
    sub_ok = (d.sequence_start == 0) | ((d.num_rows > d.sequence_start) & ok[1])
    ritz = jax.tree.map(lambda a: a[0], pairs)
    return s._replace(ritz=ritz, converged=(ok[0] & sub_ok) | d.exhausted)


def _step(cfg: _Settings, op: _Operator, s: _RestartState) -> _RestartState:
    d = lanczos_step(s.decomposition, op.matvec, *op.params, key=op.key,
                     matvec_dtype=op.matvec_dtype)
    s = s._replace(decomposition=d)
    if cfg.check_every == 1:
        return _check(cfg, op, s)
    due = (d.num_rows % cfg.check_every == 0) | (d.num_rows == cfg.num_matvecs)
    return jax.lax.cond(due, lambda s: _check(cfg, op, s), lambda s: s, s)


def _restart(cfg: _Settings, s: _RestartState) -> _RestartState:
    """Thick restart keeping the Ritz vectors ``cfg.keep`` (both ends for ``which="both"``)."""
    keep = np.asarray(cfg.keep, np.int32)
    d = thick_restart(s.decomposition, s.ritz.coefficients[:, keep], s.ritz.values[keep])
    return s._replace(decomposition=d, converged=jnp.zeros((), bool))


def _cycle(cfg: _Settings, op: _Operator, s: _RestartState) -> _RestartState:
    if cfg.restarts > 0:
        s = jax.lax.cond(s.cycle > 0, lambda s: _restart(cfg, s), lambda s: s, s)
    active = lambda s: can_continue(s.decomposition) & ~s.converged
    s = jax.lax.while_loop(active, lambda s: _step(cfg, op, s), s)
    if cfg.check_every > 1:
        s = _check(cfg, op, s)
    return s._replace(cycle=s.cycle + 1)


def _another_cycle(cfg: _Settings, s: _RestartState) -> jax.Array:
    return (s.cycle == 0) | (~s.converged & ~s.decomposition.exhausted & (s.cycle <= cfg.restarts))


def _result(cfg: _Settings, op: _Operator, s: _RestartState) -> LanczosResult:
    d, ritz = s.decomposition, s.ritz
    lo, hi, i_max, norm_est = ritz.smallest, ritz.largest, ritz.index_largest, ritz.norm_estimate
    tol = op.rtol * norm_est
    y_lo = ritz_vector(d, ritz, 0)
    y_hi = ritz_vector(d, ritz, i_max)
    count = d.num_matvecs
    if cfg.fresh_residuals:
        mv = lambda y: op.matvec(y.astype(op.matvec_dtype), *op.params).astype(y.dtype)
        r_lo = jnp.linalg.norm(mv(y_lo) - lo * y_lo)
        r_hi = jnp.linalg.norm(mv(y_hi) - hi * y_hi)
        count = count + 2
    else:
        r_lo, r_hi = ritz.residuals[0], ritz.residuals[i_max]
    crt = op.cluster_rtol * norm_est
    valid = jnp.arange(cfg.num_matvecs, dtype=jnp.int32) < d.num_rows
    ok = valid & (ritz.residuals <= crt)
    mult_lo = jnp.sum(ok & (jnp.abs(ritz.values - lo) <= crt)).astype(jnp.int32)
    mult_hi = jnp.sum(ok & (jnp.abs(ritz.values - hi) <= crt)).astype(jnp.int32)
    return LanczosResult(
        lambda_min=lo, lambda_max=hi, vector_min=y_lo, vector_max=y_hi,
        residual_min=r_lo, residual_max=r_hi,
        converged_min=r_lo <= tol, converged_max=r_hi <= tol,
        norm_estimate=norm_est, multiplicity_min=mult_lo, multiplicity_max=mult_hi,
        num_matvecs=count, num_cycles=s.cycle, breakdown=d.breakdown,
        exhausted=d.exhausted, ritz_values=ritz.values, ritz_residuals=ritz.residuals,
        num_ritz=d.num_rows, basis=d.basis, arnoldi=d.projection,
    )


def _run(cfg: _Settings, matvec, v0, params, key) -> LanczosResult:
    m, dtype = cfg.num_matvecs, v0.dtype
    d0 = start_decomposition(v0, m, block_size=cfg.block_size, key=key)
    mv_dt = dtype if cfg.matvec_dtype is None else jnp.dtype(cfg.matvec_dtype)
    rt = default_rtol(mv_dt, cfg.rtol)
    crt = 10.0 * rt if cfg.cluster_rtol is None else float(cfg.cluster_rtol)
    op = _Operator(matvec, params, key, mv_dt, rt, crt)
    empty = RitzPairs(values=jnp.zeros((m,), dtype), coefficients=jnp.zeros((m, m), dtype),
                      residuals=jnp.zeros((m,), dtype), num_valid=jnp.zeros((), jnp.int32),
                      index_largest=jnp.zeros((), jnp.int32), smallest=jnp.zeros((), dtype),
                      largest=jnp.zeros((), dtype), norm_estimate=jnp.zeros((), dtype))
    s0 = _RestartState(d0, empty, jnp.zeros((), bool), jnp.zeros((), jnp.int32))
    s = jax.lax.while_loop(lambda s: _another_cycle(cfg, s), lambda s: _cycle(cfg, op, s), s0)
    return _result(cfg, op, s)


def _keep_indices(which: str, m: int, k: int) -> tuple[int, ...]:
    if which == "both":
        k_lo = k // 2 + k % 2
        keep = np.concatenate([np.arange(k_lo), np.arange(m - (k - k_lo), m)])
    elif which == "smallest":
        keep = np.arange(k)
    else:
        keep = np.arange(m - k, m)
    return tuple(int(i) for i in keep)


def lanczos_extremes(
    num_matvecs: int,
    *,
    reortho: str = "full",
    which: str = "both",
    restarts: int = 0,
    num_keep: int | None = None,
    block_size: int = 1,
    rtol: float | None = None,
    cluster_rtol: float | None = None,
    matvec_dtype: Any = None,
    check_every: int = 1,
    fresh_residuals: bool = True,
) -> Callable[..., LanczosResult]:
    """Factory: thick-restarted Lanczos for the extreme eigenpairs of a symmetric operator.

    Args:
      num_matvecs: basis size ``m`` per cycle (the memory budget: ``(m + b) * n``
        numbers); the first cycle uses up to ``m`` products, each restart up to
        ``m - num_keep``.
      reortho: only ``"full"`` (every product orthogonalised against the whole stored
        basis to working precision, see :mod:`._decomp`).
      which: ``"both"``, ``"smallest"`` or ``"largest"``: which end must converge and
        which Ritz vectors thick restarts keep. Both ends are always reported.
      restarts: number of thick restarts allowed after the first cycle (static).
      num_keep: Ritz vectors kept at a restart (default ``(m - b) // 2``; split evenly
        between the ends for ``which="both"``).
      block_size: ``b`` start vectors (band Lanczos); ``v0`` then has shape ``(b, n)``.
      rtol: convergence when the residual is ``<= rtol * norm_estimate``. Default
        :func:`default_rtol`: ``max(DEFAULT_RTOL, 100 * eps)`` of the matvec dtype.
      cluster_rtol: Ritz values within ``cluster_rtol * norm_estimate`` of an extreme,
        with residual estimates below the same bound, count towards its multiplicity
        (default ``10 * rtol``).
      matvec_dtype: if given, vectors are cast to this dtype before ``matvec`` and the
        result cast back: e.g. a float32 matvec under a float64 recurrence and
        reorthogonalisation (mixed precision).
      check_every: compute Ritz values (a small ``m x m`` eigh) every this many steps to
        stop a cycle early once converged.
      fresh_residuals: recompute the final residuals with one matvec per end.

    Returns:
      ``run(matvec, v0, *params, key=None) -> LanczosResult`` where ``matvec(v, *params)``
      acts on flat vectors of ``v0``'s dtype (the recurrence dtype). ``key`` seeds the
      random directions used only after a breakdown; ``None`` uses a fixed internal
      stream (results stay deterministic).
    """
    if reortho != "full":
        raise ValueError(f"reortho={reortho!r}: only 'full' is supported")
    if which not in ("both", "smallest", "largest"):
        raise ValueError(f"which={which!r}: expected 'both', 'smallest' or 'largest'")
    b, m = int(block_size), int(num_matvecs)
    if b < 1:
        raise ValueError(f"block_size={block_size}: must be >= 1")
    if m < b + 1:
        raise ValueError(f"num_matvecs={num_matvecs}: must be >= block_size + 1 = {b + 1}")
    if restarts < 0:
        raise ValueError(f"restarts={restarts}: must be >= 0")
    k = (m - b) // 2 if num_keep is None else int(num_keep)
    if restarts > 0 and not (1 <= k and k + b < m):
        raise ValueError(
            f"num_keep={k}: need 1 <= num_keep and num_keep + block_size < num_matvecs={m}"
        )
    if check_every < 1:
        raise ValueError(f"check_every={check_every}: must be >= 1")
    cfg = _Settings(m, b, which, int(restarts), k, _keep_indices(which, m, k), rtol,
                    cluster_rtol, matvec_dtype, int(check_every), bool(fresh_residuals))

    def run(matvec, v0, *params, key=None) -> LanczosResult:
        return _run(cfg, matvec, v0, params, key)

    return run
