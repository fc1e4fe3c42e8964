"""The deep unconstrained feature model, linear or ReLU: problem, objective, closed forms.

With K balanced classes of n samples (N = K n, class-major columns, one-hot targets Y,
K x N), free features H (d_1 x N), layers W_1 (d_2 x d_1), ..., W_{L-1} (d_L x d_{L-1})
and a classifier W_L (K x d_L), the objective is

    f = 1/(2N) ||W_L ... W_1 H - Y||_F^2 + sum_l lambda_W_l/2 ||W_l||^2 + lambda_H/2 ||H||^2

(Dang et al. 2023; Sukenik et al. 2023; Tirer & Bruna 2022 for L = 2). L = 1 is the
no-bias UFM of Theorem 3.2 (``UFMProblem(bias=False)``). With ``bias=True`` a classifier
bias b is added to the output (+ lambda_b/2 ||b||^2); every closed form below is for the
model without it.

Closed form (derived here; numbers checked in ``tests/test_deep_ufm.py``). Write
m = L + 1 for the number of factors (H counts), lambda_0 = lambda_H, and
lambda_bar = (lambda_0 lambda_1 ... lambda_L)^(1/m) for their geometric mean.

1. Balance. For a fixed product P = W_L ... W_1 H, the weighted AM-GM inequality gives
   sum_i lambda_i ||A_i||^2 >= m lambda_bar sum_j sigma_j(P)^(2/m) (the variational form of
   the Schatten-2/m quasi-norm), with equality at balanced factors: the j-th singular
   value of factor i is a_i = sqrt(lambda_bar / lambda_i) p_j^(1/m), all factors sharing
   their singular vectors along the chain.
2. Alignment. By von Neumann's trace inequality ||P - Y||^2 >= sum_j (sigma_j(P) -
   sigma_j(Y))^2, with equality when P shares Y's singular vectors. Y Y^T = n I_K: Y has
   K equal singular values s = sqrt(n) (left vectors e_k, right vectors the normalized
   class indicators v_k = 1_{class k} / sqrt(n)).
3. So f reduces to K scalar problems, at most r_max = min(d_1, ..., d_L, K) of them "on":

       phi(p) = (p - s)^2 / (2N) + (m/2) lambda_bar p^(2/m),   p >= 0,

   "off" (p = 0) costs phi_off = s^2/(2N) = 1/(2K). For p = u^m > 0, phi'(p) = 0 iff

       g(u) = u^(2m-2) - s u^(m-2) + N lambda_bar = 0.

   m = 2: u^2 = p = s - N lambda_bar (on iff positive): Theorem 3.1's threshold.
   m >= 3: g(0) = N lambda_bar > 0 and g has 0 or 2 positive roots; phi' < 0 between them,
   so the larger root is a local minimum of phi ("on", value phi_on) and the smaller one a
   local maximum.
4. Levels. With r directions on, f_r = r phi_on + (K - r) phi_off (no other constant: Y has
   exactly K nonzero singular values). The global minimum is f_{r_max} if phi_on < phi_off,
   else f_0 = 1/2 (everything off, the origin).
5. Spurious minima (m >= 3 only). A product of m >= 3 factors has no quadratic term at
   the zero of an "off" direction, so the Hessian there is the diagonal of the weight
   decays (at the origin: exactly diag(lambda_H, lambda_W_1, ..., lambda_W_L), smallest
   eigenvalue min_i lambda_i > 0). Hence every count r = 0, ..., r_max with an "on" branch
   is a local minimum (strict modulo the symmetries: the hidden-space rotations and, the
   K singular values of Y being equal, the rotations of Y's singular pairs), at f_r. For
   m = 2 the off direction has the Hessian block [[lambda_W, -s/N], [-s/N, lambda_H]],
   whose smallest eigenvalue (lambda_W + lambda_H)/2 - sqrt((lambda_W - lambda_H)^2/4 +
   s^2/N^2) is negative exactly when the "on" branch exists: a strict saddle (benign).

ReLU (``activation="relu"``; Sukenik et al. 2023, 2024; Tirer & Bruna 2022 for L = 2):
sigma = max(0, .) after every hidden layer, H_{l+1} = sigma(W_l H_l) for l < L, the output
W_L H_L and H itself are not rectified. No closed-form optimum is known; what is closed form
is the deep-neural-collapse (DNC) level:

6. DNC value. A DNC configuration has collapsed classes at every layer, orthogonal class
   means of equal norm at every rectified layer, and the classifier aligned with them. Given
   the rectified means beta_l Q_l (Q_l orthonormal frames), the least-norm W_l with
   sigma(W_l H_l) = H_{l+1} is the linear map between the frames (any negative entry of
   W_l H_l only adds norm), so on the DNC family the objective is the deep linear one with
   all K directions on at one common magnitude: f_DNC = K phi_on (the linear f_K).
   The first layer may instead hold a simplex ETF (rank K-1): with E its unit columns,
   H = a_0 sum_k E_k v_k^T and W_1 = a_1 sum_k e_k E_k^T give pre-activations
   beta (1 on class k, -1/(K-1) off), rectified to the same orthogonal frame, at the same
   cost (||H||^2 and ||W_1||^2 are those of the orthogonal point). ``dnc_point`` builds both;
   with L = 2 and the ETF first layer no pre-activation sits at ReLU's kink, so the point is
   a smooth critical point (tested). A point below f_DNC refutes DNC's optimality at that
   configuration, whatever its gradient: the comparison is of values.

The closed forms run on the host (numpy) and need concrete weight decays.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from nc_jax.ufm import _check_int, _check_positive_finite, _check_real, _type_name

__all__ = [
    "DeepUFMProblem",
    "DeepUFMParams",
    "objective",
    "init_params",
    "one_hot_targets",
    "ScalarBranch",
    "scalar_branch",
    "GlobalMinimum",
    "global_minimum",
    "LocalMinima",
    "local_minimum_values",
    "critical_point",
    "dnc_value",
    "dnc_point",
    "relu_kinks",
    "pre_activations",
    "DNCSearch",
    "search_below_dnc",
    "model",
]

ACTIVATIONS = ("linear", "relu")


@jax.tree_util.register_pytree_node_class
@dataclasses.dataclass(frozen=True)
class DeepUFMProblem:
    """A deep UFM instance: sizes (static) and weight decays (array leaves).

    Args:
      num_classes: K >= 2.
      n_per_class: n >= 1 (balanced classes).
      widths: (d_1, ..., d_L), L >= 1 positive ints: d_1 is the feature dimension, W_l is
        d_{l+1} x d_l and the classifier W_L is K x d_L.
      lambda_W: weight decay of the L matrices: one value (shared) or a tuple of L values.
        Stored as a tuple of L leaves.
      lambda_H: weight decay of the features.
      activation: ``"linear"`` or ``"relu"`` (max(0, .) after each of the L - 1 hidden
        layers; with L = 1 there is none and the two coincide).
      bias: a classifier bias b (K), added to the output (W_L ... H + b 1^T), with weight
        decay ``lambda_b`` >= 0. No closed form is derived with a bias: ``global_minimum``,
        ``dnc_value`` and their kin refuse it, the explorer reports levels.
      lambda_b: the bias's weight decay (finite, >= 0; only read with ``bias=True``).

    Weight decays must be finite and > 0: with a zero one the factors can be rescaled
    toward it and the infimum is in general not attained (as in the UFM, Theorem 3.1).

    Raises:
      TypeError: a value of the wrong type (naming the argument, its value, the types).
      ValueError: a value out of range (naming the argument, its value, the range).
    """

    num_classes: int
    n_per_class: int
    widths: tuple
    lambda_W: Any = 5e-4
    lambda_H: Any = 5e-4
    activation: str = "linear"
    bias: bool = False
    lambda_b: Any = 0.0

    def __post_init__(self):
        for name, minimum in (("num_classes", 2), ("n_per_class", 1)):
            object.__setattr__(self, name, _check_int(name, getattr(self, name), minimum))
        widths = self.widths
        if isinstance(widths, (int, np.integer)) and not isinstance(widths, bool):
            widths = (widths,)
        if not isinstance(widths, (tuple, list)) or len(widths) == 0:
            raise TypeError(f"widths must be a non-empty tuple of ints >= 1 (d_1, ..., d_L); got {self.widths!r}")
        object.__setattr__(self, "widths", tuple(_check_int(f"widths[{i}]", w, 1) for i, w in enumerate(widths)))
        L = len(self.widths)
        lw = self.lambda_W
        if isinstance(lw, (tuple, list)):
            if len(lw) != L:
                raise ValueError(f"lambda_W must be one value or a tuple of len(widths) = {L} values; "
                                 f"got {len(lw)} values {lw!r}")
            lw = tuple(lw)
        else:
            lw = (lw,) * L
        for i, v in enumerate(lw):
            _check_scalar_decay(f"lambda_W[{i}]" if isinstance(self.lambda_W, (tuple, list)) else "lambda_W", v)
        object.__setattr__(self, "lambda_W", lw)
        _check_scalar_decay("lambda_H", self.lambda_H)
        if not isinstance(self.activation, str):
            raise TypeError(f"activation must be one of {ACTIVATIONS} (a str); got {self.activation!r} "
                            f"of type {_type_name(self.activation)}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}; got {self.activation!r}")
        if not isinstance(self.bias, (bool, np.bool_)):
            raise TypeError(f"bias must be a bool; got {self.bias!r} of type {_type_name(self.bias)}")
        object.__setattr__(self, "bias", bool(self.bias))
        arr = _check_real("lambda_b", self.lambda_b)
        if arr is not None and arr.ndim != 0:
            raise ValueError(f"lambda_b must be a scalar; got shape {arr.shape}")
        from nc_jax.ufm import _check_nonnegative_finite

        _check_nonnegative_finite("lambda_b", self.lambda_b)

    _STATIC = ("num_classes", "n_per_class", "widths", "activation", "bias")

    def tree_flatten(self):
        return (tuple(self.lambda_W), self.lambda_H, self.lambda_b), tuple(getattr(self, f) for f in self._STATIC)

    @classmethod
    def tree_unflatten(cls, static, leaves):
        obj = object.__new__(cls)
        for name, value in zip(cls._STATIC, static):
            object.__setattr__(obj, name, value)
        lw, lh, lb = leaves
        object.__setattr__(obj, "lambda_W", tuple(lw))
        object.__setattr__(obj, "lambda_H", lh)
        object.__setattr__(obj, "lambda_b", lb)
        return obj

    @property
    def depth(self) -> int:
        """L, the number of weight matrices (the classifier included)."""
        return len(self.widths)

    @property
    def num_factors(self) -> int:
        """m = L + 1 (H counts)."""
        return len(self.widths) + 1

    @property
    def num_samples(self) -> int:
        return self.num_classes * self.n_per_class

    @property
    def max_rank(self) -> int:
        """r_max = min(d_1, ..., d_L, K): the most directions that can be on."""
        return min(*self.widths, self.num_classes)

    def replace(self, **changes) -> "DeepUFMProblem":
        return dataclasses.replace(self, **changes)


def _check_scalar_decay(name: str, value: Any) -> None:
    arr = _check_real(name, value)
    if arr is not None and arr.ndim != 0:
        raise ValueError(f"{name} must be a scalar; got shape {arr.shape}")
    _check_positive_finite(name, value)


class DeepUFMParams(NamedTuple):
    """Variables: H (d_1 x N, class-major columns), Ws = (W_1, ..., W_L) (W_L K x d_L) and,
    with ``bias=True``, the classifier bias b (K); None without."""

    H: jax.Array
    Ws: tuple
    b: jax.Array | None = None


def _shapes(problem: DeepUFMProblem) -> tuple[tuple, list]:
    dims = list(problem.widths) + [problem.num_classes]
    return (dims[0], problem.num_samples), [(dims[i + 1], dims[i]) for i in range(problem.depth)]


def _check_params(params: DeepUFMParams, problem: DeepUFMProblem) -> None:
    h_shape, w_shapes = _shapes(problem)
    if params.H.shape != h_shape:
        raise ValueError(f"params.H must have shape (d_1, N) = {h_shape}; got {params.H.shape}")
    if len(params.Ws) != problem.depth:
        raise ValueError(f"params.Ws must hold L = {problem.depth} matrices; got {len(params.Ws)}")
    for i, (W, shape) in enumerate(zip(params.Ws, w_shapes)):
        if W.shape != shape:
            raise ValueError(f"params.Ws[{i}] must have shape {shape}; got {W.shape}")
    if problem.bias and (params.b is None or params.b.shape != (problem.num_classes,)):
        raise ValueError(f"params.b must have shape (K,) = ({problem.num_classes},) with bias=True; got "
                         f"{None if params.b is None else params.b.shape}")
    if not problem.bias and params.b is not None:
        raise ValueError("params.b must be None with bias=False; got an array")


def one_hot_targets(problem: DeepUFMProblem, dtype=None) -> jax.Array:
    """Y (K x N), one-hot class-major columns."""
    dtype = jnp.result_type(float) if dtype is None else dtype
    labels = jnp.repeat(jnp.arange(problem.num_classes), problem.n_per_class)
    return (jnp.arange(problem.num_classes)[:, None] == labels[None, :]).astype(dtype)


def pre_activations(params: DeepUFMParams, problem: DeepUFMProblem) -> list:
    """The forward pass: [W_1 H_1, ..., W_L H_L] with H_1 = H and H_{l+1} = sigma(W_l H_l)
    (sigma = ReLU or the identity); the last is the output before the bias. The rectified
    layers' features are ``sigma`` of the first L - 1. jit/vmap-able."""
    Z, out = params.H, []
    for i, W in enumerate(params.Ws):
        Z = W @ Z
        out.append(Z)
        if problem.activation == "relu" and i < problem.depth - 1:
            Z = jax.nn.relu(Z)
    return out


