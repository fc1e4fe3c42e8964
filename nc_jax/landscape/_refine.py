"""Refinement to a true critical point: a trust-region Newton-CG method (Steihaug-Toint).

Gradient descent stalls along the weakly curved directions (curvature ~ lambda), so a
second-order method finishes the job: each outer step minimises the quadratic model
inside a trust region by conjugate gradients on Hessian-vector products, stopping at the
boundary or on negative curvature (so the method also walks off saddles it was not
started exactly at). Steps are accepted on the actual/predicted decrease ratio; close
to the solution, where f's decrease drowns in rounding, a step is accepted when it
lowers the gradient norm. Everything is a ``lax.while_loop``: it jits and vmaps.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

__all__ = ["RefineResult", "trust_region_newton"]


class RefineResult(NamedTuple):
    """Result of :func:`trust_region_newton`.

    Attributes:
      params: the refined point (same pytree as the start).
      value: objective there.
      grad_norm: gradient norm there.
      converged: grad_norm <= grad_tol.
      num_iters: outer (trust-region) iterations.
      num_hvps: Hessian-vector products used.
    """

    params: Any
    value: jax.Array
    grad_norm: jax.Array
    converged: jax.Array
    num_iters: jax.Array
    num_hvps: jax.Array


def _to_boundary(z, d, radius):
    """tau >= 0 with ||z + tau d|| = radius."""
    zd, dd, zz = jnp.vdot(z, d), jnp.vdot(d, d), jnp.vdot(z, z)
    disc = jnp.maximum(zd**2 + dd * (radius**2 - zz), 0.0)
    return (-zd + jnp.sqrt(disc)) / jnp.where(dd > 0, dd, 1.0)


def _steihaug(hvp, g, radius, tol, max_cg):
    """Approximately minimise g^T z + z^T H z / 2 subject to ||z|| <= radius."""
    zero = jnp.zeros_like(g)

    def cond(state):
        return (state[4] == 0) & (state[3] < max_cg)

    def body(state):
        z, r, d, j, _, count = state
        Hd = hvp(d)
        dHd = jnp.vdot(d, Hd)
        rr = jnp.vdot(r, r)
        alpha = rr / jnp.where(dHd > 0, dHd, 1.0)
        z_next = z + alpha * d
        negative = dHd <= 0
        outside = jnp.linalg.norm(z_next) >= radius
        tau = _to_boundary(z, d, radius)
        z_boundary = z + tau * d
        r_next = r + alpha * Hd
        small = jnp.linalg.norm(r_next) <= tol
        beta = jnp.vdot(r_next, r_next) / jnp.where(rr > 0, rr, 1.0)
        d_next = -r_next + beta * d
        stop_boundary = negative | outside
        z_new = jnp.where(stop_boundary, z_boundary, z_next)
        done = jnp.where(stop_boundary, 2, jnp.where(small, 1, 0)).astype(jnp.int32)
        return z_new, r_next, d_next, j + 1, done, count + 1

    init = (zero, g, -g, jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))
    z, _, _, _, done, count = jax.lax.while_loop(cond, body, init)
    return z, done == 2, count


def trust_region_newton(
    fun: Callable[..., jax.Array],
    params: Any,
    *args: Any,
    grad_tol: float = 1e-10,
    max_iters: int = 200,
    max_cg: int = 500,
    initial_radius: float = 1.0,
    max_radius: float = 1e3,
) -> RefineResult:
    """Minimises ``fun(params, *args)`` from ``params`` to ``grad_norm <= grad_tol``."""
    x0, unravel = ravel_pytree(params)
    dtype = x0.dtype

    def f(x):
        return fun(unravel(x), *args)

    value_and_grad = jax.value_and_grad(f)
    grad = jax.grad(f)

    def cond(state):
        x, fx, g, radius, it, nhvp = state
        gn = jnp.linalg.norm(g)
        return (it < max_iters) & (gn > grad_tol) & jnp.isfinite(gn) & (radius > 1e-30)

    def body(state):
        x, fx, g, radius, it, nhvp = state
        _, hvp = jax.linearize(grad, x)
        gn = jnp.linalg.norm(g)
        tol = jnp.minimum(0.5, jnp.sqrt(gn)) * gn
        p, on_boundary, count = _steihaug(hvp, g, radius, tol, max_cg)
        Hp = hvp(p)
        predicted = -(jnp.vdot(g, p) + 0.5 * jnp.vdot(p, Hp))
        f_new, g_new = value_and_grad(x + p)
        actual = fx - f_new
        rho = actual / jnp.where(predicted > 0, predicted, 1.0)
        # below rounding of f, judge the step by the gradient instead
        tiny = predicted <= 100 * jnp.finfo(dtype).eps * (1.0 + jnp.abs(fx))
        gn_new = jnp.linalg.norm(g_new)
        accept = jnp.isfinite(f_new) & jnp.where(tiny, gn_new < gn, rho > 1e-4)
        pn = jnp.linalg.norm(p)
        radius = jnp.where(
            ~accept | (~tiny & (rho < 0.25)),
            0.25 * pn,
            jnp.where((rho > 0.75) & on_boundary, jnp.minimum(2.0 * radius, max_radius), radius),
        )
        x = jnp.where(accept, x + p, x)
        fx = jnp.where(accept, f_new, fx)
        g = jnp.where(accept, g_new, g)
        return x, fx, g, radius, it + 1, nhvp + count + 1

    f0, g0 = value_and_grad(x0)
    state = (x0, f0, g0, jnp.asarray(initial_radius, dtype), jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))
    x, fx, g, _, it, nhvp = jax.lax.while_loop(cond, body, state)
    gn = jnp.linalg.norm(g)
    return RefineResult(unravel(x), fx, gn, gn <= grad_tol, it, nhvp)
