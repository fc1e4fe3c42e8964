"""Generic loops and solvers for any JAX function of a pytree (knows nothing of the UFM).

* :func:`run_until`: a ``lax.while_loop`` over a NamedTuple state with a ``done`` test.
* :func:`gradient_descent`: any optax optimizer until the gradient is small, the run
  diverges, or the step budget ends; :class:`DescentStatus` says which.
* :func:`trust_region_newton`: refinement to a true critical point, a trust-region
  Newton-CG method (Steihaug-Toint) on Hessian-vector products.

Everything jits and vmaps; nothing here is jitted (callers jit one whole run).
"""

from __future__ import annotations

import enum
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

__all__ = [
    "DescentStatus",
    "DescentRun",
    "RefineResult",
    "run_until",
    "gradient_descent",
    "trust_region_newton",
    "tree_sq_norm",
]


class DescentStatus(enum.IntEnum):
    """Why a descent run stopped (traced code carries the int values)."""

    RUNNING = 0
    CONVERGED = 1  # gradient norm <= grad_tol
    MAX_STEPS = 2  # the step budget ran out first
    DIVERGED = 3   # non-finite value or gradient, or ||params||^2 above the threshold


def run_until(step: Callable[[Any], Any], done: Callable[[Any], jax.Array], state: Any) -> Any:
    """``state = step(state)`` until ``done(state)``: a ``lax.while_loop`` with the test first."""
    return jax.lax.while_loop(lambda s: ~done(s), step, state)


def tree_sq_norm(tree) -> jax.Array:
    """Sum of squares of every leaf."""
    return sum(jnp.sum(x**2) for x in jax.tree.leaves(tree))


def diverged(norm_sq, value, grad_sq, threshold) -> jax.Array:
    """Non-finite value/gradient or squared parameter norm above ``threshold``."""
    return ~jnp.isfinite(value) | ~jnp.isfinite(norm_sq) | ~jnp.isfinite(grad_sq) | (norm_sq > threshold)


class DescentRun(NamedTuple):
    """Endpoint of :func:`gradient_descent`: the point whose gradient was last measured."""

    params: Any
    value: jax.Array
    grad_norm: jax.Array
    status: jax.Array
    num_steps: jax.Array


class _DescentState(NamedTuple):
    params: Any
    opt_state: Any
    step: jax.Array
    status: jax.Array
    value: jax.Array
    grad_norm: jax.Array


def _needs_value(optimizer: optax.GradientTransformation, params: Any) -> bool:
    """Whether ``optimizer.update`` needs optax's line-search arguments (value, grad, value_fn):
    it refuses a call without them (traced abstractly, no work)."""
    if not isinstance(optimizer, optax.GradientTransformationExtraArgs):
        return False
    try:
        jax.eval_shape(lambda p: optimizer.update(p, optimizer.init(p), p), params)
    except TypeError:
        return True
    return False


def gradient_descent(
    objective: Callable[..., jax.Array],
    params: Any,
    *args: Any,
    optimizer: optax.GradientTransformation,
    num_steps,
    grad_tol,
    divergence_threshold=1e8,
    check_every: int = 1,
) -> DescentRun:
    """Runs ``optimizer`` on ``objective(params, *args)`` until grad_norm <= grad_tol,
    divergence (see :class:`DescentStatus`) or ``num_steps`` steps.

    Any optax optimizer, line-search ones included (``optax.lbfgs()``: they receive the
    value, the gradient and the objective as ``value_fn``, optax's contract).

    The stopping tests (gradient norm, divergence, budget) run every ``check_every`` steps
    (static): the steps in between are bare optimizer updates, which is what pays on small
    problems, where the tests cost as much as the gradient. The endpoint is always a point
    whose gradient was measured, so a run stops at most ``check_every - 1`` steps after it
    first met the tolerance, and never takes more than ``num_steps`` steps.
    The budget's last ``num_steps mod check_every`` steps are one more block.
    """
    if isinstance(check_every, bool) or not isinstance(check_every, int) or check_every < 1:
        raise ValueError(f"check_every must be an integer >= 1; got {check_every!r}")
    value_and_grad = jax.value_and_grad(objective)
    grad = jax.grad(objective)
    line_search = _needs_value(optimizer, params)

    def update(params, opt_state, value, grads):
        if line_search:  # optax's line-search contract (optax.lbfgs, scale_by_zoom_linesearch)
            updates, opt_state = optimizer.update(grads, opt_state, params, value=value, grad=grads,
                                                  value_fn=lambda p: objective(p, *args))
        else:
            updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    def unchecked(carry, _):
        if line_search:
            return update(*carry, *value_and_grad(carry[0], *args)), None
        return update(*carry, None, grad(carry[0], *args)), None

    def measure(params, opt_state, step):
        """The state at ``params`` (value, gradient, status: MAX_STEPS when a next block
        would pass the budget) and the gradient, which that block's first update uses."""
        value, grads = value_and_grad(params, *args)
        grad_sq = tree_sq_norm(grads)
        grad_norm = jnp.sqrt(grad_sq)
        status = jnp.where(
            diverged(tree_sq_norm(params), value, grad_sq, divergence_threshold), DescentStatus.DIVERGED,
            jnp.where(grad_norm <= grad_tol, DescentStatus.CONVERGED,
                      jnp.where(step + check_every > num_steps, DescentStatus.MAX_STEPS, DescentStatus.RUNNING)),
        ).astype(jnp.int32)
        return _DescentState(params, opt_state, step, status, value, grad_norm), grads

    def block(carry):
        """One update with the measured gradient, ``check_every - 1`` bare ones, then a
        measurement. The loop test alone stops a run (no branch inside: a stopped run is
        the point whose gradient was measured)."""
        s, grads = carry
        new = update(s.params, s.opt_state, s.value, grads)
        if check_every > 1:
            new, _ = jax.lax.scan(unchecked, new, None, length=check_every - 1)
        return measure(*new, s.step + check_every)

    carry = measure(params, optimizer.init(params), jnp.zeros((), jnp.int32))
    carry = run_until(block, lambda c: c[0].status != DescentStatus.RUNNING, carry)
    if check_every > 1:  # the last (< check_every) steps of the budget, as one measured block

        def tail(carry):
            s, grads = carry
            new = update(s.params, s.opt_state, s.value, grads)
            # zero for runs that stopped (under vmap every run takes this branch: no extra steps)
            left = jnp.where(s.status == DescentStatus.MAX_STEPS, num_steps - s.step, 0)
            new = jax.lax.fori_loop(0, left - 1, lambda _, c: unchecked(c, None)[0], new)
            # the budget is spent: MAX_STEPS unless it converged or diverged
            return measure(*new, jnp.asarray(num_steps, s.step.dtype))

        s = carry[0]
        carry = jax.lax.cond((s.status == DescentStatus.MAX_STEPS) & (s.step < num_steps), tail, lambda c: c, carry)
    state = carry[0]
    return DescentRun(state.params, state.value, state.grad_norm, state.status, state.step)