def objective(params: DeepUFMParams, problem: DeepUFMProblem) -> jax.Array:
    """f(H, W_1, ..., W_L) (module docstring); pure, jit/vmap/grad-able, dtype of ``params``."""
    _check_params(params, problem)
    dtype = params.H.dtype
    Z = pre_activations(params, problem)[-1]
    Y = one_hot_targets(problem, dtype)
    if problem.bias:
        Z = Z + params.b[:, None]
    loss = 0.5 * jnp.sum((Z - Y) ** 2) / problem.num_samples
    reg = 0.5 * jnp.asarray(problem.lambda_H, dtype) * jnp.sum(params.H**2)
    for lam, W in zip(problem.lambda_W, params.Ws):
        reg = reg + 0.5 * jnp.asarray(lam, dtype) * jnp.sum(W**2)
    if problem.bias:
        reg = reg + 0.5 * jnp.asarray(problem.lambda_b, dtype) * jnp.sum(params.b**2)
    return loss + reg


def init_params(key: jax.Array, problem: DeepUFMProblem, scale: Any = 1.0, *, dtype=None) -> DeepUFMParams:
    """I.i.d. N(0, scale^2) entries in every factor (``scale`` may be traced)."""
    if not isinstance(scale, jax.core.Tracer):
        from nc_jax.ufm import _check_nonnegative_finite

        _check_nonnegative_finite("scale", scale)
    dtype = jnp.result_type(float) if dtype is None else dtype
    h_shape, w_shapes = _shapes(problem)
    keys = jax.random.split(key, problem.depth + 1)
    scale = jnp.asarray(scale, dtype)
    H = scale * jax.random.normal(keys[0], h_shape, dtype)
    Ws = tuple(scale * jax.random.normal(k, s, dtype) for k, s in zip(keys[1:], w_shapes))
    b = None
    if problem.bias:  # its own stream: the factors' draws are those of bias=False
        b = scale * jax.random.normal(jax.random.fold_in(key, problem.depth + 1), (problem.num_classes,), dtype)
    return DeepUFMParams(H, Ws, b)


