"""The unconstrained feature model (UFM): problems, parameters and objectives.

The UFM treats the last-layer features ``H`` as free variables (Section 2.1). With K
classes of n samples each (N = K n, columns class-major: class k owns columns
``k*n .. k*n + n - 1``), classifier ``W`` (K x d), features ``H`` (d x N) and bias ``b``
(K), the objectives are

* ``"mse"`` (eq. 3):           1/(2N) ||W H + b 1^T - Y||_F^2
* ``"rescaled_mse"`` (eq. 4):  1/(2N) ||Omega_alpha^(1/2) o (W H + b 1^T - M Y)||_F^2
* ``"ce"``:                    1/N sum_i CE(W h_i + b, y_i)
* ``"label_smoothing"``:       1/N sum_i CE against (1 - eps) y_i + eps/K
* ``"focal"``:                 1/N sum_i -(1 - p_i)^gamma log p_i, p_i the true-class softmax

each plus ``lambda_W/2 ||W||^2 + lambda_H/2 ||H||^2 + lambda_b/2 ||b||^2``; with
``bias=False`` there is no ``b`` (Theorem 3.2's objective) and ``UFMParams.b`` is ``None``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from nc_jax import losses, metrics

__all__ = [
    "LOSSES",
    "check_params",
    "UFMProblem",
    "UFMParams",
    "objective",
    "init_params",
    "labels",
    "require_balanced",
    "repeat_class_columns",
    "one_hot_targets",
    "orthonormal_complement_of_ones",
    "simplex_etf",
    "logits",
    "analytic_hvp",
    "CollapsedHessian",
    "collapsed_hessian",
]

LOSSES = losses.LOSSES  # re-exported: the names UFMProblem.loss accepts


_REAL_TYPES = "an int, a float, or a numpy/JAX real scalar or array"


def _type_name(value: Any) -> str:
    return type(value).__name__


def _check_real(name: str, value: Any) -> np.ndarray | None:
    """``value`` as a float64 numpy array if it is a concrete real number (or array of them).

    Returns None for a JAX tracer (a hyperparameter traced by jit/vmap/grad): its value is
    unknown at trace time and is not checked. Raises TypeError for anything else that is not
    a real number: str, None, bool, complex, object arrays.
    """
    if isinstance(value, jax.core.Tracer):
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(
        value, (int, float, np.integer, np.floating, np.ndarray, jax.Array)
    ):
        raise TypeError(f"{name} must be a real number ({_REAL_TYPES}); got {value!r} of type {_type_name(value)}")
    dtype = value.dtype if isinstance(value, (np.ndarray, np.generic, jax.Array)) else np.dtype(type(value))
    if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)) or jnp.issubdtype(
        dtype, jnp.bool_
    ):
        raise TypeError(f"{name} must be a real number ({_REAL_TYPES}); got {value!r} of dtype {dtype}")
    try:
        return np.asarray(value, dtype=np.float64)
    except OverflowError:  # a Python int beyond the float range: not finite
        return np.asarray(np.inf)


def _check_nonnegative_finite(name: str, value: Any) -> None:
    arr = _check_real(name, value)
    if arr is not None and (not np.all(np.isfinite(arr)) or np.any(arr < 0)):
        raise ValueError(
            f"{name} must be finite and >= 0 (accepted range [0, inf)); got {value!r}"
        )


def _check_positive_finite(name: str, value: Any) -> None:
    arr = _check_real(name, value)
    if arr is not None and (not np.all(np.isfinite(arr)) or np.any(arr <= 0)):
        raise ValueError(
            f"{name} must be finite and > 0 (accepted range (0, inf)); got {value!r}"
        )


def _check_int(name: str, value: Any, minimum: int) -> int:
    """``value`` as a Python int: TypeError unless an int or numpy integer (bool is not), ValueError below ``minimum``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(
            f"{name} must be an integer >= {minimum} (int or numpy integer); got {value!r} of type {_type_name(value)}"
        )
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return int(value)


_SUPPORTED_DTYPES = ("float32", "float64")


