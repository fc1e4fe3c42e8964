"""(Block) Lanczos decomposition with full reorthogonalisation: the Krylov primitive.

``lanczos_decomposition(num_matvecs, block_size=b)`` returns
``decompose(matvec, v0, *params, key=None) -> LanczosDecomposition`` (the factory takes
the static settings, the returned function the data, as matfree's ``tridiag_sym``).
Everything above it -- Ritz pairs (:mod:`._ritz`), thick-restarted extremes
(:mod:`._lanczos`), SLQ (:mod:`._slq`) -- consumes this decomposition or extends it one
product at a time with :func:`lanczos_step`.

One implementation covers plain Lanczos (``b = 1``) and band (block) Lanczos (``b > 1``;
Ruhe's variant: the product ``A q_j`` is orthogonalised against the whole stored basis
and becomes basis vector ``j + b``). Because every product is orthogonalised against the
whole basis (a pass against the band rows ``j-b .. j+b-1`` that hold almost all of it,
then classical Gram-Schmidt passes against the whole basis, repeated while one removes
more than ~30% of the norm: ARPACK's DGKS test), the coefficients give the projected
matrix ``C = Q^T A Q`` column by column -- for ``b = 1`` the Lanczos tridiagonal, after a
thick restart the arrowhead matrix of Wu and Simon -- so restarts, blocks and breakdowns
need no special algebra.

Layout (fixed shapes, so everything jits and vmaps), with ``m = num_matvecs`` and
``p = num_rows`` the rows multiplied so far:

* ``basis`` ``(m + b, n)``: orthonormal rows; rows ``p .. p+b-1`` are the generated, not
  yet multiplied directions (``residual``); later rows are zero.
* ``projection`` ``(m + b, m)``: column ``j`` holds the measured ``Q A q_j``, so the
  Lanczos relation reads ``A Q[:p]^T = Q[:p+b]^T projection[:p+b, :p]``; for ``b = 1``
  that is ``A Q = Q T + beta q_{p+1} e_p^T`` with ``T = projection[:p, :p]``
  (tridiagonal up to rounding) and ``beta = projection[p, p-1] = residual_norm[0]``.

Breakdown: when ``A q_j`` is (numerically) inside the span of the basis, an invariant
subspace has been found; the coupling is set to zero and a fresh random direction
(from ``key``), orthogonalised against the basis, continues the iteration, so a start
vector inside an eigenspace still reaches the rest of the spectrum. When no new
direction exists (the whole space is spanned) the row is marked dead and the
decomposition is ``exhausted``; it is exhausted too when a random direction is itself an
eigenvector (then ``A`` is a multiple of the identity on the unexplored complement, with
probability one).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["LanczosDecomposition", "lanczos_decomposition", "start_decomposition",
           "lanczos_step", "can_continue", "thick_restart"]

_HI = jax.lax.Precision.HIGHEST


class LanczosDecomposition(NamedTuple):
    """A (block) Lanczos decomposition ``A Q[:p]^T = Q[:p+b]^T C[:p+b, :p]`` (see module doc).

    Attributes:
      basis: ``(m + b, n)`` orthonormal rows (``Q``); zero beyond row ``p + b``.
      projection: ``(m + b, m)`` measured projection ``C`` (column ``j`` = ``Q A q_j``).
      residual: ``(b, n)`` the next, not yet multiplied, unit directions
        ``basis[p:p+b]`` (zero rows where no direction is left).
      residual_norm: ``(b,)`` norms of their coupling rows ``||C[p+i, :p]||``; for
        ``b = 1`` the Lanczos ``beta_p`` (zero after a breakdown).
      num_rows: ``p``, rows multiplied (size of the projected matrix).
      num_matvecs: products with ``A`` applied (continues across thick restarts, so it
        can exceed ``num_rows``).
      breakdown: an invariant subspace was met at some product (or a start vector was
        dependent on the previous ones).
      exhausted: no new direction is left (the whole space is spanned) or the spectrum
        on the unexplored complement is known; the Ritz values are exact eigenvalues.
      dead: ``(m + b,)`` rows for which no direction was found.
      scale: ``max_j ||A q_j||`` over the products so far (a lower bound on ``||A||``,
        the scale of the breakdown test).
      sequence_start: first row of the latest Krylov sequence (0, or the row after the
        last (near-)breakdown).
      random_sequence: that sequence started from a random direction (a breakdown).
    """

    basis: jax.Array
    projection: jax.Array
    residual: jax.Array
    residual_norm: jax.Array
    num_rows: jax.Array
    num_matvecs: jax.Array
    breakdown: jax.Array
    exhausted: jax.Array
    dead: jax.Array
    scale: jax.Array
    sequence_start: jax.Array
    random_sequence: jax.Array


class _Tolerances(NamedTuple):
    breakdown: float  # orthogonalised product below this * scale: rounding noise
    near_breakdown: float  # below this * scale: a new Krylov sequence starts
    dead: float  # a random direction with less than this left after orthogonalisation


def _tolerances(n: int, rows: int, dtype: Any, matvec_dtype: Any) -> _Tolerances:
    eps_mv = float(jnp.finfo(matvec_dtype).eps)
    eps = float(jnp.finfo(dtype).eps)
    return _Tolerances(
        breakdown=min(100.0 * eps_mv * float(np.sqrt(n)), float(np.sqrt(eps_mv))),
        near_breakdown=float(np.sqrt(eps_mv)),
        dead=100.0 * eps * float(np.sqrt(rows)),
    )


def _when(pred, fn, operand):
    """``fn(operand)`` where ``pred`` holds, else ``operand``: a ``lax.cond`` whose branch
    runs only when needed also under ``vmap``.

    Why not ``lax.cond``: under ``vmap`` with a batched predicate it becomes a select that
    runs both branches for every member, and the rare branches here (a repeated
    Gram-Schmidt pass, a fresh random direction after a breakdown) read the whole basis.
    A ``while_loop`` at most one trip long runs its body only when some member needs it;
    the others keep their operand, so each member computes what it would alone.
    """
    _, out = jax.lax.while_loop(lambda c: c[0], lambda c: (jnp.zeros((), bool), fn(c[1])), (pred, operand))
    return out


_DGKS = 0.717  # another pass when one removed more than ~30% of the norm (1/sqrt(2), ARPACK)


def _cgs(Q, w, local_start=None, local_rows=0):
    """Orthogonalise ``w`` against the rows of ``Q``: ``(w', h, ||w'||)`` with ``w = w' + Q^T h``.

    Classical Gram-Schmidt passes against the whole basis, repeated while a pass removes
    more than ~30% of the norm (the DGKS test of ARPACK, at most three passes), so the
    result is orthogonal to working accuracy. With ``local_rows > 0`` a pass against the
    rows ``local_start .. local_start + local_rows - 1`` comes first: in Lanczos they hold
    almost all of ``A q_j`` (the three-term recurrence), after them one full pass removes
    only rounding and the test spares the second one -- which halves the cost of a step,
    whose full passes read the whole basis.
    """

    def one(w):
        h = jnp.matmul(Q, w, precision=_HI)
        return w - jnp.matmul(h, Q, precision=_HI), h

    h = jnp.zeros(Q.shape[:1], w.dtype)
    if local_rows:
        L = jax.lax.dynamic_slice_in_dim(Q, local_start, local_rows)
        hl = jnp.matmul(L, w, precision=_HI)
        w = w - jnp.matmul(hl, L, precision=_HI)
        h = jax.lax.dynamic_update_slice_in_dim(h, hl, local_start, 0)
    n0 = jnp.linalg.norm(w)
    w, h1 = one(w)
    n1 = jnp.linalg.norm(w)

    def again(o):
        w, h, _, n = o
        w, hk = one(w)
        return w, h + hk, n, jnp.linalg.norm(w)

    o = (w, h + h1, n0, n1)
    o = _when(o[3] < _DGKS * o[2], again, o)
    o = _when(o[3] < _DGKS * o[2], again, o)
    w, h, _, nrm = o
    return w, h, nrm


def _fresh_direction(Q, key, stream, counter, dead_tol):
    """A random unit vector orthogonal to the rows of Q, or zero (dead) if none is left."""
    key = jax.random.fold_in(jax.random.fold_in(key, stream), counter)
    r = jax.random.normal(key, Q.shape[1:], Q.dtype)
    r = r / jnp.linalg.norm(r)
    r, _, rn = _cgs(Q, r)
    dead = rn <= dead_tol
    r = jnp.where(dead, jnp.zeros_like(r), r / jnp.where(dead, 1.0, rn).astype(r.dtype))
    return r, dead


def _with_residual(d: LanczosDecomposition, rows: jax.Array | None = None) -> LanczosDecomposition:
    """Refresh ``residual`` (``rows`` if given, else read from the basis) and ``residual_norm``."""
    b = d.residual.shape[0]
    m = d.projection.shape[1]
    if rows is None:
        rows = jax.lax.dynamic_slice_in_dim(d.basis, d.num_rows, b)
    coupling = jax.lax.dynamic_slice_in_dim(d.projection, d.num_rows, b)
    cols = jnp.arange(m, dtype=jnp.int32) < d.num_rows
    coupling = jnp.where(cols[None, :], coupling, jnp.zeros_like(coupling))
    return d._replace(residual=rows, residual_norm=jnp.linalg.norm(coupling, axis=1))


def _exhausted(dead, num_rows, m):
    rows = dead.shape[0]
    return (num_rows < m) & dead[jnp.minimum(num_rows, rows - 1)]


class _StartBlock(NamedTuple):
    basis: jax.Array
    dead: jax.Array
    breakdown: jax.Array


def start_decomposition(v0: jax.Array, num_matvecs: int, *, block_size: int = 1,
                        key: jax.Array | None = None) -> LanczosDecomposition:
    """An empty decomposition (no products yet) whose next rows are ``v0`` orthonormalised.

    ``v0`` has shape ``(n,)`` for ``block_size=1``, else ``(block_size, n)``; a start
    vector dependent on the previous ones is replaced by a random direction from ``key``
    (``None``: a fixed internal stream) and flags ``breakdown``.
    """
    b, m = int(block_size), int(num_matvecs)
    dtype = v0.dtype
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"v0.dtype={dtype}: must be a real floating dtype")
    if b == 1 and v0.ndim != 1:
        raise ValueError(f"v0.shape={v0.shape}: expected (n,) for block_size=1")
    if b > 1 and (v0.ndim != 2 or v0.shape[0] != b):
        raise ValueError(f"v0.shape={v0.shape}: expected ({b}, n)")
    V0 = v0.reshape(b, -1)
    n = V0.shape[1]
    eps = float(jnp.finfo(dtype).eps)
    dead_tol = _tolerances(n, m + b, dtype, dtype).dead
    rkey = jax.random.key(0) if key is None else key

    def body(i, s: _StartBlock) -> _StartBlock:
        w = V0[i]
        w0 = jnp.linalg.norm(w)
        w, _, nw = _cgs(s.basis, w)
        bad = nw <= 10.0 * eps * w0
        r, rdead = _fresh_direction(s.basis, rkey, 1, i, dead_tol)
        q = jnp.where(bad, r, w / jnp.where(bad, 1.0, nw).astype(dtype))
        return _StartBlock(s.basis.at[i].set(q), s.dead.at[i].set(bad & rdead),
                           s.breakdown | bad)

    s = _StartBlock(jnp.zeros((m + b, n), dtype), jnp.zeros((m + b,), bool),
                    jnp.zeros((), bool))
    # The b start vectors, unrolled at trace time (b is static and small); a fori_loop
    # here rounds differently and moved a borderline convergence by one product.
    for i in range(b):
        s = body(i, s)
    zero = jnp.zeros((), jnp.int32)
    return LanczosDecomposition(
        basis=s.basis, projection=jnp.zeros((m + b, m), dtype),
        residual=s.basis[:b], residual_norm=jnp.zeros((b,), dtype),
        num_rows=zero, num_matvecs=zero, breakdown=s.breakdown,
        exhausted=_exhausted(s.dead, zero, m), dead=s.dead, scale=jnp.zeros((), dtype),
        sequence_start=zero, random_sequence=jnp.zeros((), bool),
    )


def can_continue(d: LanczosDecomposition) -> jax.Array:
    """Room for another product and a direction to multiply."""
    return (d.num_rows < d.projection.shape[1]) & ~d.exhausted


def lanczos_step(d: LanczosDecomposition, matvec: Callable[..., jax.Array], *params: Any,
                 key: jax.Array | None = None, matvec_dtype: Any = None) -> LanczosDecomposition:
    """One product: multiply row ``p``, orthogonalise, append row ``p + b`` (see module doc).

    ``matvec(v, *params)`` sees ``v`` cast to ``matvec_dtype`` (default: the basis dtype)
    and its result is cast back. Call only while :func:`can_continue` holds.
    """
    Q, C = d.basis, d.projection
    dtype = Q.dtype
    b, m = d.residual.shape[0], C.shape[1]
    mv_dt = dtype if matvec_dtype is None else jnp.dtype(matvec_dtype)
    tol = _tolerances(Q.shape[1], m + b, dtype, mv_dt)
    rkey = jax.random.key(0) if key is None else key
    j = d.num_rows
    Aq = matvec(Q[j].astype(mv_dt), *params).astype(dtype)
    scale = jnp.maximum(d.scale, jnp.linalg.norm(Aq))
    # rows j-b .. j+b-1 hold A q_j but for rounding (band recurrence); the clamp at 0
    # only adds rows that are still zero or already in that band
    w, h, nrm = _cgs(Q, Aq, jnp.maximum(j - b, 0), 2 * b)
    C = C.at[:, j].set(h)
    t = j + b
    bd = nrm <= tol.breakdown * scale
    near = nrm <= tol.near_breakdown * scale
    # the counter rides in the operand and changes: a draw that depended only on values
    # from outside the loop would be hoisted out of it by XLA and run every step
    new, ndead, _ = _when(bd, lambda o: (*_fresh_direction(Q, rkey, 0, o[2], tol.dead), o[2] + 1),
                          (w / jnp.where(bd, 1.0, nrm).astype(dtype), jnp.zeros((), bool), d.num_matvecs))
    Q = Q.at[t].set(new)
    C = C.at[t, j].set(jnp.where(bd, jnp.zeros((), dtype), nrm))
    dead = d.dead.at[t].set(ndead)
    # A random direction r (generic in the orthogonal complement V of the spanned
    # invariant subspace) with A r in span(Q) is an eigenvector of A on V, which for a
    # generic r means A = theta I on V: the spectrum is then fully known.
    complete = bd & (j == d.sequence_start) & d.random_sequence
    new_sequence = near & ~ndead
    d = d._replace(
        basis=Q, projection=C, dead=dead, num_rows=j + 1, num_matvecs=d.num_matvecs + 1,
        scale=scale, breakdown=d.breakdown | bd,
        exhausted=d.exhausted | complete | _exhausted(dead, j + 1, m),
        sequence_start=jnp.where(new_sequence, t, d.sequence_start).astype(jnp.int32),
        random_sequence=jnp.where(new_sequence, bd, d.random_sequence),
    )
    # The next rows are the old residual's tail and the new row. Reading them back from
    # the updated basis instead made XLA fuse that read with the in-place row update and
    # copy the whole (m + b, n) basis twice per product (more than the product costs).
    return _with_residual(d, jnp.concatenate([d.residual[1:], new[None].astype(dtype)], axis=0))


def thick_restart(d: LanczosDecomposition, coefficients: jax.Array,
                  values: jax.Array) -> LanczosDecomposition:
    """Compress a full decomposition (``num_rows == m``) onto ``k`` Ritz pairs (Wu-Simon).

    Args:
      d: a decomposition with ``m`` multiplied rows.
      coefficients: ``(m, k)`` Ritz vectors in basis coordinates (columns).
      values: ``(k,)`` their Ritz values.

    Returns:
      The decomposition whose first ``k`` rows are the Ritz vectors, followed by the
      residual block; its projection has ``values`` on the diagonal and the couplings of
      the residual block below them (an arrowhead), and the next products extend it.
      Counters and flags carry over; the dead rows and the sequence bookkeeping reset.
    """
    m = d.projection.shape[1]
    b = d.residual.shape[0]
    k = coefficients.shape[1]
    Y = jnp.matmul(coefficients.T, d.basis[:m], precision=_HI)
    Q = jnp.zeros_like(d.basis).at[:k].set(Y).at[k : k + b].set(d.basis[m:])
    G = jnp.matmul(d.projection[m:], coefficients, precision=_HI)
    C = jnp.zeros_like(d.projection)
    C = C.at[jnp.arange(k), jnp.arange(k)].set(values)
    C = C.at[k : k + b, :k].set(G)
    zero = jnp.zeros((), bool)
    d = d._replace(basis=Q, projection=C, dead=jnp.zeros_like(d.dead),
                   num_rows=jnp.asarray(k, jnp.int32), exhausted=zero,
                   sequence_start=jnp.zeros((), jnp.int32), random_sequence=zero)
    return _with_residual(d)


def lanczos_decomposition(
    num_matvecs: int, *, block_size: int = 1, reortho: str = "full", matvec_dtype: Any = None,
) -> Callable[..., LanczosDecomposition]:
    """Factory: the (block) Lanczos decomposition of a symmetric operator.

    Args:
      num_matvecs: products ``m`` (the projected matrix is ``m x m``; memory
        ``(m + b) * n`` numbers). Fewer are used when the space is exhausted.
      block_size: ``b`` start vectors (band Lanczos); ``v0`` then has shape ``(b, n)``.
      reortho: only ``"full"`` (every product orthogonalised against the whole stored
        basis to working precision; see the module doc).
      matvec_dtype: if given, vectors are cast to this dtype before ``matvec`` and the
        result cast back: e.g. a float32 matvec under a float64 recurrence.

    Returns:
      ``decompose(matvec, v0, *params, key=None) -> LanczosDecomposition`` where
      ``matvec(v, *params)`` acts on flat vectors; ``v0`` (not necessarily normalised)
      sets the recurrence dtype; ``key`` seeds the random directions used only after a
      breakdown (``None``: a fixed internal stream).
    """
    if reortho != "full":
        raise ValueError(f"reortho={reortho!r}: only 'full' is supported")
    b, m = int(block_size), int(num_matvecs)
    if b < 1:
        raise ValueError(f"block_size={block_size}: must be >= 1")
    if m < b:
        raise ValueError(f"num_matvecs={num_matvecs}: must be >= block_size = {b}")

    def decompose(matvec, v0, *params, key=None) -> LanczosDecomposition:
        d0 = start_decomposition(v0, m, block_size=b, key=key)
        step = lambda d: lanczos_step(d, matvec, *params, key=key, matvec_dtype=matvec_dtype)
        return jax.lax.while_loop(can_continue, step, d0)

    return decompose