# ---- closed forms (host, float64) -----------------------------------------------------------


def _decays(problem: DeepUFMProblem) -> np.ndarray:
    """(lambda_H, lambda_W_1, ..., lambda_W_L) as float64: factor i = 0 is H."""
    return np.asarray([float(problem.lambda_H), *(float(v) for v in problem.lambda_W)])


class ScalarBranch(NamedTuple):
    """The per-direction scalar problem phi (module docstring, step 3).

    Attributes:
      s: the common singular value sqrt(n) of Y.
      lambda_bar: geometric mean of the m weight decays.
      exists: whether phi has an "on" local minimum p > 0.
      p: the product at the "on" minimum (nan if none).
      value_on: phi(p) (nan if none); value_off: phi(0) = 1/(2K).
      magnitudes: the m balanced factor singular values a_i = sqrt(lambda_bar/lambda_i)
        p^(1/m) (i = 0 is H; nan if none).
    """

    s: float
    lambda_bar: float
    exists: bool
    p: float
    value_on: float
    value_off: float
    magnitudes: np.ndarray


def _phi(p: float, s: float, N: int, m: int, lam: float) -> float:
    return (p - s) ** 2 / (2 * N) + 0.5 * m * lam * p ** (2.0 / m)


def scalar_branch(problem: DeepUFMProblem) -> ScalarBranch:
    """The "on" local minimum of phi: the largest positive root of g(u), polished by Newton."""
    decays = _decays(problem)
    m, N = problem.num_factors, problem.num_samples
    s = math.sqrt(problem.n_per_class)
    lam = float(np.exp(np.mean(np.log(decays))))
    c = N * lam
    if m == 2:
        u = math.sqrt(s - c) if s > c else math.nan
    else:
        coeffs = np.zeros(2 * m - 1)
        coeffs[0], coeffs[m], coeffs[-1] = 1.0, -s, c  # u^(2m-2) - s u^(m-2) + c
        roots = np.roots(coeffs)
        real = roots[(np.abs(roots.imag) <= 1e-8 * max(1.0, s)) & (roots.real > 0)].real
        u = float(real.max()) if real.size else math.nan
        if np.isfinite(u):
            for _ in range(5):  # Newton on g: companion-matrix roots to full precision
                gu = u ** (2 * m - 2) - s * u ** (m - 2) + c
                dg = (2 * m - 2) * u ** (2 * m - 3) - s * (m - 2) * u ** (m - 3)
                if dg <= 0:
                    break
                u -= gu / dg
    exists = bool(np.isfinite(u) and u > 0)
    p = u**m if exists else math.nan
    value_on = _phi(p, s, N, m, lam) if exists else math.nan
    magnitudes = np.sqrt(lam / decays) * p ** (1.0 / m) if exists else np.full(m, math.nan)
    return ScalarBranch(s, lam, exists, p, value_on, s**2 / (2 * N), magnitudes)


