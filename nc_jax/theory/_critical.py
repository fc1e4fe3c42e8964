"""Lemma B.2 in closed form: critical points of the factorized (no-bias or fixed-bias) UFM,
their exact Hessian spectrum block by block, and a unit direction of most negative curvature.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from nc_jax.theory._global import _check_problem, _lambdas, _safe_div
from nc_jax.ufm import (
    UFMParams,
    UFMProblem,
    _check_float_dtype,
    _check_int,
    _check_positive_finite,
    one_hot_targets,
    require_balanced,
    orthonormal_complement_of_ones,
)


class CriticalPoint(NamedTuple):
    """A critical point of 1/(2N)||W H - T||^2 + lambda_W/2||W||^2 + lambda_H/2||H||^2.

    Attributes:
      params: the point (UFMParams with b None).
      lambda_min: the exact smallest Hessian eigenvalue.
      spectrum: all Hessian eigenvalues (K d + d N of them), ascending.
      direction: a unit eigenvector (UFMParams) for lambda_min.
      kept: indices of the kept singular directions (static tuple).
      paper_bound: the Rayleigh quotient of the paper's Lemma B.2 direction (an upper
        bound on lambda_min; nan when the point is a local minimum).
    """

    params: UFMParams
    lambda_min: jax.Array
    spectrum: jax.Array
    direction: UFMParams
    kept: tuple
    paper_bound: jax.Array


def _check_kept(kept: Any, *, num_directions: int, max_count: int, count_ok: bool, what: str,
                max_label: str = "min(d, K)") -> tuple:
    """``kept`` as a tuple of distinct indices, or ValueError naming ``kept`` and the range.

    A count r (when ``count_ok``) in [0, max_count] means the first r directions; a
    sequence holds distinct integer indices in [0, num_directions), at most max_count.
    """
    count_text = f"a count in [0, {max_count}] or " if count_ok else ""
    accepted = (f"{count_text}a sequence of at most {max_count} distinct integer indices "
                f"in [0, {num_directions}) ({what})")
    if isinstance(kept, (bool, np.bool_)) or isinstance(kept, (str, bytes)):
        raise ValueError(f"kept must be {accepted}; got {kept!r} of type {type(kept).__name__}")
    if isinstance(kept, (int, np.integer)):
        if not count_ok:
            raise ValueError(f"kept must be {accepted}; got the int {kept!r}")
        if not 0 <= kept <= max_count:
            raise ValueError(f"kept must be {accepted}; got the count {kept!r}")
        return tuple(range(int(kept)))
    if isinstance(kept, (np.ndarray, jax.Array)):
        if kept.ndim != 1 or not jnp.issubdtype(kept.dtype, jnp.integer):
            raise ValueError(f"kept must be {accepted}; got an array of shape {kept.shape} and dtype {kept.dtype}")
        kept = [int(p) for p in np.asarray(kept)]
    try:
        items = tuple(kept)
    except TypeError:
        raise ValueError(f"kept must be {accepted}; got {kept!r} of type {type(kept).__name__}") from None
    for p in items:
        integer_array = isinstance(p, (np.ndarray, jax.Array)) and p.ndim == 0 and jnp.issubdtype(p.dtype, jnp.integer)
        if isinstance(p, (bool, np.bool_)) or not (isinstance(p, (int, np.integer)) or integer_array):
            raise ValueError(f"kept must be {accepted}; got the entry {p!r} of type {type(p).__name__} in {kept!r}")
    items = tuple(int(p) for p in items)
    if len(set(items)) != len(items) or any(p < 0 or p >= num_directions for p in items):
        raise ValueError(f"kept must be distinct indices in [0, {num_directions}) ({what}); got {items}")
    if len(items) > max_count:
        raise ValueError(f"kept may hold at most {max_label} = {max_count} indices ({what}); got {len(items)}: {items}")
    return items


def _random_orthogonal(key: jax.Array, size: int, dtype) -> jax.Array:
    """A random ``size x size`` orthogonal matrix: Q of the QR of a Gaussian draw."""
    Q, _ = jnp.linalg.qr(jax.random.normal(key, (size, size), dtype))
    return Q


def _eig2_min(a11, a12, a22):
    """Smallest eigenvalue of the symmetric 2x2 matrix [[a11, a12], [a12, a22]]."""
    return 0.5 * (a11 + a22) - jnp.sqrt(0.25 * (a11 - a22) ** 2 + a12**2)


def _eig2(a11, a12, a22):
    mid, rad = 0.5 * (a11 + a22), jnp.sqrt(0.25 * (a11 - a22) ** 2 + a12**2)
    return jnp.stack([mid - rad, mid + rad], axis=-1)


def factorization_critical_point(
    target: jax.Array,
    lambda_W: Any,
    lambda_H: Any,
    feature_dim: int,
    kept: Sequence[int],
    *,
    scale: float | None = None,
    rotation_key: jax.Array | None = None,
    svd: tuple | None = None,
) -> CriticalPoint:
    """A critical point of Lemma B.2 and its exact Hessian spectrum.

    The objective is ``scale/2 ||W H - T||^2 + lambda_W/2 ||W||^2 + lambda_H/2 ||H||^2``
    (``scale = 1/N`` by default: the UFM without bias when T = Y). Its critical points
    keep a subset S of the singular triplets (sigma_p, u_p, v_p) of T with
    sigma_p > lam := sqrt(a c), a = lambda_W/scale, c = lambda_H/scale:
    W = (c/a)^(1/4) U_S diag(sqrt(sigma_S - lam)) P^T, H = (a/c)^(1/4) P diag(...) V_S^T,
    with P (d x |S|) any orthonormal frame (random when ``rotation_key`` is given).

    Exact spectrum (in units of 1/scale). In the singular bases the Hessian splits into
    blocks: for p in S a 2x2 block with determinant 4 lam eta_p > 0; for p != q in S a
    PSD 4x4 block (with the rotation zero mode); for p in S, q not in S a 2x2 block
    [[r sigma_p, -sigma_q], [-sigma_q, sigma_p / r]] with r = sqrt(a/c) (the swap
    direction), negative iff sigma_q > sigma_p; for each of the d - |S| empty feature
    slots and each q not in S the block [[a, -sigma_q], [-sigma_q, c]] (negative iff
    sigma_q > lam), and for q in S [[a, -lam], [-lam, c]] (eigenvalues 0 and a + c); the
    remaining coordinates have eigenvalues a, c, or w_p^2 + c. So
    lambda_min = min(mu(tau, sigma_q)) over these blocks, where
    mu(tau, s) = (tau (r + 1/r) - sqrt(tau^2 (r - 1/r)^2 + 4 s^2)) / 2
    (tau = lam for an empty slot, tau = sigma_p for a kept direction). The paper's
    direction in Lemma B.2 gives only the upper bound -(sigma_q - lam)/cosh-like factor.

    Args:
      target: T, K x N with K <= N.
      lambda_W, lambda_H: weight decays (> 0).
      feature_dim: d.
      kept: indices (into the descending singular values of T) of kept directions;
        at most min(d, K), each with sigma_p > lam.
      scale: the data term's factor (default 1/N).
      rotation_key: optional key for a random orthonormal P.
      svd: optional explicit thin SVD ``(U, sigma, Vt)`` of T with sigma descending;
        needed to pick the basis when singular values repeat (e.g. T = Y).

    Raises:
      TypeError: ``target`` not a float32/float64 array, ``feature_dim`` not an integer.
      ValueError: on out-of-range, negative, duplicate or non-integer ``kept``, a kept
        sigma_p <= lam, lambdas not > 0, ``scale`` not > 0.
    """
    dtype, K, N, d, kept, scale = _check_factorization_inputs(target, lambda_W, lambda_H, feature_dim, kept,
                                                              scale)
    lw, lh = jnp.asarray(lambda_W, dtype), jnp.asarray(lambda_H, dtype)
    a, c = lw / scale, lh / scale
    lam = jnp.sqrt(a * c)
    if svd is None:
        U, sigma, Vt = jnp.linalg.svd(target, full_matrices=False)  # sigma descending
    else:
        U, sigma, Vt = svd
    if not isinstance(sigma, jax.core.Tracer):
        bad = [p for p in kept if float(sigma[p]) <= float(lam)]
        if bad:
            raise ValueError(
                f"kept directions {bad} have sigma <= sqrt(lambda_W lambda_H)/scale = {float(lam):.6g}"
            )
    S = list(kept)
    out = [q for q in range(K) if q not in S]
    rs = len(S)
    eta = sigma[jnp.array(S, dtype=int)] - lam if rs else jnp.zeros((0,), dtype)
    r = jnp.sqrt(a / c)
    w = (c / a) ** 0.25 * jnp.sqrt(eta)
    h = (a / c) ** 0.25 * jnp.sqrt(eta)
    if rotation_key is None:
        P = jnp.eye(d, dtype=dtype)
    else:
        P = _random_orthogonal(rotation_key, d, dtype)
    US = U[:, S]
    VS = Vt[S, :].T
    W = (US * w) @ P[:, :rs].T
    H = P[:, :rs] @ (VS * h).T

    spectrum = _hessian_spectrum(sigma, S, out, eta, w, h, a, c, lam, r, d=d, N=N, K=K, dtype=dtype) * scale
    lambda_min = spectrum[0]

    direction, paper_bound = _negative_direction(
        U, Vt, sigma, S, out, P, rs, d, a, c, lam, r, dtype, scale, K, N
    )
    return CriticalPoint(
        params=UFMParams(W, H, None),
        lambda_min=lambda_min,
        spectrum=spectrum,
        direction=direction,
        kept=tuple(kept),
        paper_bound=paper_bound,
    )


def _check_factorization_inputs(target, lambda_W, lambda_H, feature_dim, kept, scale):
    """Validated ``(dtype, K, N, d, kept, scale)`` of :func:`factorization_critical_point`."""
    if not hasattr(target, "shape") or not hasattr(target, "dtype"):
        raise TypeError(f"target must be a K x N array; got {type(target).__name__}")
    if len(target.shape) != 2:
        raise ValueError(f"target must be a K x N array (2-D); got shape {target.shape}")
    dtype = _check_float_dtype(target.dtype, "factorization_critical_point (target)")
    K, N = target.shape
    d = _check_int("feature_dim", feature_dim, 1)
    if K > N:
        raise ValueError(f"target must have K <= N; got shape {target.shape}")
    kept = _check_kept(kept, num_directions=K, max_count=min(d, K), count_ok=False,
                       what=f"the singular directions of the {K} x {N} target, d = {d}")
    _check_positive_finite("lambda_W", lambda_W)
    _check_positive_finite("lambda_H", lambda_H)
    if scale is not None:
        _check_positive_finite("scale", scale)
    scale = 1.0 / N if scale is None else scale
    return dtype, K, N, d, kept, scale


def _hessian_spectrum(sigma, S, out, eta, w, h, a, c, lam, r, *, d, N, K, dtype):
    """All Hessian eigenvalues at the critical point, ascending, in units of 1/scale.

    Block by block as in :func:`factorization_critical_point`'s docstring: 2x2 blocks
    [[a11, a12], [a12, a22]] with multiplicities (stacked to one array op), singles, and the
    4x4 blocks of kept pairs.
    """
    rs = len(S)
    sig_out = sigma[jnp.array(out, dtype=int)] if out else jnp.zeros((0,), dtype)
    n_out, n_empty = len(out), d - rs
    sig_S = sigma[jnp.array(S, dtype=int)] if S else jnp.zeros((0,), dtype)
    ones_out = jnp.ones((n_out,), dtype)
    blocks = [
        (h**2 + a, eta - lam, w**2 + c, 1),  # p in S: the diagonal blocks
        # p in S, q not in S: the swap blocks
        ((r * sig_S[:, None] * ones_out).ravel(), jnp.tile(-sig_out, rs), (sig_S[:, None] / r * ones_out).ravel(), 1),
        (a * ones_out, -sig_out, c * ones_out, n_empty),  # empty slot, q not in S
        (a * jnp.ones((rs,), dtype), -lam * jnp.ones((rs,), dtype), c * jnp.ones((rs,), dtype), n_empty),
    ]
    eigs = [jnp.tile(_eig2(a11, a12, a22).reshape(-1), mult) for a11, a12, a22, mult in blocks if mult]
    # singles: p in S with the N - K columns beyond K; empty slots likewise
    eigs.append(jnp.repeat(w**2 + c, N - K))
    eigs.append(jnp.full(((N - K) * n_empty,), c, dtype))
    pairs = list(itertools.combinations(range(rs), 2))
    if pairs:
        i, j = (jnp.array(x, dtype=int) for x in zip(*pairs))
        zero, minus = jnp.zeros(len(pairs), dtype), jnp.full((len(pairs),), -lam, dtype)
        # variables (x_pq, y_pq, x_qp, y_qp) for kept p = S[i] < q = S[j]
        rows = [
            [h[j] ** 2 + a, h[j] * w[i], zero, minus],
            [h[j] * w[i], w[i] ** 2 + c, minus, zero],
            [zero, minus, h[i] ** 2 + a, h[i] * w[j]],
            [minus, zero, h[i] * w[j], w[j] ** 2 + c],
        ]
        block = jnp.stack([jnp.stack(row, axis=-1) for row in rows], axis=-2)
        eigs.append(jnp.linalg.eigvalsh(block).reshape(-1))
    return jnp.sort(jnp.concatenate([e.reshape(-1) for e in eigs]))


def _negative_direction(U, Vt, sigma, S, out, P, rs, d, a, c, lam, r, dtype, scale, K, N):
    """Unit eigenvector for the most negative 2x2 block, and the paper's bound."""
    zeros = UFMParams(jnp.zeros((K, d), dtype), jnp.zeros((d, N), dtype), None)
    if not out:
        return zeros, jnp.asarray(jnp.nan, dtype)
    q = out[0]  # the largest uncovered singular value
    s_q = sigma[q]
    # Candidate "slots": an empty feature direction (tau = lam) or the weakest kept one.
    if d > rs:
        tau, slot, kept_scale = lam, P[:, rs], (a, c)
    else:
        i_min = int(np.argmin(np.asarray(sigma)[S])) if not isinstance(sigma, jax.core.Tracer) else rs - 1
        tau, slot = sigma[S[i_min]], P[:, i_min]
        kept_scale = (r * tau, tau / r)
    A11, A22 = kept_scale
    # eigenvector of [[A11, -s], [-s, A22]] for its smaller eigenvalue
    mu = _eig2_min(A11, -s_q, A22)
    vx, vy = s_q, A11 - mu  # (A11 - mu) x - s y = 0  =>  (x, y) ~ (s, A11 - mu)
    nrm = jnp.sqrt(vx**2 + vy**2)
    vx, vy = vx / nrm, vy / nrm
    dW = vx * jnp.outer(U[:, q], slot)
    dH = vy * jnp.outer(slot, Vt[q, :])
    # The paper's direction (Lemma B.2): dW = (c/a)^(1/4) u_q alpha^T, dH = (a/c)^(1/4) alpha v_q^T.
    px, py = (c / a) ** 0.25, (a / c) ** 0.25
    if d > rs:
        quad = -2.0 * s_q * px * py + a * px**2 + c * py**2
    else:
        quad = A11 * px**2 + A22 * py**2 - 2.0 * s_q * px * py
    paper_bound = scale * quad / (px**2 + py**2)
    return UFMParams(dW, dH, None), paper_bound


