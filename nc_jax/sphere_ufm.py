"""The UFM with normalized features and classifier (no weight decay): cross-entropy at
temperature tau with every ||h_i|| = 1 and every ||w_k|| = 1, no bias.

    min  1/N sum_i CE(tau W h_i, y_i)   subject to ||w_k|| = ||h_i|| = 1,

the model of Yaras et al. (NeurIPS 2022, "Neural collapse with normalized features: a
geometric analysis over the Riemannian manifold"), who prove, when the feature dimension
is large enough for a simplex ETF (their exact assumptions are in the paper; we test
d = K - 1 and d = K), that every Riemannian critical point is a global minimizer (simplex
ETF, classifier aligned with the class means) or a strict saddle.

Parametrization for the explorer (unconstrained): w_k = v_k / ||v_k||, h_i = u_i / ||u_i||
plus the penalty mu/4 sum (||v_k||^2 - 1)^2 + mu/4 sum (||u_i||^2 - 1)^2. Exact: the loss
part g is 0-homogeneous in each v_k and u_i, so its gradient is tangent (orthogonal to the
vector) and the penalty's is radial; both vanish at a critical point, so critical points
are the Riemannian critical points with unit vectors. There ``hess g . u = -grad g = 0``
(radial directions are null and uncoupled), the penalty adds 2 mu on each radial direction
and nothing on the tangent ones, and the tangent block of ``hess g`` is the Riemannian
Hessian (normalization is a second-order retraction). So the inertia of the penalized
objective is the Riemannian inertia plus N + K positive eigenvalues: certificates carry over.

Global value for d >= K - 1 (simplex ETF, logits tau on the class and -tau/(K-1) elsewhere):
f* = log(1 + (K - 1) exp(-tau K / (K - 1))). For d < K - 1 no ETF fits and no closed form
is known: the explorer reports levels.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from nc_jax import landscape, losses

__all__ = ["SphereUFM", "SphereParams", "objective", "init", "etf_value", "model", "MODELS", "normalized"]


@jax.tree_util.register_pytree_node_class
@dataclasses.dataclass(frozen=True)
class SphereUFM:
    num_classes: int
    n_per_class: int
    feature_dim: int
    tau: Any = 5.0
    penalty: Any = 1.0

    @property
    def num_samples(self) -> int:
        return self.num_classes * self.n_per_class

    def tree_flatten(self):
        return (self.tau, self.penalty), (self.num_classes, self.n_per_class, self.feature_dim)

    @classmethod
    def tree_unflatten(cls, static, leaves):
        obj = object.__new__(cls)
        for name, value in zip(("num_classes", "n_per_class", "feature_dim"), static):
            object.__setattr__(obj, name, value)
        for name, value in zip(("tau", "penalty"), leaves):
            object.__setattr__(obj, name, value)
        return obj


class SphereParams(NamedTuple):
    V: jax.Array  # K x d (classifier rows before normalization)
    U: jax.Array  # d x N (features before normalization), class-major columns


def normalized(params: SphereParams):
    """(W, H): unit rows and unit columns."""
    V, U = params
    return V / jnp.linalg.norm(V, axis=1, keepdims=True), U / jnp.linalg.norm(U, axis=0, keepdims=True)


def objective(params: SphereParams, problem: SphereUFM) -> jax.Array:
    W, H = normalized(params)
    dtype = W.dtype
    K = problem.num_classes
    Y = (jnp.arange(K)[:, None] == jnp.repeat(jnp.arange(K), problem.n_per_class)[None, :]).astype(dtype)
    data = losses.cross_entropy(jnp.asarray(problem.tau, dtype) * (W @ H), Y, class_axis=0)
    V, U = params
    mu = jnp.asarray(problem.penalty, dtype)
    pen = 0.25 * mu * (jnp.sum((jnp.sum(V**2, axis=1) - 1.0) ** 2) + jnp.sum((jnp.sum(U**2, axis=0) - 1.0) ** 2))
    return data + pen


def init(key, scale, problem: SphereUFM) -> SphereParams:
    """Random unit vectors (``scale`` multiplies them; the explorer's default is 1)."""
    dtype = jnp.result_type(scale)
    kV, kU = jax.random.split(key)
    V = jax.random.normal(kV, (problem.num_classes, problem.feature_dim), dtype)
    U = jax.random.normal(kU, (problem.feature_dim, problem.num_samples), dtype)
    V = V / jnp.linalg.norm(V, axis=1, keepdims=True)
    U = U / jnp.linalg.norm(U, axis=0, keepdims=True)
    return SphereParams(scale * V, scale * U)


def etf_value(problem: SphereUFM) -> float:
    """f* = log(1 + (K-1) exp(-tau K/(K-1))) (d >= K - 1)."""
    K, tau = problem.num_classes, float(problem.tau)
    return math.log1p((K - 1) * math.exp(-tau * K / (K - 1)))


def _optimum(problem: SphereUFM):
    return etf_value(problem) if problem.feature_dim >= problem.num_classes - 1 else None


def geometry(params: SphereParams, problem: SphereUFM) -> dict:
    """Class-mean cosines, classifier cosines, and the within-class spread (NC1-like)."""
    W, H = normalized(params)
    K, n = problem.num_classes, problem.n_per_class
    means = H.reshape(H.shape[0], K, n).mean(axis=2)  # d x K
    spread = jnp.max(jnp.linalg.norm(H.reshape(H.shape[0], K, n) - means[:, :, None], axis=0))
    mn = means / jnp.linalg.norm(means, axis=0, keepdims=True)
    return {"w_cos": W @ W.T, "h_cos": mn.T @ mn, "w_h_cos": jnp.sum(W * mn.T, axis=1), "within_spread": spread}


MODELS = {known: landscape.Model(objective=objective, init=init, global_value=_optimum if known else None,
                                 measure=geometry, scales=(1.0,), name="sphere-ufm" + ("-etf" if known else ""))
          for known in (True, False)}


def model(problem: SphereUFM) -> landscape.Model:
    return MODELS[problem.feature_dim >= problem.num_classes - 1]