def critical_point(problem: DeepUFMProblem, num_on: int, *, dtype=None) -> DeepUFMParams:
    """The critical point with directions 0..num_on-1 on (balanced, aligned with Y's SVD).

    Direction k uses unit k of every hidden space: H = a_0 sum_k e_k v_k^T,
    W_l = a_l sum_k e_k e_k^T, with v_k = 1_{class k}/sqrt(n). The product is
    p sum_k e_k v_k^T. Every other critical point at this level is a rotation of it.

    Raises:
      ValueError: num_on outside [0, r_max], or num_on > 0 without an "on" branch.
    """
    _require_linear(problem, "critical_point")
    r = _check_int("num_on", num_on, 0)
    if r > problem.max_rank:
        raise ValueError(f"num_on must be in [0, r_max = min(widths, K) = {problem.max_rank}]; got {num_on!r}")
    br = scalar_branch(problem)
    if r > 0 and not br.exists:
        raise ValueError(f"num_on must be 0: phi has no 'on' branch for these weight decays; got {num_on!r}")
    dtype = jnp.result_type(float) if dtype is None else dtype
    n = problem.n_per_class
    h_shape, w_shapes = _shapes(problem)
    a = br.magnitudes if r > 0 else np.zeros(problem.num_factors)
    H = np.zeros(h_shape)
    for k in range(r):
        H[k, k * n:(k + 1) * n] = a[0] / math.sqrt(n)
    Ws = []
    for i, shape in enumerate(w_shapes):
        W = np.zeros(shape)
        W[np.arange(r), np.arange(r)] = a[i + 1]
        Ws.append(jnp.asarray(W, dtype))
    return DeepUFMParams(jnp.asarray(H, dtype), tuple(Ws))