def lemma_b2_critical_point(
    problem: UFMProblem,
    kept: int | Sequence[int],
    *,
    class_rotation_key: jax.Array | None = None,
    rotation_key: jax.Array | None = None,
    dtype=None,
) -> CriticalPoint:
    """A critical point of Theorem 3.2's objective (no bias) keeping some directions of Y.

    Y = sqrt(n) U V^T for ANY orthogonal U (all K singular values equal sqrt(n)), so a
    critical point is fixed by the number r of kept directions, up to rotations:
    ``class_rotation_key`` draws U at random (default: U = I, the class axes),
    ``rotation_key`` draws the feature frame P. With r < min(d, K) the point is a strict
    saddle with lambda_min = ((lambda_W + lambda_H) - sqrt((lambda_W - lambda_H)^2 +
    4/(N K))) / 2; with r = min(d, K) it is a global minimizer.

    Args:
      problem: a UFMProblem with ``bias=False`` and ``loss="mse"``.
      kept: the number r in [0, min(d, K)] of kept directions, or explicit distinct
        indices in [0, K) into U's columns (at most min(d, K)).

    Raises:
      ValueError: ``kept`` out of range, negative, duplicated or not integers; a problem
        with bias or another loss; lambdas not > 0.
    """
    _check_problem(problem, "lemma_b2_critical_point")
    if problem.bias or problem.loss != "mse":
        raise ValueError(
            "lemma_b2_critical_point needs bias=False and loss='mse' (Theorem 3.2's objective); "
            f"got bias={problem.bias}, loss={problem.loss!r}"
        )
    require_balanced(problem, "lemma_b2_critical_point")
    K, n, d = problem.num_classes, problem.n_per_class, problem.feature_dim
    idx = _check_kept(kept, num_directions=K, max_count=min(d, K), count_ok=True,
                      what=f"directions of Y, K = {K}, d = {d}")
    (lw, lh, _), dtype = _lambdas(problem, dtype, "lemma_b2_critical_point")
    Y = one_hot_targets(problem, dtype)
    if class_rotation_key is None:
        U = jnp.eye(K, dtype=dtype)
    else:
        U = _random_orthogonal(class_rotation_key, K, dtype)
    # Y = sqrt(n) U (U^T Y / sqrt(n)) is an SVD for every orthogonal U.
    svd = (U, jnp.full((K,), math.sqrt(n), dtype), U.T @ Y / math.sqrt(n))
    return factorization_critical_point(Y, lw, lh, d, idx, rotation_key=rotation_key, svd=svd)


