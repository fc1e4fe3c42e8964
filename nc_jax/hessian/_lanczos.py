"""Lanczos for both ends of a symmetric spectrum: full reorthogonalisation, thick restarts,
breakdown handling, block starts for multiplicities.

One implementation covers plain Lanczos (``block_size=1``) and band (block) Lanczos
(``block_size=b``; Ruhe's variant: the product ``A q_j`` is orthogonalised against the whole
stored basis and becomes basis vector ``j + b``). Because every product is
orthogonalised against the whole basis (classical Gram-Schmidt twice, a third pass when the
second one still removed a large part), the coefficients give the projected matrix
``C = Q^T A Q`` column by column -- for ``b = 1`` the Lanczos tridiagonal, after a thick
restart the arrowhead matrix of Wu and Simon -- so restarts, blocks and breakdowns need
no special algebra: the Ritz values are the eigenvalues of the (symmetrised) measured
projection, and the residual of a Ritz pair ``(theta, Q^T s)`` is ``||(C - theta) s||``
including the rows of the ``b`` vectors that were generated but not yet multiplied.

Layout of the state (fixed shapes, so everything jits and vmaps):

* ``basis`` ``(m + b, n)``: rows are orthonormal basis vectors (unused rows are zero);
  rows ``m .. m+b-1`` hold the last generated, not yet multiplied directions.
* ``arnoldi`` ``(m + b, m)``: column ``j`` holds ``Q A q_j`` (measured), so
  ``A Q[:p]^T = Q^T arnoldi[:, :p]`` for the ``p`` multiplied rows (the Lanczos relation
  ``A Q = Q T + r e^T`` for ``b = 1``).

Breakdown: when ``A q_j`` is (numerically) inside the span of the basis, an invariant
subspace has been found; the coupling is set to zero and a fresh random direction
(from ``key``), orthogonalised against the basis, continues the iteration, so a start
vector inside an eigenspace still finds both ends of the spectrum. When no new
direction exists (the whole space is spanned) the remaining rows are marked dead, the
iteration stops and the Ritz values of the multiplied leading block -- exact eigenvalues
-- are returned; the unused part of the projected matrix is masked with a sentinel
diagonal above the spectrum, so nothing is ever NaN.

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

__all__ = ["LanczosResult", "lanczos_extremes"]

_HI = jax.lax.Precision.HIGHEST


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


class _State(NamedTuple):
    Q: jax.Array
    C: jax.Array
    dead: jax.Array
    j: jax.Array
    count: jax.Array
    scale: jax.Array
    cycle: jax.Array
    breakdown: jax.Array
    block_start: jax.Array
    rand_block: jax.Array
    complete: jax.Array
    evals: jax.Array
    S: jax.Array
    res: jax.Array
    conv: jax.Array


def _cgs(Q, w):
    """Classical Gram-Schmidt twice against the rows of Q (a third pass if needed)."""

    def one(w):
        h = jnp.matmul(Q, w, precision=_HI)
        return w - jnp.matmul(h, Q, precision=_HI), h

    w1, h1 = one(w)
    n1 = jnp.linalg.norm(w1)
    w2, h2 = one(w1)
    n2 = jnp.linalg.norm(w2)

    def third(args):
        w2, h = args
        w3, h3 = one(w2)
        return w3, h + h3

    w, h = jax.lax.cond(n2 < 0.7 * n1, third, lambda a: a, (w2, h1 + h2))
    return w, h, jnp.linalg.norm(w)


def _fresh_direction(Q, key, stream, counter, dead_tol):
    """A random unit vector orthogonal to the rows of Q, or zero (dead) if none is left."""
    key = jax.random.fold_in(jax.random.fold_in(key, stream), counter)
    r = jax.random.normal(key, Q.shape[1:], Q.dtype)
    r = r / jnp.linalg.norm(r)
    r, _, rn = _cgs(Q, r)
    dead = rn <= dead_tol
    r = jnp.where(dead, jnp.zeros_like(r), r / jnp.where(dead, 1.0, rn).astype(r.dtype))
    return r, dead


def _ritz(C, num_applied, m, rtol, cluster_rtol, start=0):
    """Ritz values/vectors of the multiplied rows ``start .. num_applied-1``, masked.

    Unused rows get a sentinel diagonal above the spectrum (Gershgorin bound), so the
    valid Ritz values are the first ``num_applied - start`` of the ascending list and
    nothing is ever NaN.
    """
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
    i_max = jnp.maximum(num_applied - start - 1, 0)
    lo, hi = evals[0], evals[i_max]
    norm_est = jnp.maximum(jnp.abs(lo), jnp.abs(hi))
    tol = rtol * norm_est
    valid = idx < num_applied - start
    return evals, S, res, lo, hi, i_max, norm_est, tol, valid


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
    """Factory: Lanczos for the extreme eigenpairs of a symmetric operator.

    Args:
      num_matvecs: basis size ``m`` per cycle (the memory budget: ``(m + b) * n``
        numbers); the first cycle uses up to ``m`` products, each restart up to
        ``m - num_keep``.
      reortho: only ``"full"`` (classical Gram-Schmidt twice against the stored basis).
      which: ``"both"``, ``"smallest"`` or ``"largest"``: which end must converge and
        which Ritz vectors thick restarts keep. Both ends are always reported.
      restarts: number of thick restarts allowed after the first cycle (static).
      num_keep: Ritz vectors kept at a restart (default ``(m - b) // 2``; split evenly
        between the ends for ``which="both"``).
      block_size: ``b`` start vectors (band Lanczos); ``v0`` then has shape ``(b, n)``.
      rtol: convergence when the residual is ``<= rtol * norm_estimate``. Default:
        ``max(1e-9, 100 * eps)`` of the matvec dtype.
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
    b = int(block_size)
    m = int(num_matvecs)
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
    if which == "both":
        k_lo = k // 2 + k % 2
        keep = np.concatenate([np.arange(k_lo), np.arange(m - (k - k_lo), m)])
    elif which == "smallest":
        keep = np.arange(k)
    else:
        keep = np.arange(m - k, m)
    keep = keep.astype(np.int32)

    def run(matvec, v0, *params, key=None) -> LanczosResult:
        dtype = v0.dtype
        if not jnp.issubdtype(dtype, jnp.floating):
            raise ValueError(f"v0.dtype={dtype}: must be a real floating dtype")
        if b == 1:
            if v0.ndim != 1:
                raise ValueError(f"v0.shape={v0.shape}: expected (n,) for block_size=1")
            V0 = v0[None, :]
        else:
            if v0.ndim != 2 or v0.shape[0] != b:
                raise ValueError(f"v0.shape={v0.shape}: expected ({b}, n)")
            V0 = v0
        n = V0.shape[1]
        mv_dt = dtype if matvec_dtype is None else jnp.dtype(matvec_dtype)
        eps_mv = float(jnp.finfo(mv_dt).eps)
        eps = float(jnp.finfo(dtype).eps)
        rt = max(1e-9, 100.0 * eps_mv) if rtol is None else float(rtol)
        crt = 10.0 * rt if cluster_rtol is None else float(cluster_rtol)
        # Breakdown: the orthogonalised product is rounding noise (an invariant subspace).
        # Near-breakdown: small enough that the Ritz pairs of the current Krylov sequence
        # may look converged only because the sequence is (nearly) invariant; the next
        # rows are then treated as a new sequence whose extremes must converge too.
        bd_tol = min(100.0 * eps_mv * float(np.sqrt(n)), float(np.sqrt(eps_mv)))
        near_tol = float(np.sqrt(eps_mv))
        dead_tol = 100.0 * eps * float(np.sqrt(m + b))
        rkey = jax.random.key(0) if key is None else key

        def mv(q):
            return matvec(q.astype(mv_dt), *params).astype(dtype)

        # Initial block: orthonormalise the start vectors (random fallback if dependent).
        Q = jnp.zeros((m + b, n), dtype)
        dead = jnp.zeros((m + b,), bool)
        bd0 = jnp.zeros((), bool)
        for i in range(b):
            w = V0[i]
            w0 = jnp.linalg.norm(w)
            w, _, nw = _cgs(Q, w)
            bad = nw <= 10.0 * eps * w0
            r, rdead = _fresh_direction(Q, rkey, 1, i, dead_tol)
            q = jnp.where(bad, r, w / jnp.where(bad, 1.0, nw).astype(dtype))
            Q = Q.at[i].set(q)
            dead = dead.at[i].set(bad & rdead)
            bd0 = bd0 | bad

        def step(s: _State) -> _State:
            j = s.j
            Aq = mv(s.Q[j])
            scale = jnp.maximum(s.scale, jnp.linalg.norm(Aq))
            w, h, nrm = _cgs(s.Q, Aq)
            C = s.C.at[:, j].set(h)
            t = j + b
            bd = nrm <= bd_tol * scale
            near = nrm <= near_tol * scale
            new, ndead = jax.lax.cond(
                bd,
                lambda: _fresh_direction(s.Q, rkey, 0, s.count, dead_tol),
                lambda: (w / jnp.where(bd, 1.0, nrm).astype(dtype), jnp.zeros((), bool)),
            )
            Q = s.Q.at[t].set(new)
            C = C.at[t, j].set(jnp.where(bd, jnp.zeros((), dtype), nrm))
            dead = s.dead.at[t].set(ndead)
            # A random direction r (generic in the orthogonal complement V of the spanned
            # invariant subspace) with A r in span(Q) is an eigenvector of A on V, which
            # for a generic r means A = theta I on V: the spectrum is then fully known.
            complete = s.complete | (bd & (j == s.block_start) & s.rand_block)
            new_block = near & ~ndead
            block_start = jnp.where(new_block, t, s.block_start).astype(jnp.int32)
            rand_block = jnp.where(new_block, bd, s.rand_block)
            s = s._replace(Q=Q, C=C, dead=dead, j=j + 1, count=s.count + 1, scale=scale,
                           breakdown=s.breakdown | bd, block_start=block_start,
                           rand_block=rand_block, complete=complete)

            if check_every == 1:
                return check(s)
            return jax.lax.cond(
                (s.j % check_every == 0) | (s.j == m), check, lambda s: s, s
            )

        def check(s):
            # Ritz pairs of all multiplied rows and, after a (near-)breakdown, of the
            # latest Krylov sequence alone (rows block_start..j-1), in one batched eigh:
            # that sequence's extremes must converge too, otherwise an exact eigenpair of
            # the earlier invariant subspace would pass for the extreme one.
            starts = jnp.stack([jnp.zeros((), jnp.int32), s.block_start])
            evals, S, res, _, _, i_max, _, tol, _ = jax.vmap(
                lambda st: _ritz(s.C, s.j, m, rt, crt, st))(starts)
            ok = jax.vmap(_conv)(res[:, 0], jnp.take_along_axis(res, i_max[:, None], 1)[:, 0],
                                 jnp.broadcast_to(tol[0], (2,)))
            sub_ok = (s.block_start == 0) | ((s.j > s.block_start) & ok[1])
            conv = (ok[0] & sub_ok) | s.complete
            return s._replace(evals=evals[0], S=S[0], res=res[0], conv=conv)

        def _conv(r_lo, r_hi, tol):
            if which == "smallest":
                return r_lo <= tol
            if which == "largest":
                return r_hi <= tol
            return (r_lo <= tol) & (r_hi <= tol)

        def inner_cond(s):
            jj = jnp.minimum(s.j, m + b - 1)
            return (s.j < m) & ~s.dead[jj] & ~s.conv

        def restart(s: _State) -> _State:
            Sk = s.S[:, keep]
            Y = jnp.matmul(Sk.T, s.Q[:m], precision=_HI)
            Q = jnp.zeros_like(s.Q).at[:k].set(Y).at[k : k + b].set(s.Q[m:])
            G = jnp.matmul(s.C[m:], Sk, precision=_HI)
            C = jnp.zeros_like(s.C)
            C = C.at[jnp.arange(k), jnp.arange(k)].set(s.evals[keep])
            C = C.at[k : k + b, :k].set(G)
            return s._replace(Q=Q, C=C, dead=jnp.zeros_like(s.dead), j=jnp.asarray(k, jnp.int32),
                              conv=jnp.zeros((), bool), block_start=jnp.zeros((), jnp.int32),
                              rand_block=jnp.zeros((), bool))

        def outer_body(s: _State) -> _State:
            if restarts > 0:
                s = jax.lax.cond(s.cycle > 0, restart, lambda s: s, s)
            s = jax.lax.while_loop(inner_cond, step, s)
            if check_every > 1:
                s = check(s)
            return s._replace(cycle=s.cycle + 1)

        def outer_cond(s: _State):
            jj = jnp.minimum(s.j, m + b - 1)
            exhausted = (s.j < m) & s.dead[jj]
            return (s.cycle == 0) | (~s.conv & ~exhausted & (s.cycle <= restarts))

        zero = jnp.zeros((), dtype)
        s0 = _State(
            Q=Q, C=jnp.zeros((m + b, m), dtype), dead=dead,
            j=jnp.zeros((), jnp.int32), count=jnp.zeros((), jnp.int32), scale=zero,
            cycle=jnp.zeros((), jnp.int32), breakdown=bd0,
            block_start=jnp.zeros((), jnp.int32), rand_block=jnp.zeros((), bool),
            complete=jnp.zeros((), bool),
            evals=jnp.zeros((m,), dtype), S=jnp.zeros((m, m), dtype),
            res=jnp.zeros((m,), dtype), conv=jnp.zeros((), bool),
        )
        s = jax.lax.while_loop(outer_cond, outer_body, s0)

        evals, S, res = s.evals, s.S, s.res
        i_max = jnp.maximum(s.j - 1, 0)
        lo, hi = evals[0], evals[i_max]
        norm_est = jnp.maximum(jnp.abs(lo), jnp.abs(hi))
        tol = rt * norm_est
        valid = jnp.arange(m, dtype=jnp.int32) < s.j
        jj = jnp.minimum(s.j, m + b - 1)
        exhausted = ((s.j < m) & s.dead[jj]) | s.complete
        y_lo = jnp.matmul(S[:, 0], s.Q[:m], precision=_HI)
        y_hi = jnp.matmul(S[:, i_max], s.Q[:m], precision=_HI)
        y_lo = y_lo / jnp.linalg.norm(y_lo)
        y_hi = y_hi / jnp.linalg.norm(y_hi)
        count = s.count
        if fresh_residuals:
            r_lo = jnp.linalg.norm(mv(y_lo) - lo * y_lo)
            r_hi = jnp.linalg.norm(mv(y_hi) - hi * y_hi)
            count = count + 2
        else:
            r_lo, r_hi = res[0], res[i_max]
        ok = valid & (res <= crt * norm_est)
        mult_lo = jnp.sum(ok & (jnp.abs(evals - lo) <= crt * norm_est)).astype(jnp.int32)
        mult_hi = jnp.sum(ok & (jnp.abs(evals - hi) <= crt * norm_est)).astype(jnp.int32)
        return LanczosResult(
            lambda_min=lo, lambda_max=hi, vector_min=y_lo, vector_max=y_hi,
            residual_min=r_lo, residual_max=r_hi,
            converged_min=r_lo <= tol, converged_max=r_hi <= tol,
            norm_estimate=norm_est,
            multiplicity_min=mult_lo, multiplicity_max=mult_hi,
            num_matvecs=count, num_cycles=s.cycle, breakdown=s.breakdown,
            exhausted=exhausted, ritz_values=evals, ritz_residuals=res,
            num_ritz=s.j, basis=s.Q, arnoldi=s.C,
        )

    return run
