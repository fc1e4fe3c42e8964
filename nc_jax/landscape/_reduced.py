"""Variable projection: the UFM objective with the features H eliminated in closed form.

For the (rescaled) MSE loss and lambda_H > 0 the objective is a strongly convex ridge
regression in each feature column, so for fixed (W, b)

    F(W, b) = min_H f(W, H, b),    H*(W, b) = per-class ridge solutions,

with everything in K x K algebra (independent of N and, but for W itself, of d):

* MSE (eq. 3):  F = lambda_H/2 tr(G^-1 Yt Yt^T) + lambda_W/2 ||W||^2 + lambda_b/2 ||b||^2,
  G = W W^T + N lambda_H I_K,  Yt Yt^T = n (I - b 1^T - 1 b^T + K b b^T),
  h*_{k,i} = W^T G^-1 (e_k - b).
* Rescaled MSE (eq. 4): per class, D_k = diag(omega_k)^(1/2), y_k = M e_k - b,
  F = n lambda_H/2 sum_k y_k^T D_k (D_k W W^T D_k + N lambda_H I)^-1 D_k y_k + ...,
  h*_k = W^T D_k (D_k W W^T D_k + N lambda_H I)^-1 D_k y_k.

Why it is exact for landscape questions: every critical point of f has H = H*(W, b)
(grad_H f = 0 has a unique solution), grad F = grad_{W,b} f there (envelope theorem),
and since the H-block of the Hessian is positive definite (>= lambda_H I), the
Haynsworth inertia formula gives  #negative eigenvalues of Hess f  =  #negative
eigenvalues of Hess F  (the Schur complement). A direction y with y^T (Hess F) y < 0
lifts to (y, -H_HH^-1 H_Hx y) with the same quadratic form in the full space.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.linalg import cho_factor, cho_solve

from nc_jax.ufm import UFMParams, UFMProblem, repeat_class_columns

__all__ = ["ReducedParams", "reduced_objective", "optimal_features", "lift", "supports_reduction"]


class ReducedParams(NamedTuple):
    """The variables left after eliminating H: W (K x d) and b ((K,) or None)."""

    W: jax.Array
    b: jax.Array | None = None


def supports_reduction(problem: UFMProblem) -> bool:
    """Variable projection needs a (rescaled) MSE loss; lambda_H > 0 is checked by callers."""
    return problem.loss in ("mse", "rescaled_mse")


def _class_targets(x: ReducedParams, problem: UFMProblem):
    """Per-class targets y_k (columns, K x K) and square-root weights D (K x K, column k = D_k)."""
    K = problem.num_classes
    dtype = x.W.dtype
    eye = jnp.eye(K, dtype=dtype)
    if problem.loss == "rescaled_mse":
        M = jnp.asarray(problem.M, dtype)
        alpha = jnp.asarray(problem.alpha, dtype)
        targets = M * eye
        root_w = jnp.sqrt(1.0 + (alpha - 1.0) * eye)
    else:
        targets = eye
        root_w = jnp.ones((K, K), dtype)
    if problem.bias:
        targets = targets - x.b[:, None]
    return targets, root_w


def _per_class_solves(x: ReducedParams, problem: UFMProblem):
    """For each class k: c_k = (D_k W W^T D_k + N lambda_H I)^-1 D_k y_k, and D_k y_k."""
    N = problem.num_samples
    dtype = x.W.dtype
    lam = jnp.asarray(problem.lambda_H, dtype) * N
    targets, root_w = _class_targets(x, problem)
    WWt = x.W @ x.W.T
    K = problem.num_classes
    eye = jnp.eye(K, dtype=dtype)
    if problem.loss == "mse":
        factor = cho_factor(WWt + lam * eye, lower=True)
        return cho_solve(factor, targets), targets

    def one(dk, yk):
        G = dk[:, None] * WWt * dk[None, :] + lam * eye
        rhs = dk * yk
        return cho_solve(cho_factor(G, lower=True), rhs), rhs

    sol, rhs = jax.vmap(one, in_axes=(1, 1), out_axes=1)(root_w, targets)
    return sol, rhs


def reduced_objective(x: ReducedParams, problem: UFMProblem) -> jax.Array:
    """F(W, b) = min_H f(W, H, b) for the MSE or rescaled-MSE UFM (lambda_H > 0)."""
    dtype = x.W.dtype
    sol, rhs = _per_class_solves(x, problem)
    # every sample of class k attains the same per-sample minimum: weight it by n_k
    sizes = jnp.asarray(problem.class_sizes, dtype)
    data = 0.5 * jnp.asarray(problem.lambda_H, dtype) * jnp.sum(sizes * jnp.sum(sol * rhs, axis=0))
    reg = 0.5 * jnp.asarray(problem.lambda_W, dtype) * jnp.sum(x.W**2)
    if problem.bias:
        reg = reg + 0.5 * jnp.asarray(problem.lambda_b, dtype) * jnp.sum(x.b**2)
    return data + reg


def optimal_features(x: ReducedParams, problem: UFMProblem) -> jax.Array:
    """H*(W, b): d x N, every column of class k equal to the class-k ridge solution."""
    sol, _ = _per_class_solves(x, problem)
    _, root_w = _class_targets(x, problem)
    means = x.W.T @ (root_w * sol)  # d x K: W^T D_k c_k
    return repeat_class_columns(means, problem)


def lift(x: ReducedParams, problem: UFMProblem) -> UFMParams:
    """The full UFM point (W, H*(W, b), b)."""
    return UFMParams(x.W, optimal_features(x, problem), x.b if problem.bias else None)