class GlobalMinimum(NamedTuple):
    """The closed-form global minimum (module docstring, steps 1-4).

    Attributes:
      value: f*.
      on: bool array (K,): which singular directions of Y are on (a representative: with
        K equal singular values any num_on of them may be chosen).
      num_on: r_max if phi_on < phi_off, else 0.
      branch: the ScalarBranch.
      params: one global minimizer (``critical_point(problem, num_on)``).
    """

    value: float
    on: np.ndarray
    num_on: int
    branch: ScalarBranch
    params: DeepUFMParams


def _level(problem: DeepUFMProblem, br: ScalarBranch, r: int) -> float:
    return (r * br.value_on if r else 0.0) + (problem.num_classes - r) * br.value_off


def global_minimum(problem: DeepUFMProblem, *, dtype=None) -> GlobalMinimum:
    """f* = min(f_0, f_{r_max}), f_r = r phi_on + (K - r) phi_off (needs concrete decays)."""
    _require_linear(problem, "global_minimum")
    br = scalar_branch(problem)
    r = problem.max_rank if br.exists and br.value_on < br.value_off else 0
    on = np.arange(problem.num_classes) < r
    return GlobalMinimum(_level(problem, br, r), on, r, br, critical_point(problem, r, dtype=dtype))


class LocalMinima(NamedTuple):
    """Local-minimum levels, sorted ascending (one per number of "on" directions).

    Attributes:
      values: f_r, ascending.
      num_on: r per level.
      patterns: bool (levels, K): a representative pattern per level (first r on).
      multiplicity: C(K, r) patterns per level (all equal, Y's singular values being equal).
    """

    values: np.ndarray
    num_on: np.ndarray
    patterns: np.ndarray
    multiplicity: np.ndarray


