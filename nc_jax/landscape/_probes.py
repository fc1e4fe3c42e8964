"""Saddle probes: start at a constructed strict saddle and watch descent escape it.

At a critical point of Lemma B.2 (``theory.ufm_critical_point``) the Hessian has a
certified direction y of negative curvature. A step x + eps y lowers f by about
eps^2 |lambda_min| / 2; gradient descent from there, followed by refinement, should end
at a global minimizer (Theorems 3.2 and 3.3: no spurious local minima).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np

from nc_jax import hessian, theory, ufm
from nc_jax.landscape._descent import gram_gradient_descent
from nc_jax.landscape._classify import CLASS_NAMES
from nc_jax.landscape._explore import classify, refine
from nc_jax.ufm import UFMParams, UFMProblem

__all__ = ["ProbeResult", "saddle_probe"]


class ProbeResult(NamedTuple):
    """What one saddle probe measured (host values).

    Attributes:
      kept: kept singular directions of the constructed critical point.
      grad_norm_at_saddle: gradient norm at the constructed point.
      value_at_saddle: f there.
      lambda_min_closed_form: theory's smallest eigenvalue (an upper bound with bias).
      lambda_min_lanczos: smallest Ritz value of the full Hessian (certify_saddle).
      rayleigh_quotient: fresh y^T H y of the certified direction.
      tau: rounding threshold of the certificate.
      verdict: the certificate's verdict name at the saddle.
      value_after_step: f(x + eps y).
      final_class: class of the endpoint after descent and refinement.
      final_gap: f(endpoint) - f*.
      descent_steps: gradient-descent steps taken after the step.
      f_star: the closed-form optimum.
      paper_bound: Rayleigh quotient of the paper's Lemma B.2 direction.
    """

    kept: tuple
    grad_norm_at_saddle: float
    value_at_saddle: float
    lambda_min_closed_form: float
    lambda_min_lanczos: float
    rayleigh_quotient: float
    tau: float
    verdict: str
    value_after_step: float
    final_class: str
    final_gap: float
    descent_steps: int
    f_star: float
    paper_bound: float


def _add(params: UFMParams, direction: UFMParams, eps) -> UFMParams:
    return jax.tree.map(lambda x, y: x + eps * y, params, direction)


def saddle_probe(
    problem: UFMProblem,
    kept,
    *,
    key: jax.Array,
    step: float = 1e-2,
    num_steps: int = 2000,
    learning_rate: float = 0.5,
    grad_tol: float = 1e-10,
    num_matvecs: int = 40,
    restarts: int = 20,
) -> ProbeResult:
    """Certify the constructed saddle keeping ``kept`` directions, step off it, descend.

    The critical point is built eagerly (its structure depends on ``kept``); certificate, step, descent, refinement and classification run in one
    program compiled once per problem sizes and settings. Run with x64 enabled.
    """
    if not problem.loss == "mse":
        raise ValueError(f"saddle_probe needs loss='mse' (Lemma B.2); got {problem.loss!r}")
    kept = tuple(range(kept)) if isinstance(kept, (int, np.integer)) else tuple(int(k) for k in kept)
    k_rot, k_class, k_cert, k_final = jax.random.split(key, 4)
    # eager: small ops whose shapes depend on kept (a jit per kept compiles slower)
    cp = theory.ufm_critical_point(problem, kept, class_rotation_key=k_class, rotation_key=k_rot)
    dtype = cp.params.W.dtype
    out = _escape_program(
        problem, cp.params, k_cert, k_final, jnp.asarray(step, dtype), jnp.asarray(learning_rate, dtype),
        jnp.asarray(grad_tol, dtype), jnp.asarray(num_steps, jnp.int32),
        num_matvecs=num_matvecs, restarts=restarts,
    )
    out = jax.device_get(out)
    return ProbeResult(
        kept=kept,
        grad_norm_at_saddle=float(out["grad_norm"]),
        value_at_saddle=float(out["value"]),
        lambda_min_closed_form=float(cp.lambda_min),
        lambda_min_lanczos=float(out["lambda_lanczos"]),
        rayleigh_quotient=float(out["rq"]),
        tau=float(out["tau"]),
        verdict=hessian.verdict_name(out["verdict"]),
        value_after_step=float(out["value_after"]),
        final_class=CLASS_NAMES[int(out["label"])],
        final_gap=float(out["gap"]),
        descent_steps=int(out["steps"]),
        f_star=float(out["f_star"]),
        paper_bound=float(cp.paper_bound),
    )


@functools.partial(jax.jit, static_argnames=("num_matvecs", "restarts"))
def _escape_program(problem, params, k_cert, k_final, step, learning_rate, grad_tol, num_steps, *,
                    num_matvecs, restarts):
    grad_norm = jnp.linalg.norm(jax.flatten_util.ravel_pytree(jax.grad(ufm.objective)(params, problem))[0])
    cert = hessian.certify_saddle(ufm.objective, params, problem, key=k_cert,
                                  num_matvecs=num_matvecs, restarts=restarts)
    # step along the certified direction, scaled to the size of the point
    scale = step * jnp.maximum(1.0, jnp.linalg.norm(params.W))
    start = _add(params, cert.direction, scale)
    run = gram_gradient_descent(problem, start, learning_rate=learning_rate, num_steps=num_steps, grad_tol=grad_tol)
    final, res = refine(problem, run.W, run.b, run.H, grad_tol=grad_tol)
    f_star = theory.global_minimum(problem).value
    cls = classify(problem, final, res.grad_norm, key=k_final, f_star=f_star, grad_tol=grad_tol,
                   num_matvecs=num_matvecs, restarts=restarts)
    return dict(
        grad_norm=grad_norm, value=ufm.objective(params, problem),
        lambda_lanczos=cert.lambda_min, rq=cert.rayleigh_quotient, tau=cert.tau, verdict=cert.verdict,
        value_after=ufm.objective(start, problem), label=cls.label,
        gap=ufm.objective(final, problem) - f_star, f_star=f_star, steps=run.num_steps,
    )