def _check_class_sizes(value: Any, num_classes: int) -> int | tuple:
    """An int n >= 1 (balanced), or K ints >= 1 (kept as a tuple unless all equal)."""
    if isinstance(value, (tuple, list, np.ndarray)):
        sizes = tuple(_check_int(f"n_per_class[{k}]", v, 1) for k, v in enumerate(value))
        if len(sizes) != num_classes:
            raise ValueError(f"n_per_class must be an int or one size per class ({num_classes}); "
                             f"got {len(sizes)} sizes")
        return sizes[0] if len(set(sizes)) == 1 else sizes
    return _check_int("n_per_class", value, 1)


def _check_float_dtype(dtype: Any, where: str, *, half_ok: bool = False) -> np.dtype:
    """The numpy dtype of ``dtype`` if it is a float dtype ``where`` supports, else TypeError.

    float32 and float64 always; float16 and bfloat16 only with ``half_ok`` (pure arithmetic:
    LAPACK, behind eigh/svd/qr, has no half-precision kernels).
    """
    try:
        dt = jnp.dtype(dtype)
    except TypeError:
        raise TypeError(f"{where}: dtype must be float32 or float64; got {dtype!r}") from None
    if dt.name in _SUPPORTED_DTYPES or (half_ok and dt.name in ("float16", "bfloat16")):
        return dt
    supported = "float16, bfloat16, float32 or float64" if half_ok else "float32 or float64"
    why = "" if half_ok or not jnp.issubdtype(dt, jnp.floating) else (
        " (half precision is supported by plain-arithmetic functions such as ufm.init_params and "
        "ufm.objective only; LAPACK, behind eigh/qr/svd, has no half-precision kernels)"
    )
    raise TypeError(f"{where}: dtype must be {supported}{why}; got {dt.name}")