def ufm_critical_point(
    problem: UFMProblem,
    kept: int | Sequence[int],
    *,
    class_rotation_key: jax.Array | None = None,
    rotation_key: jax.Array | None = None,
    dtype=None,
) -> CriticalPoint:
    """A critical point of the vanilla-MSE UFM keeping some singular directions, any bias.

    Without bias this is :func:`lemma_b2_critical_point`. With bias, b = b0 1 with
    b0 = 1/(K(1 + lambda_b)) and the kept directions are taken among the K-1 directions
    orthogonal to 1 (``kept`` counts or indexes them, rotated by ``class_rotation_key``);
    then the residual's component along 1 does not depend on (W, H), grad_b f = 0, and
    (W, H) is a Lemma B.2 point for the target Y - b0 1 1^T.

    With bias, ``lambda_min`` and ``spectrum`` describe the Hessian restricted to
    directions that keep b fixed, so (Cauchy interlacing) ``lambda_min`` is an upper
    bound on the full smallest eigenvalue: a negative value certifies a strict saddle.
    The returned ``direction`` has no b component and attains that bound.

    Raises:
      ValueError: ``kept`` out of range (with bias: a count in [0, min(d, K-1)] or distinct
        indices in [0, K-1)), negative, duplicated or not integers; loss not "mse".
    """
    _check_problem(problem, "ufm_critical_point")
    if not problem.bias:
        return lemma_b2_critical_point(
            problem, kept, class_rotation_key=class_rotation_key, rotation_key=rotation_key, dtype=dtype
        )
    if problem.loss != "mse":
        raise ValueError(f"ufm_critical_point needs loss='mse'; got {problem.loss!r}")
    require_balanced(problem, "ufm_critical_point")
    K, n, d = problem.num_classes, problem.n_per_class, problem.feature_dim
    idx = _check_kept(kept, num_directions=K - 1, max_count=min(d, K - 1), count_ok=True,
                      what=f"with bias, the K-1 = {K - 1} directions orthogonal to 1, d = {d}",
                      max_label="min(d, K-1)")
    (lw, lh, lb), dtype = _lambdas(problem, dtype, "ufm_critical_point")
    beta = 1.0 / (K * (1.0 + lb))
    B = orthonormal_complement_of_ones(K, dtype)
    if class_rotation_key is not None:
        B = B @ _random_orthogonal(class_rotation_key, K - 1, dtype)
    U = jnp.concatenate([B, jnp.full((K, 1), 1.0 / math.sqrt(K), dtype)], axis=1)
    target = one_hot_targets(problem, dtype) - beta
    sigma = jnp.concatenate(
        [jnp.full((K - 1,), math.sqrt(n), dtype), (math.sqrt(n) * jnp.abs(1.0 - K * beta))[None]]
    )
    Vt = _safe_div(U.T @ target, sigma[:, None])
    cp = factorization_critical_point(target, lw, lh, d, idx, rotation_key=rotation_key, svd=(U, sigma, Vt))
    b = jnp.full((K,), beta, dtype)
    return cp._replace(
        params=UFMParams(cp.params.W, cp.params.H, b),
        direction=UFMParams(cp.direction.W, cp.direction.H, jnp.zeros((K,), dtype)),
    )

