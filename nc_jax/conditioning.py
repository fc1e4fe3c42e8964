"""Curvature at UFM minima: condition numbers modulo the rotation symmetry, and the ETF
scalar problem that gives the global minimum of the softmax losses in closed form.

Rotation symmetry. ``f(W Q, Q^T H, b) = f(W, H, b)`` for every orthogonal Q (the loss sees
W H only; the decays are rotation invariant), so at every minimum the full Hessian has a
kernel containing the orbit's tangent space {(W A, -A H, 0): A skew}, and
lambda_min = 0: the plain condition number is infinite. :func:`conditioning` computes the
dense Hessian, a basis of that tangent space, and the spectrum on its orthogonal
complement; the condition number reported is lambda_max / lambda_min there. It also
counts the (near) zero eigenvalues of the whole Hessian: equal to the orbit's dimension
means the minimum is nondegenerate modulo the symmetry (Morse-Bott), and the condition
number is the one gradient descent sees across the orbit.

ETF scalar problem (Zhu et al. 2021, Thm 3.1 for CE; Zhou et al. 2022 for label smoothing and
focal loss; balanced classes, d >= K - 1, bias with lambda_b > 0). At the global minimum
w_k = a m_k, h_i = c m_{y_i}, b = 0 with (m_k) a unit simplex ETF; the logits of a sample
are t on its class and -t/(K-1) elsewhere, t = a c. For fixed t the decay
lambda_W K a^2 / 2 + lambda_H N c^2 / 2 is smallest (AM-GM) at
sqrt(K N lambda_W lambda_H) t, so

    f* = min_{t >= 0}  l(t) + sqrt(K N lambda_W lambda_H) t,
    a^2 = t sqrt(lambda_H N / (lambda_W K)),   c^2 = t sqrt(lambda_W K / (lambda_H N)),

``l(t)`` the per-sample loss at those logits. Solved by bisection on the derivative (l is
convex in t for these losses at t >= 0 on the range used; checked on a grid in the tests).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from nc_jax import losses, ufm
from nc_jax.ufm import UFMParams, UFMProblem

__all__ = ["Conditioning", "conditioning", "dense_hessian", "rotation_tangents", "EtfMinimum", "etf_scalar_loss",
           "etf_minimum"]


class Conditioning(NamedTuple):
    """Spectrum of the Hessian at a point, whole and modulo the rotation orbit."""

    eigenvalues: np.ndarray  # the whole Hessian, ascending
    orbit_dim: int  # dimension of the rotation orbit's tangent space at the point
    num_zero: int  # eigenvalues with |lambda| <= zero_tol * lambda_max
    perp_eigenvalues: np.ndarray  # on the complement of the orbit's tangent space, ascending
    lambda_max: float
    lambda_min_perp: float
    kappa: float  # lambda_max / lambda_min_perp (inf if not positive)


def _flat(params):
    return jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(params)])


def rotation_tangents(params: UFMParams, tol: float = 1e-10) -> np.ndarray:
    """Orthonormal basis (P x r, P parameters) of {(W A, -A H, 0): A skew d x d}."""
    W, H, b = params
    d = W.shape[1]
    cols = []
    for i in range(d):
        for j in range(i + 1, d):
            A = np.zeros((d, d))
            A[i, j], A[j, i] = 1.0, -1.0
            A = jnp.asarray(A, W.dtype)
            cols.append(np.asarray(_flat(UFMParams(W @ A, -A @ H, None if b is None else jnp.zeros_like(b)))))
    if not cols:
        return np.zeros((sum(int(np.size(x)) for x in jax.tree.leaves(params)), 0))
    T = np.stack(cols, axis=1)
    U, s, _ = np.linalg.svd(T, full_matrices=False)
    return U[:, s > tol * max(1.0, s.max(initial=0.0))]


@functools.lru_cache(maxsize=64)
def dense_hessian(f):
    """``(params, *args) -> the P x P Hessian of f`` in flat coordinates (ravel_pytree order),
    compiled once per ``f``."""

    def hess(params, *args):
        x, unravel = ravel_pytree(params)
        return jax.hessian(lambda z: f(unravel(z), *args))(x)

    return jax.jit(hess)


def conditioning(f, params: UFMParams, *args, zero_tol: float = 1e-9) -> Conditioning:
    """Dense Hessian spectrum of ``f(params, *args)`` and the condition number modulo rotations.

    For small problems only (P x P dense Hessian, P = K d + d N + K).
    """
    Hm = np.asarray(dense_hessian(f)(params, *args))
    Hm = 0.5 * (Hm + Hm.T)
    eig = np.linalg.eigvalsh(Hm)
    T = rotation_tangents(params)
    # orthonormal basis of the complement of span(T)
    Q = np.linalg.svd(np.eye(Hm.shape[0]) - T @ T.T)[0][:, : Hm.shape[0] - T.shape[1]]
    perp = np.linalg.eigvalsh(Q.T @ Hm @ Q)
    lmax = float(eig[-1])
    num_zero = int(np.sum(np.abs(eig) <= zero_tol * max(abs(lmax), 1e-300)))
    lmin = float(perp[0])
    return Conditioning(eig, int(T.shape[1]), num_zero, perp, lmax, lmin, lmax / lmin if lmin > 0 else math.inf)


class EtfMinimum(NamedTuple):
    value: float
    t: float  # the true-class logit a c
    W_norm: float  # ||W||_F = sqrt(K) a
    H_norm: float  # ||H||_F = sqrt(N) c
    params: UFMParams  # one minimizer (simplex ETF in the first K coordinates)


def etf_scalar_loss(t, problem: UFMProblem):
    """l(t): the per-sample loss at logits t (true class) and -t/(K-1) (others)."""
    K = problem.num_classes
    t = jnp.asarray(t, jnp.result_type(float))
    z = jnp.where(jnp.arange(K) == 0, t, -t / (K - 1))
    y = (jnp.arange(K) == 0).astype(z.dtype)
    return losses.data_loss(problem.loss, z[:, None], y[:, None], smoothing=problem.label_smoothing,
                            gamma=problem.focal_gamma, class_axis=0)


def etf_minimum(problem: UFMProblem, t_max: float = 200.0, iters: int = 200) -> EtfMinimum:
    """The ETF scalar problem of the module docstring, solved to machine precision."""
    if problem.loss not in ("ce", "label_smoothing", "focal"):
        raise ValueError(f"etf_minimum is for the softmax losses (ce, label_smoothing, focal); got {problem.loss!r}")
    ufm.require_balanced(problem, "etf_minimum")
    if problem.feature_dim < problem.num_classes - 1:
        raise ValueError("etf_minimum needs d >= K - 1 (a simplex ETF must fit)")
    K, N = problem.num_classes, problem.num_samples
    lw, lh = float(problem.lambda_W), float(problem.lambda_H)
    slope = math.sqrt(K * N * lw * lh)
    dphi = jax.jit(jax.grad(lambda t: etf_scalar_loss(t, problem) + slope * t))
    lo, hi = 0.0, t_max
    if float(dphi(0.0)) >= 0:
        t = 0.0
    else:
        if float(dphi(hi)) <= 0:
            raise ValueError(f"etf_minimum: the minimizer lies beyond t = {t_max}")
        for _ in range(iters):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if float(dphi(mid)) < 0 else (lo, mid)
        t = 0.5 * (lo + hi)
    value = float(etf_scalar_loss(t, problem)) + slope * t
    a = math.sqrt(t * math.sqrt(lh * N / (lw * K)))
    c = math.sqrt(t * math.sqrt(lw * K / (lh * N)))
    M = ufm.simplex_etf(K, problem.feature_dim)  # d x K, unit columns
    W = a * M.T
    H = ufm.repeat_class_columns(c * M, problem)
    b = jnp.zeros((K,), W.dtype) if problem.bias else None
    return EtfMinimum(value, t, math.sqrt(K) * a, math.sqrt(N) * c, UFMParams(W, H, b))