@jax.tree_util.register_pytree_node_class
@dataclasses.dataclass(frozen=True)
class UFMProblem:
    """A UFM instance: sizes (static) and hyperparameters (array leaves).

    Args:
      num_classes: K >= 2.
      n_per_class: n >= 1 samples per class (balanced, as in the paper), or one size per
        class ``(n_1, ..., n_K)`` (class-imbalanced; equal sizes become the int).
      feature_dim: d >= 1.
      lambda_W, lambda_H, lambda_b: weight decays (finite, >= 0). They are pytree
        leaves, so ``jax.grad`` and ``jax.vmap`` reach them.
      bias: whether the model has a bias ``b`` (False: Theorem 3.2's objective).
      loss: one of ``"mse"`` (eq. 3), ``"rescaled_mse"`` (eq. 4), ``"ce"``.
      alpha: weight on the true-class entry of the rescaled MSE (> 0).
      M: target value of the true-class entry of the rescaled MSE (> 0).
      label_smoothing: epsilon of ``loss="label_smoothing"`` (in [0, 1)).
      focal_gamma: gamma of ``loss="focal"`` (>= 0; 0 is CE).

    Raises:
      TypeError: for a value of the wrong type (naming the argument, its value and the
        accepted types): sizes must be ints or numpy integers (not bool, not 4.0);
        hyperparameters ints, floats or numpy/JAX real scalars or arrays (not str, None,
        bool); JAX tracers (under jit/vmap/grad) are accepted unchecked.
      ValueError: for a value out of range (naming the argument, its value and the range).
    """

    num_classes: int
    n_per_class: int
    feature_dim: int
    lambda_W: Any = 5e-4
    lambda_H: Any = 5e-4
    lambda_b: Any = 5e-4
    bias: bool = True
    loss: str = "mse"
    alpha: Any = 1.0
    M: Any = 1.0
    label_smoothing: Any = 0.1
    focal_gamma: Any = 2.0

    def __post_init__(self):
        for name, minimum in (("num_classes", 2), ("feature_dim", 1)):
            # sizes are static pytree data: stored as Python ints (hashable, no overflow)
            object.__setattr__(self, name, _check_int(name, getattr(self, name), minimum))
        object.__setattr__(self, "n_per_class", _check_class_sizes(self.n_per_class, self.num_classes))
        for name in ("lambda_W", "lambda_H", "lambda_b"):
            _check_nonnegative_finite(name, getattr(self, name))
        _check_positive_finite("alpha", self.alpha)
        _check_positive_finite("M", self.M)
        _check_nonnegative_finite("focal_gamma", self.focal_gamma)
        _check_nonnegative_finite("label_smoothing", self.label_smoothing)
        smoothing = _check_real("label_smoothing", self.label_smoothing)
        if smoothing is not None and np.any(smoothing >= 1):
            raise ValueError(f"label_smoothing must be in [0, 1); got {self.label_smoothing!r}")
        losses.check_loss(self.loss)
        if not isinstance(self.bias, (bool, np.bool_)):
            raise TypeError(f"bias must be True or False; got {self.bias!r} of type {_type_name(self.bias)}")
        object.__setattr__(self, "bias", bool(self.bias))

    # Pytree protocol: sizes, bias and loss are static; hyperparameters are leaves.
    _LEAVES = ("lambda_W", "lambda_H", "lambda_b", "alpha", "M", "label_smoothing", "focal_gamma")
    _STATIC = ("num_classes", "n_per_class", "feature_dim", "bias", "loss")

    def tree_flatten(self):
        return (
            tuple(getattr(self, f) for f in self._LEAVES),
            tuple(getattr(self, f) for f in self._STATIC),
        )

    @classmethod
    def tree_unflatten(cls, static, leaves):
        # Bypass __init__: leaves may be tracers or placeholders inside transforms.
        obj = object.__new__(cls)
        for name, value in zip(cls._STATIC, static):
            object.__setattr__(obj, name, value)
        for name, value in zip(cls._LEAVES, leaves):
            object.__setattr__(obj, name, value)
        return obj

    @property
    def balanced(self) -> bool:
        """Every class has the same number of samples (``n_per_class`` is an int)."""
        return isinstance(self.n_per_class, int)

    @property
    def class_sizes(self) -> tuple:
        """(n_1, ..., n_K)."""
        return (self.n_per_class,) * self.num_classes if self.balanced else self.n_per_class

    @property
    def num_samples(self) -> int:
        """N = n_1 + ... + n_K (K n when balanced)."""
        return self.num_classes * self.n_per_class if self.balanced else sum(self.n_per_class)

    @property
    def zero_threshold(self) -> float:
        """lambda_W lambda_H at and above which W* = H* = 0: 1/(N K) (Theorem 3.1); without
        bias and with unequal classes max_k n_k / N^2 (every class collapsed)."""
        if self.balanced:
            return 1.0 / (self.num_samples * self.num_classes)
        if self.bias:
            raise ValueError("zero_threshold: no closed form for unequal class sizes with a bias")
        return max(self.n_per_class) / self.num_samples**2

    def replace(self, **changes) -> "UFMProblem":
        return dataclasses.replace(self, **changes)


class UFMParams(NamedTuple):
    """UFM variables. W: K x d; H: d x N (class-major columns); b: (K,) or None."""

    W: jax.Array
    H: jax.Array
    b: jax.Array | None = None


def labels(problem: UFMProblem) -> jax.Array:
    """Integer labels of the N class-major columns: k repeated n_k times."""
    return jnp.asarray(np.repeat(np.arange(problem.num_classes), problem.class_sizes))


def repeat_class_columns(per_class: jax.Array, problem: UFMProblem) -> jax.Array:
    """The class-major d x N matrix whose columns of class k all equal column k of ``per_class``."""
    return jnp.repeat(per_class, np.asarray(problem.class_sizes), axis=1, total_repeat_length=problem.num_samples)


def require_balanced(problem: UFMProblem, what: str) -> None:
    """A clear error where ``what`` is derived for equal class sizes only."""
    if not problem.balanced:
        raise ValueError(f"{what} is derived for balanced classes (an int n_per_class); got "
                         f"n_per_class={problem.n_per_class}")


def one_hot_targets(problem: UFMProblem, dtype=None) -> jax.Array:
    """Y = [y_1 1_n^T ... y_K 1_n^T] (K x N), one-hot columns, class-major."""
    dtype = jnp.result_type(float) if dtype is None else dtype
    # compared, not built from eye(K): K x N memory, never K x K
    return (jnp.arange(problem.num_classes)[:, None] == labels(problem)[None, :]).astype(dtype)


