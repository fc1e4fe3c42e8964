"""Hessian-vector products of any JAX function of a pytree.

Three forms, all forward-over-reverse (``jax.jvp`` of ``jax.grad``), which costs about
two gradients and is exact up to rounding:

* :func:`hvp` -- one product at one point, ``params`` and ``v`` pytrees of one structure.
* :func:`hvp_operator` -- many products at one point: the gradient is linearised once
  with ``jax.linearize`` so the primal pass (and everything the tangent pass needs from
  it) is computed once and cached; each product then runs only the tangent pass.
* :func:`flat_hvp_operator` -- the same on flat vectors (``ravel_pytree``), the form the
  eigensolvers in :mod:`nc_jax.hessian` take.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
from jax.flatten_util import ravel_pytree

__all__ = ["hvp", "hvp_operator", "flat_hvp_operator", "flat_hvp", "FlatOperator"]


def hvp(f: Callable[..., jax.Array], params: Any, v: Any, *args: Any) -> Any:
    """Hessian-vector product ``(d^2 f / d params^2)[v]`` by forward-over-reverse.

    Args:
      f: scalar function ``f(params, *args)``.
      params: the point (a pytree of arrays).
      v: the direction, a pytree with the structure and dtypes of ``params``.
      *args: further arguments of ``f``, held fixed (not differentiated).

    Returns:
      A pytree with the structure of ``params``.
    """
    grad = lambda p: jax.grad(f)(p, *args)
    return jax.jvp(grad, (params,), (v,))[1]


def hvp_operator(f: Callable[..., jax.Array], params: Any, *args: Any) -> Callable[[Any], Any]:
    """Returns ``v -> H v`` at ``params``, linearised once for many products.

    ``jax.linearize`` of the gradient evaluates the primal pass once; the returned
    function replays only the (linear) tangent pass, so k products cost about one
    gradient plus k tangent passes instead of k full jvp-of-grad evaluations. Build it
    inside the jitted region that uses it (it closes over the point's residuals).
    """
    grad = lambda p: jax.grad(f)(p, *args)
    _, lin = jax.linearize(grad, params)
    return lin


class FlatOperator(NamedTuple):
    """A Hessian as a linear operator on flat vectors.

    Attributes:
      matvec: ``v -> H v`` for ``v`` of shape ``(dim,)`` and the dtype of the raveled
        parameters.
      unravel: turns a flat vector back into a parameter pytree.
      dim: number of scalar parameters (a Python int).
      dtype: dtype of the raveled parameters.
      point: the raveled point.
    """

    matvec: Callable[[jax.Array], jax.Array]
    unravel: Callable[[jax.Array], Any]
    dim: int
    dtype: Any
    point: jax.Array


def flat_hvp_operator(f: Callable[..., jax.Array], params: Any, *args: Any) -> FlatOperator:
    """Flat-vector Hessian operator at ``params`` (linearize-cached, see :func:`hvp_operator`).

    Returns:
      A :class:`FlatOperator`; ``matvec(v)`` ravels ``H unravel(v)``.
    """
    flat, unravel = ravel_pytree(params)
    lin = hvp_operator(f, params, *args)

    def matvec(v):
        return ravel_pytree(lin(unravel(v)))[0]

    return FlatOperator(matvec, unravel, int(flat.shape[0]), flat.dtype, flat)


def flat_hvp(f: Callable[..., jax.Array]) -> Callable[..., jax.Array]:
    """Matfree-style flat HVP: returns ``matvec(v, flat_params, unravel_like, *args)``.

    Here the point is an explicit argument (so ``vmap``/``grad`` reach it) rather than a
    closure; each call runs a full jvp-of-grad. ``unravel_like`` is any pytree with the
    structure of the parameters (used only for its structure and shapes).
    """

    def matvec(v, flat_params, params_like, *args):
        _, unravel = ravel_pytree(params_like)
        p = unravel(flat_params)
        return ravel_pytree(hvp(f, p, unravel(v), *args))[0]

    return matvec
