"""Second-order certificate and class of a refined point (:class:`RunClass`).

Classes:
  * ``GLOBAL_MINIMUM``: converged, Hessian PSD to rounding, value = the known optimum
    (the value decides; degeneracy from symmetries does not matter there).
  * ``STRICT_SADDLE``: converged and a certified direction of negative curvature.
  * ``SPURIOUS_LOCAL_MINIMUM``: converged, Hessian positive definite beyond the threshold
    (see ``certify_point``), value above the known optimum.
  * ``BELOW_CLOSED_FORM``: converged with a value below the known optimum: the closed
    form would be wrong.
  * ``LOCAL_MINIMUM``: converged, positive definite beyond tau, no known optimum.
  * ``DEGENERATE``: converged, PSD to tau with |lambda_min| <= tau, and no value decides
    (no known optimum, or a value above it): a second-order critical point that is NOT
    certified as a minimum (x^3 + y^2 at the origin is one; so is every point of a
    continuous family of minima, where the symmetry leaves zero curvature).
  * ``NOT_CONVERGED``: refinement did not reach the gradient tolerance.
  * ``DIVERGED``: descent produced non-finite or exploding values.
  * ``INCONCLUSIVE``: converged but the certificate could not decide.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from nc_jax import hessian
from nc_jax.landscape._model import Model

__all__ = ["RunClass", "CLASS_NAMES", "Classification", "certify_point", "class_names"]


class RunClass(enum.IntEnum):
    """Class of one exploration run (traced code carries the int values)."""

    GLOBAL_MINIMUM = 0
    STRICT_SADDLE = 1
    SPURIOUS_LOCAL_MINIMUM = 2
    BELOW_CLOSED_FORM = 3
    LOCAL_MINIMUM = 4
    NOT_CONVERGED = 5
    DIVERGED = 6
    INCONCLUSIVE = 7
    DEGENERATE = 8


CLASS_NAMES = tuple(member.name.lower() for member in RunClass)


def class_names(codes) -> list[str]:
    """Host-side names of class codes."""
    return [RunClass(int(c)).name.lower() for c in np.asarray(codes).reshape(-1)]


class Classification(NamedTuple):
    """Certificate and class of one refined point (arrays; batched by vmap)."""

    label: jax.Array
    verdict: jax.Array
    rayleigh_quotient: jax.Array
    full_rayleigh_quotient: jax.Array
    tau: jax.Array
    lambda_min: jax.Array
    residual: jax.Array
    num_agree: jax.Array
    num_hvps: jax.Array


def _tree_dot(a, b):
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def certify_point(
    model: Model,
    params,
    grad_norm,
    *args,
    key: jax.Array,
    f_star=None,
    grad_tol=1e-10,
    value_rtol=1e-9,
    num_starts: int = 3,
    num_matvecs: int = 40,
    restarts: int = 20,
    criticality_slack: float = 1e3,
    strict_slack: float = 100.0,
) -> Classification:
    """Certificate and class of a refined point of ``model`` (jit/vmap-able).

    With a ``model.reduction`` the certificate runs on the reduced objective (same number
    of negative eigenvalues as the full Hessian, by the Haynsworth inertia formula); the
    negative direction is then lifted and its Rayleigh quotient recomputed with a full
    HVP as a second witness.

    A minimum is called strict only when lambda_min > max(tau, strict_slack * sqrt(g)) at
    gradient norm g: near a degenerate critical point an approximate one shows curvature
    of order sqrt(g) (x^3 + y^2 at x = sqrt(g/3) has curvature sqrt(12 g)), which must not
    pass for positive definiteness.
    """
    # Slack for approximate criticality: at a point with gradient g the Hessian differs
    # from the one at the nearby critical point by (Hessian Lipschitz constant) x
    # (distance); along symmetry orbits the curvature is O(||g||) exactly.
    atol = criticality_slack * grad_norm
    settings = dict(key=key, num_starts=num_starts, num_matvecs=num_matvecs, restarts=restarts, atol=atol)
    if model.reduction is not None:
        x = model.reduction.reduce(params, *args)
        cert = hessian.certify_saddle(model.reduction.objective, x, *args, **settings)
        _, v = jax.jvp(lambda z: model.reduction.lift(z, *args), (x,), (cert.direction,))
    else:
        cert = hessian.certify_saddle(model.objective, params, *args, **settings)
        v = cert.direction
    full_rq = _tree_dot(v, hessian.hvp(model.objective, params, v, *args)) / _tree_dot(v, v)
    value = model.objective(params, *args)
    converged = grad_norm <= grad_tol
    saddle = (cert.verdict == hessian.STRICT_SADDLE) & (full_rq < -cert.tau)
    psd = cert.verdict == hessian.MINIMUM
    strict = cert.lambda_min > jnp.maximum(cert.tau, strict_slack * jnp.sqrt(grad_norm))
    if f_star is None:
        minimum_label = jnp.where(strict, RunClass.LOCAL_MINIMUM, RunClass.DEGENERATE)
    else:
        tol = value_rtol * jnp.maximum(jnp.abs(f_star), 1.0)
        above = jnp.where(strict, RunClass.SPURIOUS_LOCAL_MINIMUM, RunClass.DEGENERATE)
        minimum_label = jnp.where(value > f_star + tol, above,
                                  jnp.where(value < f_star - tol, RunClass.BELOW_CLOSED_FORM, RunClass.GLOBAL_MINIMUM))
    label = jnp.where(
        ~jnp.isfinite(value), RunClass.DIVERGED,
        jnp.where(~converged, RunClass.NOT_CONVERGED,
                  jnp.where(saddle, RunClass.STRICT_SADDLE, jnp.where(psd, minimum_label, RunClass.INCONCLUSIVE))),
    ).astype(jnp.int32)
    return Classification(label, cert.verdict, cert.rayleigh_quotient, full_rq, cert.tau, cert.lambda_min,
                          cert.residual, cert.num_agree, cert.num_hvps)
