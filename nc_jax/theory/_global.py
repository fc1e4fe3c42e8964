"""Theorem 3.1 in closed form: the regimes, the global minimum and the NC predictions,
with the under/overflow-safe scale quantities and lambda checks they are computed with.

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

import enum
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from nc_jax.theory._imbalanced import imbalanced_global_minimum
from nc_jax.ufm import (
    UFMParams,
    UFMProblem,
    _check_float_dtype,
    _helmert_columns,
    one_hot_targets,
    require_balanced,
)


class Regime(enum.IntEnum):
    """The regimes of Theorem 3.1, as carried by :attr:`GlobalMinimum.regime` (an int code).

    Traced code carries the int; :attr:`label` is the name written to outputs and JSON.
    """

    ZERO = 0  # lambda_W lambda_H >= 1/(NK): W* = H* = 0
    LOW_RANK = 1  # bias, d < K-1: class means = best rank-d approximation of the ETF
    SIMPLEX_ETF_D_EQ_K_MINUS_1 = 2  # bias, d = K-1: simplex ETF, independent of lambda_b
    SIMPLEX_ETF = 3  # bias, d >= K, lambda_b <= t/(1-t): simplex ETF
    SHIFTED_ETF = 4  # bias, d >= K, lambda_b > t/(1-t): Gram ~ I - gamma 11^T, not an ETF
    NO_BIAS_LOW_RANK = 5  # no bias, d < K: a rank-d orthogonal projection
    NO_BIAS_ORTHOGONAL = 6  # no bias, d >= K: orthogonal frame, W W^T ~ I
    IMBALANCED_NO_BIAS = 7  # no bias, unequal classes: orthogonal frame, class-dependent lengths

    @property
    def label(self) -> str:
        """The regime's name in outputs: ``"simplex_etf_d=K-1"`` for d = K-1, else the lower-case member name."""
        return "simplex_etf_d=K-1" if self is Regime.SIMPLEX_ETF_D_EQ_K_MINUS_1 else self.name.lower()


REGIME_NAMES = tuple(r.label for r in Regime)


def regime_name(code: Any) -> str:
    """Readable name of an integer regime code (``Regime(code).label``)."""
    return Regime(int(code)).label


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
      regime: integer code of a :class:`Regime`; ``regime_name(regime)`` is its name.
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
    if not problem.balanced:
        return _imbalanced(problem, dtype)
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
        regime = jnp.where(zero, int(Regime.ZERO),
                           int(Regime.NO_BIAS_LOW_RANK if d < K else Regime.NO_BIAS_ORTHOGONAL))
    elif d >= K:
        # lambda_b (1 - t) > t; off `direct`, t < 1e-138 and the scaled test is exact
        beyond = jnp.where(direct, lb * (1.0 - t) > t, _safe_div(lb, hi) > math.sqrt(K * N) * lo)
        shifted = jnp.logical_and(~zero, beyond)
        lb_or_1 = jnp.where(shifted, lb, 1.0)
        beta_shifted = jnp.where(
            direct, _safe_div(t, K * lb_or_1), (sqrt_n * _safe_div(hi, lb_or_1)) * lo
        )
        beta = jnp.where(shifted, beta_shifted, beta_small_lb)
        regime = jnp.where(zero, int(Regime.ZERO), jnp.where(shifted, int(Regime.SHIFTED_ETF), int(Regime.SIMPLEX_ETF)))
    else:
        beta = beta_small_lb
        regime = jnp.where(zero, int(Regime.ZERO),
                           int(Regime.SIMPLEX_ETF_D_EQ_K_MINUS_1 if d == K - 1 else Regime.LOW_RANK))

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


def _check_minimum(minimum: Any, problem: UFMProblem, dtype) -> GlobalMinimum:
    """``minimum`` if it can be ``global_minimum(problem, dtype=dtype)`` (type, shape, dtype)."""
    if not isinstance(minimum, GlobalMinimum):
        raise TypeError(f"minimum must be a GlobalMinimum (from global_minimum); got {type(minimum).__name__}")
    shape = (problem.num_classes, problem.feature_dim)
    W = minimum.params.W
    if W.shape != shape or W.dtype != dtype:
        raise ValueError(f"minimum must be global_minimum(problem, dtype={jnp.dtype(dtype).name}): W of shape "
                         f"{shape} and dtype {jnp.dtype(dtype).name}; got shape {W.shape}, dtype {W.dtype}")
    return minimum


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


def nc_predictions(problem: UFMProblem, *, dtype=None, minimum: GlobalMinimum | None = None) -> NCPrediction:
    """The NC1, NC3 (self-duality) and NC2 (class-mean Gram) predictions of Theorem 3.1.

    Args:
      problem: the UFMProblem.
      dtype: float dtype (default: the lambdas').
      minimum: ``global_minimum(problem, dtype=dtype)`` when the caller already holds it
        (it is not computed again); None computes it here.

    Raises:
      TypeError: ``problem`` not a UFMProblem; ``dtype`` not float32 or float64 (the Gram
        spectrum needs LAPACK's eigvalsh); ``minimum`` not a GlobalMinimum.
      ValueError: as :func:`global_minimum`; ``minimum`` of another shape or dtype.
    """
    _check_problem(problem, "nc_predictions")
    require_balanced(problem, "nc_predictions")
    (lw, lh, _), dtype = _lambdas(problem, dtype, "nc_predictions")
    gm = global_minimum(problem, dtype=dtype) if minimum is None else _check_minimum(minimum, problem, dtype)
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


def _imbalanced(problem: UFMProblem, dtype) -> GlobalMinimum:
    """Unequal class sizes: the no-bias closed form of :mod:`._imbalanced` as a GlobalMinimum."""
    if problem.bias:
        raise ValueError("global_minimum: no closed form for unequal class sizes with a bias "
                         f"(n_per_class={problem.n_per_class}); explore it with landscape.explore")
    (lw, lh, _), dtype = _lambdas(problem, dtype, "global_minimum")
    _check_attained(problem.lambda_W, problem.lambda_H)
    value, params, alive, _ = imbalanced_global_minimum(problem, dtype=dtype)
    regime = jnp.where(jnp.any(alive), int(Regime.IMBALANCED_NO_BIAS), int(Regime.ZERO))
    sigma = jnp.asarray(np.sort(np.sqrt(np.asarray(problem.class_sizes, float)))[::-1].copy(), dtype)
    return GlobalMinimum(value=value, bias=jnp.zeros((), dtype), params=params, regime=regime,
                         singular_values=sigma, lambda_b_threshold=jnp.asarray(jnp.inf, dtype))