def local_minimum_values(problem: DeepUFMProblem) -> LocalMinima:
    """Every local-minimum level: r = 0..r_max for m >= 3 factors; the global one for m = 2."""
    _require_linear(problem, "local_minimum_values")
    br = scalar_branch(problem)
    if problem.num_factors == 2 or not br.exists:
        counts = [global_minimum(problem).num_on]
    else:
        counts = list(range(problem.max_rank + 1))
    values = np.asarray([_level(problem, br, r) for r in counts])
    order = np.argsort(values, kind="stable")
    counts = np.asarray(counts)[order]
    K = problem.num_classes
    patterns = np.arange(K)[None, :] < counts[:, None]
    mult = np.asarray([math.comb(K, int(r)) for r in counts])
    return LocalMinima(values[order], counts, patterns, mult)


def _require_no_bias(problem: DeepUFMProblem, name: str) -> None:
    if problem.bias:
        raise ValueError(f"{name} needs bias=False: no closed form is derived with a bias (explore the "
                         f"problem for its levels); got bias=True")


def _require_linear(problem: DeepUFMProblem, name: str) -> None:
    _require_no_bias(problem, name)
    if problem.activation != "linear":
        raise ValueError(f"{name} needs activation='linear' (the deep linear closed form); got "
                         f"activation={problem.activation!r}: with ReLU only the DNC level is closed form "
                         f"(dnc_value, dnc_point)")


def _check_dnc(problem: DeepUFMProblem, first_layer: str = "orthogonal") -> ScalarBranch:
    if not isinstance(problem, DeepUFMProblem):
        raise TypeError(f"problem must be a DeepUFMProblem; got {type(problem).__name__}")
    _require_no_bias(problem, "the DNC level")
    if first_layer not in ("orthogonal", "simplex"):
        raise ValueError(f"first_layer must be 'orthogonal' or 'simplex'; got {first_layer!r}")
    K, (d_1, *rest) = problem.num_classes, problem.widths
    need = K - 1 if first_layer == "simplex" else K
    if d_1 < need or any(d < K for d in rest):
        raise ValueError(f"widths must be >= K = {K} (d_1 >= {need} with first_layer={first_layer!r}) for a DNC "
                         f"configuration; got widths={problem.widths}")
    br = scalar_branch(problem)
    if not br.exists:
        raise ValueError("the weight decays are too large for a DNC configuration: phi has no 'on' branch "
                         f"(N lambda_bar = {problem.num_samples * br.lambda_bar:.6g}); the origin is the only level")
    return br


def dnc_value(problem: DeepUFMProblem) -> float:
    """f_DNC = K phi_on: the least value over deep-neural-collapse configurations (item 6).

    For ``activation="linear"`` this is the level f_K with every direction on; for ReLU it is
    the level DNC attains, which a lower point refutes as the optimum.

    Raises:
      ValueError: a width below K (d_1 below K - 1 for ReLU with L >= 2), or no "on" branch.
    """
    simplex_allowed = problem.activation == "relu" and problem.depth >= 2  # d_1 = K - 1 suffices
    return problem.num_classes * _check_dnc(problem, "simplex" if simplex_allowed else "orthogonal").value_on