# --- trust-region Newton-CG ---------------------------------------------------------------
# Gradient descent stalls along weakly curved directions (curvature ~ lambda), so a
# second-order method finishes the job: each outer step minimises the quadratic model
# inside a trust region by conjugate gradients on Hessian-vector products, stopping at the
# boundary or on negative curvature (so the method also walks off saddles it was not
# started exactly at). Steps are accepted on the actual/predicted decrease ratio; close
# to the solution, where f's decrease drowns in rounding, a step is accepted when it
# lowers the gradient norm.


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


class _CGState(NamedTuple):
    z: jax.Array       # the step so far
    r: jax.Array       # residual g + H z
    d: jax.Array       # search direction
    count: jax.Array   # Hessian-vector products
    done: jax.Array    # 0 running, 1 converged inside, 2 stopped at the boundary


def _steihaug(hvp, g, radius, tol, max_cg):
    """Approximately minimise g^T z + z^T H z / 2 subject to ||z|| <= radius."""

    def step(s: _CGState) -> _CGState:
        Hd = hvp(s.d)
        dHd = jnp.vdot(s.d, Hd)
        rr = jnp.vdot(s.r, s.r)
        alpha = rr / jnp.where(dHd > 0, dHd, 1.0)
        z_next = s.z + alpha * s.d
        stop_boundary = (dHd <= 0) | (jnp.linalg.norm(z_next) >= radius)
        z_boundary = s.z + _to_boundary(s.z, s.d, radius) * s.d
        r_next = s.r + alpha * Hd
        small = jnp.linalg.norm(r_next) <= tol
        beta = jnp.vdot(r_next, r_next) / jnp.where(rr > 0, rr, 1.0)
        done = jnp.where(stop_boundary, 2, jnp.where(small, 1, 0)).astype(jnp.int32)
        return _CGState(jnp.where(stop_boundary, z_boundary, z_next), r_next, -r_next + beta * s.d,
                        s.count + 1, done)

    zero_i = jnp.zeros((), jnp.int32)
    out = run_until(step, lambda s: (s.done != 0) | (s.count >= max_cg),
                    _CGState(jnp.zeros_like(g), g, -g, zero_i, zero_i))
    return out.z, out.done == 2, out.count


class _TRState(NamedTuple):
    x: jax.Array
    fx: jax.Array
    g: jax.Array
    radius: jax.Array
    it: jax.Array
    nhvp: jax.Array


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

    def done(s: _TRState):
        gn = jnp.linalg.norm(s.g)
        return (s.it >= max_iters) | (gn <= grad_tol) | ~jnp.isfinite(gn) | (s.radius <= 1e-30)

    def step(s: _TRState) -> _TRState:
        _, hvp = jax.linearize(grad, s.x)
        gn = jnp.linalg.norm(s.g)
        p, on_boundary, count = _steihaug(hvp, s.g, s.radius, jnp.minimum(0.5, jnp.sqrt(gn)) * gn, max_cg)
        predicted = -(jnp.vdot(s.g, p) + 0.5 * jnp.vdot(p, hvp(p)))
        f_new, g_new = value_and_grad(s.x + p)
        rho = (s.fx - f_new) / jnp.where(predicted > 0, predicted, 1.0)
        # below rounding of f, judge the step by the gradient instead
        tiny = predicted <= 100 * jnp.finfo(dtype).eps * (1.0 + jnp.abs(s.fx))
        accept = jnp.isfinite(f_new) & jnp.where(tiny, jnp.linalg.norm(g_new) < gn, rho > 1e-4)
        radius = jnp.where(
            ~accept | (~tiny & (rho < 0.25)),
            0.25 * jnp.linalg.norm(p),
            jnp.where((rho > 0.75) & on_boundary, jnp.minimum(2.0 * s.radius, max_radius), s.radius),
        )
        return _TRState(jnp.where(accept, s.x + p, s.x), jnp.where(accept, f_new, s.fx),
                        jnp.where(accept, g_new, s.g), radius, s.it + 1, s.nhvp + count + 1)

    f0, g0 = value_and_grad(x0)
    zero_i = jnp.zeros((), jnp.int32)
    out = run_until(step, done, _TRState(x0, f0, g0, jnp.asarray(initial_radius, dtype), zero_i, zero_i))
    gn = jnp.linalg.norm(out.g)
    return RefineResult(unravel(out.x), out.fx, gn, gn <= grad_tol, out.it, out.nhvp)