def check_params(params: UFMParams, problem: UFMProblem) -> None:
    """Shapes of (W, H, b) against the problem; b must be None exactly when bias=False."""
    K, d, N = problem.num_classes, problem.feature_dim, problem.num_samples
    if params.W.shape != (K, d):
        raise ValueError(f"params.W must have shape (K, d) = {(K, d)}; got {params.W.shape}")
    if params.H.shape != (d, N):
        raise ValueError(f"params.H must have shape (d, N) = {(d, N)}; got {params.H.shape}")
    if problem.bias:
        if params.b is None or params.b.shape != (K,):
            got = None if params.b is None else params.b.shape
            raise ValueError(f"params.b must have shape (K,) = {(K,)} when bias=True; got {got}")
    elif params.b is not None:
        raise ValueError("params.b must be None when problem.bias is False")


def logits(params: UFMParams, problem: UFMProblem) -> jax.Array:
    """Z = W H + b 1^T (K x N)."""
    Z = params.W @ params.H
    if problem.bias:
        Z = Z + params.b[:, None]
    return Z


def data_loss(params: UFMParams, problem: UFMProblem) -> jax.Array:
    """The loss term of the objective, without weight decay."""
    check_params(params, problem)
    Z = logits(params, problem)
    Y = one_hot_targets(problem, Z.dtype)
    return losses.data_loss(problem.loss, Z, Y, alpha=problem.alpha, M=problem.M, smoothing=problem.label_smoothing,
                            gamma=problem.focal_gamma, class_axis=0)


def regularizer(params: UFMParams, problem: UFMProblem) -> jax.Array:
    """lambda_W/2 ||W||^2 + lambda_H/2 ||H||^2 (+ lambda_b/2 ||b||^2 with bias)."""
    dtype = params.W.dtype
    reg = 0.5 * jnp.asarray(problem.lambda_W, dtype) * jnp.sum(params.W**2)
    reg = reg + 0.5 * jnp.asarray(problem.lambda_H, dtype) * jnp.sum(params.H**2)
    if problem.bias:
        reg = reg + 0.5 * jnp.asarray(problem.lambda_b, dtype) * jnp.sum(params.b**2)
    return reg


def objective(params: UFMParams, problem: UFMProblem) -> jax.Array:
    """The regularized UFM objective f(W, H, b): eq. (3), eq. (4) or CE, plus weight decay.

    Pure and jit/vmap/grad-able; the result has the dtype of ``params``.
    """
    return data_loss(params, problem) + regularizer(params, problem)


def init_params(key: jax.Array, problem: UFMProblem, scale: float = 1.0, *, dtype=None) -> UFMParams:
    """Random parameters with i.i.d. N(0, scale^2) entries (b too, when bias=True).

    ``scale`` ranges from tiny (near the origin, a strict saddle) to Kaiming-like
    (``sqrt(2/d)``); ``dtype`` defaults to JAX's default float. float16 and bfloat16 are
    supported here and by :func:`objective` (plain arithmetic); the closed forms of
    :mod:`nc_jax.theory` and anything using eigh/qr need float32 or float64.

    Raises:
      TypeError: ``scale`` not a real number, ``dtype`` not a float dtype.
      ValueError: ``scale`` negative or not finite.
    """
    _check_nonnegative_finite("scale", scale)
    dtype = jnp.result_type(float) if dtype is None else _check_float_dtype(dtype, "init_params", half_ok=True)
    K, d, N = problem.num_classes, problem.feature_dim, problem.num_samples
    kW, kH, kb = jax.random.split(key, 3)
    W = scale * jax.random.normal(kW, (K, d), dtype)
    H = scale * jax.random.normal(kH, (d, N), dtype)
    b = scale * jax.random.normal(kb, (K,), dtype) if problem.bias else None
    return UFMParams(W, H, b)