def dnc_point(problem: DeepUFMProblem, *, first_layer: str = "orthogonal", dtype=None) -> DeepUFMParams:
    """A DNC configuration at f_DNC (item 6), for the linear and the ReLU model alike.

    Every representation is non-negative from the first rectified layer on, so ReLU passes
    it unchanged. ``first_layer="orthogonal"``: every layer's class means are an orthogonal
    frame (the linear minimizer ``critical_point(problem, K)``). ``"simplex"``: H's class
    means form a simplex ETF (rank K - 1; needs d_1 >= K - 1), W_1 rectifies it to an
    orthogonal frame (ReLU only; a linear W_1 cannot raise the rank).

    Raises:
      ValueError: a width below K (d_1 below K - 1 for "simplex"), no "on" branch, an unknown
        ``first_layer``, or "simplex" with the linear activation.
    """
    br = _check_dnc(problem, first_layer)
    dtype = jnp.result_type(float) if dtype is None else dtype
    K, n = problem.num_classes, problem.n_per_class
    # the layers after the first are the linear minimizer's (a d_1 >= K twin when d_1 = K - 1)
    twin = problem.replace(activation="linear", widths=(max(problem.widths[0], K), *problem.widths[1:]))
    linear = critical_point(twin, K, dtype=dtype)
    if first_layer == "orthogonal":
        return linear
    if problem.activation != "relu" or problem.depth < 2:
        raise ValueError("first_layer='simplex' needs activation='relu' and at least two layers (a rectified "
                         f"layer to raise the rank); got activation={problem.activation!r}, L={problem.depth}")
    from nc_jax.ufm import simplex_etf

    a = br.magnitudes
    E = np.asarray(simplex_etf(K, problem.widths[0], dtype=dtype))  # d_1 x K, unit columns
    H = np.repeat(a[0] / math.sqrt(n) * E, n, axis=1)  # class-major columns
    W_1 = np.zeros((problem.widths[1], problem.widths[0]))
    W_1[:K] = a[1] * E.T
    return DeepUFMParams(jnp.asarray(H, dtype), (jnp.asarray(W_1, dtype), *linear.Ws[1:]))


def relu_kinks(params: DeepUFMParams, problem: DeepUFMProblem, *, rtol: float = 1e-8) -> dict:
    """``{"kinks": n}``: pre-activations of the rectified layers within ``rtol`` (relative to
    the layer's largest) of ReLU's kink, on units whose weight row is nonzero (a zero row is
    an unused unit: smooth). jit/vmap-able; 0 for the linear model."""
    count = jnp.zeros((), jnp.int32)
    if problem.activation != "relu":
        return {"kinks": count}
    for W, Z in zip(params.Ws[:-1], pre_activations(params, problem)[:-1]):
        rows = jnp.linalg.norm(W, axis=1)
        used = rows > rtol * jnp.max(rows)
        count = count + jnp.sum((jnp.abs(Z) <= rtol * jnp.max(jnp.abs(Z))) & used[:, None]).astype(jnp.int32)
    return {"kinks": count}


class DNCSearch(NamedTuple):
    """What :func:`search_below_dnc` found.

    Attributes:
      f_dnc: the DNC level (:func:`dnc_value`).
      values: the polished value of every run whose descent stayed finite (run order).
      best_value, best_params, best_grad_norm: the lowest of them (gradient norm where L-BFGS
        stopped: at a kink it need not be small).
      below: best_value < f_dnc (1 - margin): DNC is not optimal for this problem (the point
        is the proof).
      reached: best_value <= f_dnc (1 + margin): the search got to the DNC level; only then is
        "none below" evidence for DNC.
      num_finite: runs whose descent stayed finite.
    """

    f_dnc: float
    values: np.ndarray
    best_value: float
    best_params: DeepUFMParams | None
    best_grad_norm: float
    below: bool
    reached: bool
    num_finite: int


