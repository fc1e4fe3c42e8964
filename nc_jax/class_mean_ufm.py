"""The UFM restricted to collapsed features, with class sizes as (real) weights: any loss,
with or without bias, imbalanced classes, one compiled program for every size vector.

Why it is exact. With lambda_H > 0 every critical point of the UFM has the features of a
class equal: for a fixed (W, b), sample i's feature minimizes l(W h + b, y_i)/N +
lambda_H/2 ||h||^2, strictly convex in h for every loss of :data:`nc_jax.losses.LOSSES`
(each is convex in the logits). So the critical points are collapsed, H = Hbar E^T (E the
N x K class indicator), and the objective there is

    F(W, G, b) = sum_k (n_k / N) l(W g_k / sqrt(n_k) + b, e_k)
                 + lambda_W/2 ||W||^2 + lambda_H/2 ||G||^2 + lambda_b/2 ||b||^2,

with g_k = sqrt(n_k) hbar_k (the theory's G = Hbar D^(1/2); it keeps gradient descent well
conditioned for any n_k). The full Hessian at a collapsed point is block diagonal in
(class-mean directions) + (within-class directions, columns with zero class sums): each
cross term is a per-class quantity times a zero class sum. On the within-class block it is
W^T grad^2 l W / N + lambda_H I per sample, positive definite. So the inertia of the full
Hessian is that of F's Hessian plus d (N - K) positive eigenvalues (Sylvester: the
class-mean directions are an invertible linear image of (dW, dG, db)), and a certified
strict saddle or second-order point of F is one of the full UFM. Checked against the full
UFM with dense Hessians in tests/test_followups_models.py.

The sizes are a pytree leaf (real weights n_k > 0), so a sweep over imbalance ratios R
reuses one compiled exploration; with integer sizes :func:`lift` gives the full UFM point.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nc_jax import landscape, losses, ufm
from nc_jax.ufm import UFMParams, UFMProblem

__all__ = ["ClassMeanUFM", "objective", "init", "lift", "full_problem", "geometry", "mse_no_bias_optimum",
           "model", "MODELS", "merge_last_two", "merged_critical_point", "merge_escape_direction",
           "merge_escape_curvature"]


@jax.tree_util.register_pytree_node_class
@dataclasses.dataclass(frozen=True)
class ClassMeanUFM:
    """Sizes (leaf, K positive reals), d (static), decays and loss settings."""

    class_sizes: Any
    feature_dim: int
    lambda_W: Any = 5e-4
    lambda_H: Any = 5e-4
    lambda_b: Any = 5e-4
    bias: bool = True
    loss: str = "mse"
    label_smoothing: Any = 0.1
    focal_gamma: Any = 2.0

    _LEAVES = ("class_sizes", "lambda_W", "lambda_H", "lambda_b", "label_smoothing", "focal_gamma")
    _STATIC = ("feature_dim", "bias", "loss")

    def __post_init__(self):
        losses.check_loss(self.loss)
        if self.loss == "rescaled_mse":
            raise ValueError("ClassMeanUFM supports mse, ce, label_smoothing and focal")

    @property
    def num_classes(self) -> int:
        return int(np.shape(self.class_sizes)[0])

    def tree_flatten(self):
        return tuple(getattr(self, f) for f in self._LEAVES), tuple(getattr(self, f) for f in self._STATIC)

    @classmethod
    def tree_unflatten(cls, static, leaves):
        obj = object.__new__(cls)
        for name, value in zip(cls._STATIC, static):
            object.__setattr__(obj, name, value)
        for name, value in zip(cls._LEAVES, leaves):
            object.__setattr__(obj, name, value)
        return obj

    def replace(self, **changes) -> "ClassMeanUFM":
        return dataclasses.replace(self, **changes)


def _per_class_loss(Z, problem: ClassMeanUFM):
    """l(z_k, e_k) for each column k of the K x K logits."""
    K = Z.shape[0]
    eye = jnp.eye(K, dtype=Z.dtype)

    def one(z, y):
        return losses.data_loss(problem.loss, z[:, None], y[:, None], smoothing=problem.label_smoothing,
                                gamma=problem.focal_gamma, class_axis=0)

    return jax.vmap(one, in_axes=(1, 1))(Z, eye)


def objective(params: UFMParams, problem: ClassMeanUFM) -> jax.Array:
    """F(W, G, b) of the module docstring (params.H is G, d x K)."""
    W, G, b = params
    dtype = W.dtype
    n = jnp.asarray(problem.class_sizes, dtype)
    Z = W @ (G / jnp.sqrt(n)[None, :])
    if problem.bias:
        Z = Z + b[:, None]
    data = jnp.sum(n * _per_class_loss(Z, problem)) / jnp.sum(n)
    reg = 0.5 * jnp.asarray(problem.lambda_W, dtype) * jnp.sum(W**2) \
        + 0.5 * jnp.asarray(problem.lambda_H, dtype) * jnp.sum(G**2)
    if problem.bias:
        reg = reg + 0.5 * jnp.asarray(problem.lambda_b, dtype) * jnp.sum(b**2)
    return data + reg


def init(key, scale, problem: ClassMeanUFM) -> UFMParams:
    dtype = jnp.result_type(scale)
    K, d = problem.num_classes, problem.feature_dim
    kW, kG, kb = jax.random.split(key, 3)
    W = scale * jax.random.normal(kW, (K, d), dtype)
    G = scale * jax.random.normal(kG, (d, K), dtype)
    b = scale * jax.random.normal(kb, (K,), dtype) if problem.bias else None
    return UFMParams(W, G, b)


def full_problem(problem: ClassMeanUFM) -> UFMProblem:
    """The full UFMProblem of integer ``class_sizes``."""
    sizes = tuple(int(round(float(s))) for s in np.asarray(problem.class_sizes))
    if not np.allclose(sizes, np.asarray(problem.class_sizes)):
        raise ValueError(f"full_problem needs integer class sizes; got {problem.class_sizes}")
    return UFMProblem(len(sizes), sizes, problem.feature_dim, problem.lambda_W, problem.lambda_H, problem.lambda_b,
                      bias=problem.bias, loss=problem.loss, label_smoothing=problem.label_smoothing,
                      focal_gamma=problem.focal_gamma)


def lift(params: UFMParams, problem: ClassMeanUFM) -> UFMParams:
    """The full UFM point (integer sizes): every column of class k is g_k / sqrt(n_k)."""
    full = full_problem(problem)
    n = jnp.asarray(full.class_sizes, params.W.dtype)
    return UFMParams(params.W, ufm.repeat_class_columns(params.H / jnp.sqrt(n)[None, :], full), params.b)


def _cosines(X):
    """Cosine matrix of the rows of X (0 where a row vanishes)."""
    norms = jnp.linalg.norm(X, axis=1)
    safe = jnp.where(norms > 0, norms, 1.0)
    U = X / safe[:, None]
    return U @ U.T


def geometry(params: UFMParams, problem: ClassMeanUFM) -> dict:
    """Norms and angles at a point: classifier rows, class means (raw and centred by their
    plain average), and the minority-collapse measures of the last two classes."""
    W, G, b = params
    n = jnp.asarray(problem.class_sizes, W.dtype)
    means = (G / jnp.sqrt(n)[None, :]).T  # K x d, row k = hbar_k
    centred = means - jnp.mean(means, axis=0, keepdims=True)
    out = {
        "w_norm": jnp.linalg.norm(W, axis=1),
        "h_norm": jnp.linalg.norm(means, axis=1),
        "w_cos": _cosines(W),
        "h_cos": _cosines(means),
        "h_centred_cos": _cosines(centred),
        "w_diff_last_two": jnp.linalg.norm(W[-1] - W[-2]),
        "w_diff_first_two": jnp.linalg.norm(W[0] - W[1]),
        "h_diff_last_two": jnp.linalg.norm(means[-1] - means[-2]),
        "balance_gap": problem.lambda_W * jnp.sum(W**2) - problem.lambda_H * jnp.sum(G**2),
    }
    if problem.bias:
        out["b"] = b
    return out


def mse_no_bias_optimum(problem: ClassMeanUFM) -> float:
    """f* of the MSE UFM without bias for real sizes (theory/_imbalanced.py's formula):
    z_k = [sqrt(n_k) - N sqrt(lambda_W lambda_H)]_+ on the d largest classes."""
    sizes = np.asarray(problem.class_sizes, float)
    N = sizes.sum()
    s = float(np.sqrt(float(problem.lambda_W) * float(problem.lambda_H)))
    kept = np.zeros(sizes.size, bool)
    kept[np.argsort(-sizes, kind="stable")[: min(problem.feature_dim, sizes.size)]] = True
    alive = kept & (np.sqrt(sizes) > N * s)
    return float(np.sum(np.where(alive, s * np.sqrt(sizes) - 0.5 * N * s * s, sizes / (2 * N))))


def _optimum(problem: ClassMeanUFM):
    return mse_no_bias_optimum(problem) if (problem.loss == "mse" and not problem.bias) else None


def _scales(problem: ClassMeanUFM):
    return (1e-3, 0.1, float(np.sqrt(2.0 / problem.feature_dim)), 1.0)


def _make_model(known: bool) -> landscape.Model:
    return landscape.Model(objective=objective, init=init, global_value=_optimum if known else None,
                           measure=geometry, scales=_scales, name="class-mean-ufm" + ("-mse-no-bias" if known else ""))


# built once (the explorer's compiled programs are keyed on the Model object)
MODELS = {True: _make_model(True), False: _make_model(False)}


def model(problem: ClassMeanUFM) -> landscape.Model:
    """The explorer Model (with the closed-form optimum for MSE without bias)."""
    return MODELS[problem.loss == "mse" and not problem.bias]


# ----------------------------------------------------------------------------- merged minority classes


def merge_last_two(x: UFMParams) -> UFMParams:
    """(W, G, b) with K - 1 classes -> K classes whose last two rows / columns / entries coincide."""
    W, G, b = x
    return UFMParams(jnp.concatenate([W, W[-1:]], axis=0), jnp.concatenate([G, G[:, -1:]], axis=1),
                     None if b is None else jnp.concatenate([b, b[-1:]]))


def _merged_objective(x: UFMParams, problem: ClassMeanUFM):
    return objective(merge_last_two(x), problem)


@jax.jit
def _merged_newton(x0: UFMParams, problem: ClassMeanUFM):
    from nc_jax import solvers

    res = solvers.trust_region_newton(_merged_objective, x0, problem, grad_tol=1e-12, max_iters=500)
    return merge_last_two(res.params), res.grad_norm


def merged_critical_point(problem: ClassMeanUFM, key) -> tuple[UFMParams, float]:
    """A critical point with the last two classes merged (w_{K-1} = w_K, g_{K-1} = g_K,
    b_{K-1} = b_K): Newton in that subspace. Critical for the full F when the last two sizes
    are equal (the swap of the two classes is then a symmetry, whose fixed subspace holds
    the gradient: symmetric criticality). Returns (point, gradient norm in the subspace)."""
    K, d = problem.num_classes, problem.feature_dim
    kW, kG, kb = jax.random.split(key, 3)
    dtype = jnp.result_type(float)
    x0 = UFMParams(jax.random.normal(kW, (K - 1, d), dtype), jax.random.normal(kG, (d, K - 1), dtype),
                   jax.random.normal(kb, (K - 1,), dtype) if problem.bias else None)
    x, g = _merged_newton(x0, problem)
    return x, float(g)


def merge_escape_direction(x: UFMParams, problem: ClassMeanUFM, a: float, c: float) -> UFMParams:
    """(a dW, c dG, 0) with dW = (e_{K-1} - e_K) u^T / sqrt 2, dG = u (e_{K-1} - e_K)^T / sqrt 2 and
    u a unit vector orthogonal to the rows of W and the columns of G (exists when their span
    is not all of R^d). Along it the second derivative of F at a merged critical point is
    lambda_W a^2 + lambda_H c^2 - 2 a c sqrt(n_min) / N for MSE (with or without bias) and CE
    (the data term is the gradient difference along e_{K-1} - e_K, exactly -2 at merged
    logits), so its minimum over a^2 + c^2 = 1 is :func:`merge_escape_curvature`."""
    W, G, b = x
    K, d = problem.num_classes, problem.feature_dim
    basis = np.concatenate([np.asarray(W), np.asarray(G).T], axis=0)
    _, s, vt = np.linalg.svd(basis, full_matrices=True)
    rank = int(np.sum(s > 1e-10 * max(1.0, s.max())))
    if rank >= d:
        raise ValueError("rows of W and columns of G span R^d: no escape direction of this form")
    u = jnp.asarray(vt[rank], W.dtype)
    e = jnp.zeros((K,), W.dtype).at[K - 2].set(1.0).at[K - 1].set(-1.0) / jnp.sqrt(2.0)
    return UFMParams(a * jnp.outer(e, u), c * jnp.outer(u, e), None if b is None else jnp.zeros_like(b))


def merge_escape_curvature(problem: ClassMeanUFM) -> float:
    """(lambda_W + lambda_H)/2 - sqrt(((lambda_W - lambda_H)/2)^2 + n_min / N^2): negative iff
    n_min > N^2 lambda_W lambda_H (the merged point is then a strict saddle)."""
    sizes = np.asarray(problem.class_sizes, float)
    lw, lh, N = float(problem.lambda_W), float(problem.lambda_H), sizes.sum()
    return 0.5 * (lw + lh) - float(np.sqrt(0.25 * (lw - lh) ** 2 + sizes[-1] / N**2))