def orthonormal_complement_of_ones(num_classes: int, dtype=None) -> jax.Array:
    """K x (K-1) Helmert basis: orthonormal columns spanning the complement of 1_K.

    Column j (0-based) is (1, ..., 1, -(j+1), 0, ..., 0) / sqrt((j+1)(j+2)) with j+1 ones.
    """
    K = _check_int("num_classes", num_classes, 2)
    dtype = jnp.result_type(float) if dtype is None else dtype
    return jnp.asarray(_helmert_columns(K, K - 1), dtype)


def _helmert_columns(num_classes: int, num_columns: int) -> np.ndarray:
    """The first ``num_columns`` columns of the K x (K-1) Helmert basis (float64, host).

    Only these columns are allocated: O(K r) memory, not O(K^2).
    """
    K = num_classes
    B = np.zeros((K, num_columns))
    for j in range(num_columns):
        B[: j + 1, j] = 1.0
        B[j + 1, j] = -(j + 1)
        B[:, j] /= math.sqrt((j + 1) * (j + 2))
    return B


def simplex_etf(num_classes: int, dim: int, *, key: jax.Array | None = None, dtype=None) -> jax.Array:
    """A K-simplex ETF in R^d (Definition .1), as a d x K matrix of unit columns.

    ``sqrt(K/(K-1)) P (I - 11^T/K)`` with P (d x K): for d >= K, P^T P = I (the first
    K coordinates, or a random orthonormal frame when ``key`` is given); for d = K-1,
    P is chosen so that [P^T, 1/sqrt(K)] is orthogonal. Use its transpose as a classifier.

    Raises:
      ValueError: if d < K - 1 (no simplex ETF fits in R^d).
    """
    K = _check_int("num_classes", num_classes, 2)
    d = _check_int("dim", dim, 1)
    if d < K - 1:
        raise ValueError(f"dim must be >= num_classes - 1 = {K - 1} for a simplex ETF; got {d}")
    if dtype is None:
        dtype = jnp.result_type(float)
    elif key is not None:  # the random frame needs a QR factorization (LAPACK)
        dtype = _check_float_dtype(dtype, "simplex_etf with a key")
    centering = jnp.eye(K, dtype=dtype) - jnp.full((K, K), 1.0 / K, dtype)
    if d == K - 1:
        P = orthonormal_complement_of_ones(K, dtype).T  # (K-1) x K, P 1 = 0
    else:
        P = jnp.eye(d, K, dtype=dtype)
    if key is not None:
        Q, _ = jnp.linalg.qr(jax.random.normal(key, (d, d), dtype))
        P = Q @ P
    return math.sqrt(K / (K - 1)) * (P @ centering)


def analytic_hvp(params: UFMParams, problem: UFMProblem):
    """Exact Hessian-vector products of the (rescaled) MSE objective at ``params``.

    Written from eq. (24) of the paper (plus the bias and the eq. (4) weights): with the
    weighted residual R = Omega o (W H + b 1^T - M Y) / N computed once, a product with
    (dW, dH, db) is
        dZ = Omega o (dW H + W dH + db 1^T) / N,
        H_W = dZ H^T + R dH^T + lambda_W dW,
        H_H = W^T dZ + dW^T R + lambda_H dH,
        H_b = dZ 1 + lambda_b db,
    six matrix products (2 K d N flops each): twice the flops of one gradient, the
    residual and the forward product W H being paid once per point, not per product.

    Returns:
      A function ``v -> H v`` on UFMParams pytrees (same dtype as ``params``).

    Raises:
      ValueError: for ``loss="ce"`` (use ``nc_jax.hessian.hvp_operator``).
    """
    if problem.loss not in ("mse", "rescaled_mse"):
        raise ValueError(f"analytic_hvp is eq. (24), for loss in ('mse', 'rescaled_mse'); got {problem.loss!r}")
    check_params(params, problem)
    W, H = params.W, params.H
    dtype = W.dtype
    N = problem.num_samples
    Y = one_hot_targets(problem, dtype)
    if problem.loss == "rescaled_mse":
        alpha = jnp.asarray(problem.alpha, dtype)
        weight = 1.0 + (alpha - 1.0) * Y
        target = jnp.asarray(problem.M, dtype) * Y
    else:
        weight, target = None, Y
    Z = logits(params, problem)
    R = (Z - target) if weight is None else weight * (Z - target)
    R = R / N
    lw, lh = jnp.asarray(problem.lambda_W, dtype), jnp.asarray(problem.lambda_H, dtype)
    lb = jnp.asarray(problem.lambda_b, dtype)

    def matvec(v: UFMParams) -> UFMParams:
        # six products, no concatenation: fusing them would copy H (d x N) every call
        dW, dH = v.W, v.H
        dZ = dW @ H + W @ dH
        if problem.bias:
            dZ = dZ + v.b[:, None]
        dZ = (dZ if weight is None else weight * dZ) / N
        HW = dZ @ H.T + R @ dH.T + lw * dW
        HH = W.T @ dZ + dW.T @ R + lh * dH
        Hb = jnp.sum(dZ, axis=1) + lb * v.b if problem.bias else None
        return UFMParams(HW, HH, Hb)

    return matvec