def search_below_dnc(problem: DeepUFMProblem, *, key: jax.Array, num_inits: int = 24, scales=(0.5, 1.0, 1.5),
                     num_steps: int = 3000, learning_rate: float = 0.05, margin: float = 1e-6,
                     polish_iters: int = 5000) -> DNCSearch:
    """Search for a point below the DNC level: the explorer's vmapped GD from ``num_inits``
    random inits (``landscape.descend``), every finite endpoint polished by L-BFGS (scipy,
    on the host, in the dtype of the inits), the lowest compared with f_DNC.

    A comparison of values, so it is sound at ReLU's kinks, where first-order methods stop
    short of stationarity. float64 is needed for margins near 1e-6 (enable x64 at the entry
    point).

    Raises:
      ValueError: a problem without a DNC configuration (:func:`dnc_value`), or a margin
        outside (0, 1).
    """
    import scipy.optimize
    from jax.flatten_util import ravel_pytree

    from nc_jax import landscape

    if not (isinstance(margin, (int, float)) and 0 < margin < 1):
        raise ValueError(f"margin must be a number in (0, 1); got {margin!r}")
    f_dnc = dnc_value(problem)
    ends = landscape.descend(model(problem), problem, key=key, num_inits=num_inits, scales=scales,
                             num_steps=num_steps, learning_rate=learning_rate)
    finite = np.flatnonzero(np.isfinite(np.asarray(ends.value)))
    first = jax.tree.map(lambda x: x[0], ends.params)
    flat0, unravel = ravel_pytree(first)
    fg = jax.jit(jax.value_and_grad(lambda z: objective(unravel(z), problem)))

    def fun(z):
        v, g = fg(jnp.asarray(z, flat0.dtype))
        return float(v), np.asarray(g, np.float64)

    values, points, grads = [], [], []
    for i in finite:
        z0 = np.asarray(ravel_pytree(jax.tree.map(lambda x: x[i], ends.params))[0], np.float64)
        out = scipy.optimize.minimize(fun, z0, jac=True, method="L-BFGS-B",
                                      options=dict(maxiter=polish_iters, gtol=1e-12, ftol=1e-15))
        values.append(float(out.fun))
        points.append(out.x)
        grads.append(float(np.linalg.norm(out.jac)))
    values = np.asarray(values)
    if not values.size:
        return DNCSearch(f_dnc, values, math.nan, None, math.nan, False, False, 0)
    b = int(np.argmin(values))
    best = unravel(jnp.asarray(points[b], flat0.dtype))
    return DNCSearch(f_dnc, values, float(values[b]), best, grads[b], bool(values[b] < f_dnc * (1 - margin)),
                     bool(values[b] <= f_dnc * (1 + margin)), int(finite.size))


def _model_global_value(problem):
    return global_minimum(problem).value


def _model_init(key, scale, problem):
    return init_params(key, problem, scale)


def model(problem: DeepUFMProblem | None = None):
    """A ``landscape.Model`` of the deep UFM: linear with the closed-form optimum, ReLU without.

    ReLU, and any model with a bias, has no known optimum (``global_value`` None): the
    explorer reports levels. ReLU's
    certificates use JAX's derivatives (ReLU'(0) = 0, ReLU'' = 0), which are those of the
    objective only where no pre-activation sits at the kink: the ReLU model's ``measure``
    reports ``kinks`` per endpoint (pre-activations within 1e-8 of 0, relative to the
    layer's largest, on units whose weight row is nonzero), and a certificate at a point
    with kinks > 0 says nothing about the nonsmooth objective there.

    The Model is built once and cached (the explorer's compiled programs are keyed on it);
    ``problem`` is only checked, the model takes it as its argument:
    ``landscape.explore(model(), problem, key=...)``.
    """
    if problem is not None and not isinstance(problem, DeepUFMProblem):
        raise TypeError(f"problem must be a DeepUFMProblem; got {type(problem).__name__}")
    if problem is None:
        return _cached_model("linear")
    return _cached_model(problem.activation, problem.bias)


_MODELS = {}


def _cached_model(activation: str = "linear", bias: bool = False):
    key = (activation, bias)
    if key not in _MODELS:
        from nc_jax import landscape  # lazy: landscape must not import this module

        name = f"deep {activation} UFM" + (" with bias" if bias else "")
        closed_form = activation == "linear" and not bias
        _MODELS[key] = landscape.Model(objective, _model_init,
                                       global_value=_model_global_value if closed_form else None,
                                       measure=None if activation == "linear" else relu_kinks,
                                       scales=(0.1, 1.0), name=name)
    return _MODELS[key]
