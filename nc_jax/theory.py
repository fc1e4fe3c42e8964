"""Closed-form theory of the vanilla-MSE UFM: Theorem 3.1 and Lemma B.2, derived anew.

Derivation (the paper's statements carry typos; see docs/errata.md).

1. Fix b and write Y~ = Y - b 1^T. Since lambda_W ||W||^2 + lambda_H ||H||^2 >=
   2 sqrt(lambda_W lambda_H) ||W H||_*, with equality for balanced factors,
   min_{W,H} f = lambda_b/2 ||b||^2 + (1/N) min_{rank Z <= d} [1/2 ||Z - Y~||^2 + lt ||Z||_*]
   with lt = N sqrt(lambda_W lambda_H). The inner problem is solved by singular value
   thresholding of the top min(d, K) singular values: eta_i = [sigma_i - lt]_+, with value
   (1/N) [sum_{i <= min(d,K)} g(sigma_i) + sum_{i > d} sigma_i^2 / 2], where
   g(s) = s^2/2 for s <= lt and lt s - lt^2/2 otherwise.
2. The optimal b is b* 1 (for d >= K the reduced function of b is strictly convex and
   permutation invariant; for d < K the tests confirm it against L-BFGS). With b = beta 1
   and beta <= 1/K, Y~ has K-1 singular values sqrt(n) (directions orthogonal to 1) and
   one sqrt(n)(1 - K beta) (direction 1/sqrt(K)).
   * d <= K-1: the 1-direction is dropped, so beta* = 1/(K(1 + lambda_b)).
   * d >= K: with t = sqrt(K N lambda_W lambda_H) (t < 1 off the zero regime), the
     reduced function is convex and piecewise quadratic in beta; beta* = 1/(K(1 + lambda_b))
     when lambda_b <= t/(1-t), else beta* = t/(K lambda_b) = sqrt(n lambda_W lambda_H)/lambda_b.
   * t >= 1 (lambda_W lambda_H >= 1/(NK)): every singular value is thresholded away,
     W* = H* = 0 and beta* = 1/(K(1 + lambda_b)).
3. Factors: W* = (lambda_H/lambda_W)^(1/4) U_r diag(sqrt(eta)) P^T and
   H* = (lambda_W/lambda_H)^(1/4) P diag(sqrt(eta)) V_r^T for any orthonormal P (d x r).

Lemma B.2's critical points and their exact Hessian spectrum are in
:func:`factorization_critical_point`; see its docstring for the block structure.

Extreme lambdas. Products such as lambda_W lambda_H leave the float range (1e-200 *
1e-200 underflows to 0; 1e300 * 1e300 overflows) while the quantities that decide the
regime do not. Where lambda_W lambda_H is not a normal float, t is computed as
(sqrt(K N) max(sqrt(lambda_W), sqrt(lambda_H))) min(sqrt(lambda_W), sqrt(lambda_H)); on
underflow (then t < 1.5e-154 sqrt(K N), so 1 - t = 1 far below float resolution) the test
lambda_b (1 - t) > t becomes lambda_b / max(.) > sqrt(K N) min(.) and
b* = (sqrt(n) (max(.) / lambda_b)) min(.): every intermediate is a normal float whenever
the result is; on overflow t >= 1 (the zero regime). Elsewhere (lambda_H/lambda_W, the
Gram's norm, lambda_W/(lambda_H n), 0.5 lambda_b K) the same pattern applies. For normal
products the original expressions are used unchanged (bitwise). Lambdas must be 0 or
normal floats: XLA flushes subnormals to zero, so those are refused.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from nc_jax.ufm import (
    UFMParams,
    UFMProblem,
    _check_float_dtype,
    _check_int,
    _check_positive_finite,
    _helmert_columns,
    one_hot_targets,
    orthonormal_complement_of_ones,
)

__all__ = [
    "REGIME_NAMES",
    "regime_name",
    "GlobalMinimum",
    "global_minimum",
    "NCPrediction",
    "nc_predictions",
    "CriticalPoint",
    "factorization_critical_point",
    "lemma_b2_critical_point",
    "ufm_critical_point",
    "memory_estimate",
]

REGIME_NAMES = (
    "zero",  # lambda_W lambda_H >= 1/(NK): W* = H* = 0
    "low_rank",  # bias, d < K-1: class means = best rank-d approximation of the ETF
    "simplex_etf_d=K-1",  # bias, d = K-1: simplex ETF, independent of lambda_b
    "simplex_etf",  # bias, d >= K, lambda_b <= t/(1-t): simplex ETF
    "shifted_etf",  # bias, d >= K, lambda_b > t/(1-t): Gram ~ I - gamma 11^T, not an ETF
    "no_bias_low_rank",  # no bias, d < K: a rank-d orthogonal projection
    "no_bias_orthogonal",  # no bias, d >= K: orthogonal frame, W W^T ~ I
)


def regime_name(code: Any) -> str:
    """Readable name of an integer regime code."""
    return REGIME_NAMES[int(code)]


def _safe_sqrt(x):
    # sqrt with a finite gradient at 0 (the gradient there is taken as 0).
    positive = x > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, x, 1.0)), 0.0)


def _safe_div(num, den):
    nonzero = den != 0
    return jnp.where(nonzero, num / jnp.where(nonzero, den, 1.0), 0.0)


def _check_problem(problem: Any, where: str) -> None:
    if not isinstance(problem, UFMProblem):
        raise TypeError(f"{where}: problem must be a UFMProblem; got {problem!r} of type {type(problem).__name__}")


def _lambdas(problem: UFMProblem, dtype, where: str = "theory"):
    if dtype is None:
        dtype = jnp.result_type(
            *(jnp.asarray(getattr(problem, f)) for f in ("lambda_W", "lambda_H", "lambda_b"))
        )
        if not jnp.issubdtype(dtype, jnp.floating):
            dtype = jnp.result_type(float)
    dtype = _check_float_dtype(dtype, where)
    _check_representable(problem, dtype)
    return tuple(jnp.asarray(getattr(problem, f), dtype) for f in ("lambda_W", "lambda_H", "lambda_b")), dtype


def _check_representable(problem: UFMProblem, dtype) -> None:
    """Concrete lambdas must be 0 or normal floats of ``dtype``.

    XLA flushes subnormal numbers to zero (5e-324 * 1.0 == 0 on CPU), so a subnormal
    lambda would silently act as 0 and the closed form would describe another problem;
    a value above the float maximum would become inf.
    """
    tiny, big = _float_range(dtype)
    name_of = jnp.dtype(dtype).name
    for field in ("lambda_W", "lambda_H", "lambda_b"):
        value = getattr(problem, field)
        if isinstance(value, jax.core.Tracer):
            continue
        arr = np.abs(np.asarray(value, dtype=np.float64))
        if np.any((arr != 0) & (arr < tiny)):
            raise ValueError(
                f"{field} = {value!r} is not 0 but below the smallest normal {name_of} ({tiny:.6g}): "
                f"XLA flushes such subnormal numbers to zero; give 0 or a value in [{tiny:.6g}, {big:.6g}]"
            )
        if np.any(arr > big):
            raise ValueError(f"{field} = {value!r} overflows {name_of}; the accepted range is [0, {big:.6g}]")


def _float_range(dtype) -> tuple[float, float]:
    info = jnp.finfo(dtype)
    return float(info.tiny), float(info.max)


def _scale_quantities(lw, lh, K: int, n: int, dtype):
    """lt = N sqrt(lambda_W lambda_H) and t = sqrt(K N lambda_W lambda_H), without under/overflow.

    Returns (lt, t, direct, lo, hi): ``direct`` is True where lambda_W lambda_H is a normal
    float (or a factor is 0) and the original expressions are used; elsewhere t is
    (sqrt(K N) hi) lo with lo, hi = min, max of sqrt(lambda_W), sqrt(lambda_H).
    """
    N = K * n
    tiny, big = _float_range(dtype)
    prod = lw * lh
    direct = ((prod >= tiny) & (prod <= big)) | (lw == 0) | (lh == 0)
    lt_direct = N * _safe_sqrt(prod)
    root_w, root_h = _safe_sqrt(lw), _safe_sqrt(lh)
    lo, hi = jnp.minimum(root_w, root_h), jnp.maximum(root_w, root_h)
    t_scaled = (math.sqrt(K * N) * hi) * lo
    lt = jnp.where(direct, lt_direct, math.sqrt(n) * t_scaled)
    t = jnp.where(direct, lt_direct / math.sqrt(n), t_scaled)
    return lt, t, direct, lo, hi


def _check_attained(lambda_W, lambda_H) -> None:
    # With exactly one of lambda_W, lambda_H zero, the infimum is approached by
    # unbalanced factors and is not attained.
    if isinstance(lambda_W, jax.core.Tracer) or isinstance(lambda_H, jax.core.Tracer):
        return
    lw, lh = float(lambda_W), float(lambda_H)
    if (lw == 0) != (lh == 0):
        raise ValueError(
            "lambda_W and lambda_H must be both > 0 or both 0 for a minimizer to exist; "
            f"got lambda_W={lw}, lambda_H={lh}"
        )


class GlobalMinimum(NamedTuple):
    """The closed-form global minimum of the vanilla-MSE UFM (Theorem 3.1).

    Attributes:
      value: f*, the optimal objective value.
      bias: b*, the scalar with b = b* 1 (0 without bias).
      params: one global minimizer (UFMParams); every other is W* R, R^T H* for an
        orthogonal R (and, for d < K-1 or no bias with d < K, any other choice of the
        d kept directions among equal singular values).
      regime: integer code; ``REGIME_NAMES[regime]`` is its name.
      singular_values: the K singular values of Y - b* 1 1^T, in descending order.
      lambda_b_threshold: t/(1-t), t = sqrt(K N lambda_W lambda_H) (inf when t >= 1).
    """

    value: jax.Array
    bias: jax.Array
    params: UFMParams
    regime: jax.Array
    singular_values: jax.Array
    lambda_b_threshold: jax.Array


def global_minimum(problem: UFMProblem, *, dtype=None) -> GlobalMinimum:
    """The global minimum of eq. (3) (``bias=True``) or of Theorem 3.2's objective.

    Covers every regime of Theorem 3.1. Differentiable in the lambdas (array leaves of
    ``problem``) and vmappable over them; sizes are static.

    Exact for extreme lambdas too (see the module docstring): the regime and b* are decided
    without forming products that under- or overflow.

    Raises:
      TypeError: ``problem`` not a UFMProblem; ``dtype`` (or the lambdas' dtype) not
        float32 or float64.
      ValueError: if ``problem.loss`` is not ``"mse"`` (no closed form is known), or
        exactly one of lambda_W, lambda_H is zero (no minimizer exists).
    """
    _check_problem(problem, "global_minimum")
    if problem.loss != "mse":
        raise ValueError(
            f"global_minimum has a closed form for loss='mse' only; got loss={problem.loss!r}"
        )
    (lw, lh, lb), dtype = _lambdas(problem, dtype, "global_minimum")
    _check_attained(problem.lambda_W, problem.lambda_H)
    K, n, d = problem.num_classes, problem.n_per_class, problem.feature_dim
    N = K * n
    sqrt_n = math.sqrt(n)
    # lt = N sqrt(lambda_W lambda_H): the singular-value threshold lambda~;
    # t = lt / sqrt(n) = sqrt(K N lambda_W lambda_H)
    lt, t, direct, lo, hi = _scale_quantities(lw, lh, K, n, dtype)
    zero = t >= 1
    threshold = jnp.where(zero, jnp.inf, _safe_div(t, 1.0 - t))

    beta_small_lb = 1.0 / (K * (1.0 + lb))
    if not problem.bias:
        beta = jnp.zeros((), dtype)
        regime = jnp.where(zero, 0, 5 if d < K else 6)
    elif d >= K:
        # lambda_b (1 - t) > t; off `direct`, t < 1e-138 and the scaled test is exact
        beyond = jnp.where(direct, lb * (1.0 - t) > t, _safe_div(lb, hi) > math.sqrt(K * N) * lo)
        shifted = jnp.logical_and(~zero, beyond)
        lb_or_1 = jnp.where(shifted, lb, 1.0)
        beta_shifted = jnp.where(
            direct, _safe_div(t, K * lb_or_1), (sqrt_n * _safe_div(hi, lb_or_1)) * lo
        )
        beta = jnp.where(shifted, beta_shifted, beta_small_lb)
        regime = jnp.where(zero, 0, jnp.where(shifted, 4, 3))
    else:
        beta = beta_small_lb
        regime = jnp.where(zero, 0, 2 if d == K - 1 else 1)

    # Singular values of Y - beta 1 1^T: K-1 at sqrt(n), one at sqrt(n)|1 - K beta|.
    sigma = jnp.concatenate(
        [jnp.full((K - 1,), sqrt_n, dtype), (sqrt_n * jnp.abs(1.0 - K * beta))[None]]
    )
    r = min(d, K)
    kept, dropped = sigma[:r], sigma[r:]
    g = jnp.where(kept <= lt, 0.5 * kept**2, lt * kept - 0.5 * lt**2)
    value = (jnp.sum(g) + 0.5 * jnp.sum(dropped**2)) / N
    if problem.bias:
        bias_term = 0.5 * lb * K * beta**2
        # 0.5 lb K overflows for lb near the float maximum (then beta ~ 1/(K lb) underflows)
        bias_term = jnp.where(jnp.isfinite(bias_term), bias_term, 0.5 * (lb * beta) * (K * beta))
        value = value + bias_term

    params = _minimizer_params(problem, sigma, beta, lw, lh, lt, dtype)
    return GlobalMinimum(
        value=value,
        bias=beta,
        params=params,
        regime=regime,
        singular_values=sigma,
        lambda_b_threshold=threshold,
    )


def _singular_basis(num_classes: int, dtype, num_columns: int | None = None) -> jax.Array:
    """U = [Helmert basis of 1-perp, 1/sqrt(K)]: left singular vectors of Y - beta 11^T.

    Only the first ``num_columns`` columns (default all K) are built: K x r memory.
    """
    K = num_classes
    r = K if num_columns is None else num_columns
    columns = [jnp.asarray(_helmert_columns(K, min(r, K - 1)), dtype)]
    if r == K:
        columns.append(jnp.full((K, 1), 1.0 / math.sqrt(K), dtype))
    return jnp.concatenate(columns, axis=1)


def _balance(lw, lh):
    """(lambda_H/lambda_W)^(1/4) and its inverse; 1 when both are zero.

    Where lambda_H/lambda_W is not a normal float (e.g. 1e300/1e-300), fourth roots are
    taken before dividing, so the factors stay finite.
    """
    both = jnp.logical_and(lw > 0, lh > 0)
    safe_w, safe_h = jnp.where(both, lw, 1.0), jnp.where(both, lh, 1.0)
    ratio = jnp.where(both, safe_h / safe_w, 1.0)
    tiny, big = _float_range(ratio.dtype)
    direct = (ratio >= tiny) & (ratio <= big)
    root_w, root_h = jnp.sqrt(jnp.sqrt(safe_w)), jnp.sqrt(jnp.sqrt(safe_h))
    return (
        jnp.where(direct, ratio**0.25, root_h / root_w),
        jnp.where(direct, ratio**-0.25, root_w / root_h),
    )


def _minimizer_params(problem, sigma, beta, lw, lh, lt, dtype) -> UFMParams:
    K, d = problem.num_classes, problem.feature_dim
    r = min(d, K)
    U = _singular_basis(K, dtype, r)
    Yt = one_hot_targets(problem, dtype) - beta
    # V_r = Y~^T U_r / sigma_r; a zero singular value is thresholded away (eta = 0).
    V = _safe_div(Yt.T @ U, sigma[:r][None, :])
    root_eta = _safe_sqrt(jnp.maximum(sigma[:r] - lt, 0.0))
    scale_W, scale_H = _balance(lw, lh)
    embed = jnp.eye(r, d, dtype=dtype)
    W = scale_W * (U * root_eta) @ embed
    H = scale_H * embed.T @ (V * root_eta).T
    b = jnp.full((K,), beta, dtype) if problem.bias else None
    return UFMParams(W, H, b)


class NCPrediction(NamedTuple):
    """Neural-collapse predictions of Theorem 3.1 at every global minimizer.

    Attributes:
      nc1: within-class variability (0: h_{k,i} = mean of class k), 0 when W* = 0 too.
      self_duality: c with mean_k(H*) = c w*^k, c = sqrt(lambda_W / (lambda_H n)).
      gram: K x K Gram matrix of the class means, normalised to unit Frobenius norm
        (zeros in the zero regime). For d < K-1 (and no bias with d < K) this is one
        representative: every rank-d orthogonal projection of the same spectrum is optimal.
      gram_spectrum: its eigenvalues in descending order (unique in every regime).
      gamma: the Gram is proportional to I - gamma 11^T on its support (1/K for the ETF).
      rank: rank of W* (and of the class means).
    """

    nc1: jax.Array
    self_duality: jax.Array
    gram: jax.Array
    gram_spectrum: jax.Array
    gamma: jax.Array
    rank: jax.Array


def nc_predictions(problem: UFMProblem, *, dtype=None) -> NCPrediction:
    """The NC1, NC3 (self-duality) and NC2 (class-mean Gram) predictions of Theorem 3.1.

    Raises:
      TypeError: ``problem`` not a UFMProblem; ``dtype`` not float32 or float64 (the Gram
        spectrum needs LAPACK's eigvalsh).
      ValueError: as :func:`global_minimum`.
    """
    _check_problem(problem, "nc_predictions")
    (lw, lh, _), dtype = _lambdas(problem, dtype, "nc_predictions")
    gm = global_minimum(problem, dtype=dtype)
    W = gm.params.W
    gram = W @ W.T
    norm = jnp.linalg.norm(gram)
    # ||W W^T|| squares entries of W W^T: outside [sqrt(tiny), sqrt(max)] it under- or
    # overflows (extreme lambda_H/lambda_W); then W is rescaled by its largest entry first.
    tiny, big = _float_range(dtype)
    direct = (norm >= math.sqrt(tiny)) & (norm <= math.sqrt(big))
    W_unit = _safe_div(W, jnp.max(jnp.abs(W)))
    gram_unit = W_unit @ W_unit.T
    gram = jnp.where(direct, _safe_div(gram, norm), _safe_div(gram_unit, jnp.linalg.norm(gram_unit)))
    spectrum = jnp.sort(jnp.linalg.eigvalsh(gram))[::-1]
    K = problem.num_classes
    # gamma from the Gram's structure a I - c 11^T: gamma = c / a read off the entries.
    diag, off = gram[0, 0], gram[0, 1]
    gamma = _safe_div(-off, diag - off)
    lt = _scale_quantities(lw, lh, K, problem.n_per_class, dtype)[0]
    rank = jnp.sum(gm.singular_values[: min(problem.feature_dim, K)] > lt)
    ratio = _safe_div(lw, lh * problem.n_per_class)
    ratio_ok = ((ratio >= tiny) & (ratio <= big)) | (lw == 0) | (lh == 0)
    self_duality = jnp.where(
        ratio_ok,
        _safe_sqrt(ratio),
        _safe_div(_safe_sqrt(lw), _safe_sqrt(lh)) / math.sqrt(problem.n_per_class),
    )
    return NCPrediction(
        nc1=jnp.zeros((), dtype),
        self_duality=self_duality,
        gram=gram,
        gram_spectrum=spectrum,
        gamma=gamma,
        rank=rank,
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
        P, _ = jnp.linalg.qr(jax.random.normal(rotation_key, (d, d), dtype))
    US = U[:, S]
    VS = Vt[S, :].T
    W = (US * w) @ P[:, :rs].T
    H = P[:, :rs] @ (VS * h).T

    # ---- exact spectrum, block by block (xi units, converted by `scale` at the end) ----
    # 2x2 blocks [[a11, a12], [a12, a22]] with multiplicities, stacked to one array op.
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
    spectrum = jnp.sort(jnp.concatenate([e.reshape(-1) for e in eigs])) * scale
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
    K, n, d = problem.num_classes, problem.n_per_class, problem.feature_dim
    idx = _check_kept(kept, num_directions=K, max_count=min(d, K), count_ok=True,
                      what=f"directions of Y, K = {K}, d = {d}")
    (lw, lh, _), dtype = _lambdas(problem, dtype, "lemma_b2_critical_point")
    Y = one_hot_targets(problem, dtype)
    if class_rotation_key is None:
        U = jnp.eye(K, dtype=dtype)
    else:
        U, _ = jnp.linalg.qr(jax.random.normal(class_rotation_key, (K, K), dtype))
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
    K, n, d = problem.num_classes, problem.n_per_class, problem.feature_dim
    idx = _check_kept(kept, num_directions=K - 1, max_count=min(d, K - 1), count_ok=True,
                      what=f"with bias, the K-1 = {K - 1} directions orthogonal to 1, d = {d}",
                      max_label="min(d, K-1)")
    (lw, lh, lb), dtype = _lambdas(problem, dtype, "ufm_critical_point")
    beta = 1.0 / (K * (1.0 + lb))
    B = orthonormal_complement_of_ones(K, dtype)
    if class_rotation_key is not None:
        Q, _ = jnp.linalg.qr(jax.random.normal(class_rotation_key, (K - 1, K - 1), dtype))
        B = B @ Q
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


def memory_estimate(problem: UFMProblem, *, dtype=None, predictions: bool = True) -> int:
    """Bytes that :func:`global_minimum` (and :func:`nc_predictions`) allocate, from the sizes alone.

    Nothing is allocated: this is for refusing impossible sizes before any work (``nc-jax
    theory`` checks it with :func:`nc_jax.io.check_memory`). With K classes, n samples per
    class, N = K n, d features and r = min(d, K), ``global_minimum`` holds the targets
    Y - b 1^T (K x N, twice while it is formed), V (N x r, with two temporaries), the
    minimizer W (K x d) and H (d x N, twice while it is scaled) and the first r columns of
    the singular basis (K x r, three copies); ``nc_predictions`` adds the K x K Gram matrix
    and what its eigvalsh needs (about eight K x K arrays in all) while a first minimizer is still
    held. The estimate is the peak of these phases plus the outputs kept by a caller that
    holds one minimizer (as the CLI summary does), in bytes of ``dtype`` (default: the
    lambdas' float dtype, float64 with x64 enabled). An estimate, not an exact account;
    JAX's own baseline (a few hundred MB) is not included.

    Raises:
      TypeError: ``problem`` not a UFMProblem; ``dtype`` not float32 or float64.
    """
    _check_problem(problem, "memory_estimate")
    if dtype is None:
        dtype = jnp.result_type(*(getattr(problem, f) for f in ("lambda_W", "lambda_H", "lambda_b")))
        if not jnp.issubdtype(dtype, jnp.floating):
            dtype = jnp.result_type(float)
    itemsize = _check_float_dtype(dtype, "memory_estimate").itemsize
    K, n, d = problem.num_classes, problem.n_per_class, problem.feature_dim
    N, r = K * n, min(d, K)
    outputs = K * d + d * N + 3 * K  # W, H, b and the singular values of one minimizer
    work_minimum = 2 * K * N + 3 * N * r + 2 * d * N + 3 * K * r + 2 * K * d
    work_predictions = outputs + 8 * K * K if predictions else 0
    host = 8 * K * r  # the Helmert columns, built in float64 numpy
    return int(itemsize * (outputs + max(work_minimum, work_predictions)) + host)