class CollapsedHessian(NamedTuple):
    """The Hessian of the MSE objective at a collapsed point, split into invariant parts.

    At a point whose features are collapsed (H = Hbar E, every column equal to its class
    mean, as at every critical point with lambda_H > 0), the Hessian leaves two
    orthogonal subspaces invariant:

    * within-class directions (dW = 0, db = 0, dH with zero class sums; dimension
      d K (n-1)): there it is (W^T W / N + lambda_H I) acting on each column, with
      eigenvalues ``within_eigenvalues`` (each with multiplicity K (n-1));
    * class-mean directions (dW, dH = G E / sqrt(n), db), dimension 2 K d (+ K): there it
      is ``matvec`` on pytrees ``(dW, G, db)``, at O(K^2 d) cost per product.

    So lambda_min(full Hessian) = min(lambda_min(matvec), min(within_eigenvalues)) when
    n > 1, exactly, for any N: a Hessian of 10^8 parameters reduces to one of 4 10^6.
    """

    matvec: Any
    within_eigenvalues: jax.Array
    num_within: int


def collapsed_hessian(params: UFMParams, problem: UFMProblem) -> CollapsedHessian:
    """Invariant-subspace split of the vanilla-MSE Hessian at a collapsed point.

    ``params.H`` must be collapsed (class-major columns equal within each class); its
    class means are used. Vectors of ``matvec`` are ``UFMParams(dW, G, db)`` with G
    d x K (db None without bias).
    """
    if problem.loss != "mse":
        raise ValueError(f"collapsed_hessian is for loss='mse'; got {problem.loss!r}")
    check_params(params, problem)
    K, n, N = problem.num_classes, problem.n_per_class, problem.num_samples
    W = params.W
    dtype = _check_float_dtype(W.dtype, "collapsed_hessian")  # eigvalsh: LAPACK
    Hbar = metrics.class_means(params.H, labels(problem), num_classes=K)  # d x K
    lw, lh = jnp.asarray(problem.lambda_W, dtype), jnp.asarray(problem.lambda_H, dtype)
    lb = jnp.asarray(problem.lambda_b, dtype)
    eye = jnp.eye(K, dtype=dtype)
    Rbar = W @ Hbar - eye
    if problem.bias:
        Rbar = Rbar + params.b[:, None]
    Rbar = Rbar / N  # R = Rbar E
    root_n = math.sqrt(n)

    def matvec(v: UFMParams) -> UFMParams:
        dW, G = v.W, v.H
        D = dW @ Hbar + W @ G / root_n  # dZ = D E / N
        if problem.bias:
            D = D + v.b[:, None]
        HW = (n / N) * D @ Hbar.T + root_n * Rbar @ G.T + lw * dW
        HG = root_n * (W.T @ D / N + dW.T @ Rbar) + lh * G
        Hb = (n / N) * jnp.sum(D, axis=1) + lb * v.b if problem.bias else None
        return UFMParams(HW, HG, Hb)

    within = jnp.linalg.eigvalsh(W.T @ W) / N + lh
    return CollapsedHessian(matvec, within, K * (n - 1))
