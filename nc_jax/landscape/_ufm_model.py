"""The built-in UFM as a landscape :class:`Model`: closed form, feature elimination, the
sufficient-statistics descent engine and neural-collapse measurements as hooks.

``explore(problem)`` takes the same road as any user objective; these hooks are all that
is UFM-specific. The models are module-level constants (one per kind of problem), so the
explorer's compiled programs are shared by every problem of the same sizes.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from nc_jax import metrics, theory, ufm
from nc_jax.landscape._descent import default_scales, descent_from_keys, run_batched
from nc_jax.landscape._model import Model, Reduction
from nc_jax.landscape._reduced import ReducedParams, lift, reduced_objective, supports_reduction
from nc_jax.theory import prediction_errors
from nc_jax.ufm import UFMParams, UFMProblem

__all__ = ["ufm_model", "ufm_uses_reduction", "UFM_MODELS"]


def _init(key, scale, problem: UFMProblem):
    dtype = jnp.result_type(scale)
    return jax.tree.map(lambda x: scale * x, ufm.init_params(key, problem, 1.0, dtype=dtype))


def _f_star(problem: UFMProblem):
    return theory.global_minimum(problem).value


def _reduce(params: UFMParams, problem: UFMProblem) -> ReducedParams:
    return ReducedParams(params.W, params.b)


@functools.partial(jax.jit, static_argnames=("batch_size",))
def _descent_nc1(class_means, within_gram, num_samples, *, batch_size):
    # NC1 from the class means and within-class scatter (the gram engine never forms H)
    return run_batched(lambda a: metrics.nc1_from_scatter(a[0], a[1], num_samples), (class_means, within_gram),
                       batch_size=batch_size)


def _descend(*, keys, scales, num_steps, learning_rate, optimizer, grad_tol, engine, batch_size,
             divergence_threshold, dtype, args):
    """Hook: gradient descent through sufficient statistics (MSE) or on (W, H, b)."""
    (problem,) = args
    if not ufm_uses_reduction(problem):  # refinement needs H: the gram engine never forms it
        if engine == "gram":
            raise ValueError("with lambda_H = 0 (or loss='ce') the features cannot be eliminated, so the "
                             "gram engine's endpoints cannot be refined: use engine='full' or 'auto' "
                             f"(got engine={engine!r}, loss={problem.loss!r}, lambda_H={problem.lambda_H})")
        engine = "full"
    res = descent_from_keys(problem, keys=keys, scales=scales, num_steps=num_steps,
                             learning_rate=learning_rate, optimizer=optimizer, grad_tol=grad_tol, engine=engine,
                             batch_size=batch_size, divergence_threshold=divergence_threshold, dtype=dtype)
    nc1 = _descent_nc1(res.class_means, res.within_gram, problem.num_samples, batch_size=batch_size)
    return res, UFMParams(res.W, res.H, res.b), {"descent_nc1": nc1}


def _measure(params: UFMParams, problem: UFMProblem, *, closed_form: bool):
    K = problem.num_classes
    report = metrics.collapse_report(params.W, params.b, params.H, ufm.labels(problem), num_classes=K,
                                     max_class_size=max(problem.class_sizes))
    if closed_form and problem.balanced:  # the NC predictions are Theorem 3.1's (equal classes)
        spec_err, dual_err = prediction_errors(problem, params, theory.nc_predictions(problem))
    else:
        spec_err = dual_err = jnp.full((), jnp.nan, params.W.dtype)
    return {"report": report, "gram_spectrum_error": spec_err, "self_duality_error": dual_err}


def _critical_point(key, kept, problem: UFMProblem):
    k_rot, k_class = jax.random.split(key)
    return theory.ufm_critical_point(problem, kept, class_rotation_key=k_class, rotation_key=k_rot).params


def _model(closed_form: bool, reduced: bool, name: str) -> Model:
    return Model(
        objective=ufm.objective,
        init=_init,
        global_value=_f_star if closed_form else None,
        reduction=Reduction(reduced_objective, _reduce, lift) if reduced else None,
        descend=_descend,
        measure=functools.partial(_measure, closed_form=closed_form),
        critical_point=_critical_point if closed_form else None,
        scales=default_scales,
        name=name,
    )


# (closed form known, features eliminated) -> Model
UFM_MODELS = {
    (True, True): _model(True, True, "ufm-mse"),
    (True, False): _model(True, False, "ufm-mse-lambda_H=0"),
    (False, True): _model(False, True, "ufm-rescaled-mse"),
    (False, False): _model(False, False, "ufm"),
}


def ufm_uses_reduction(problem: UFMProblem) -> bool:
    """Features can be eliminated: (rescaled) MSE with lambda_H > 0 (checked on the host)."""
    if isinstance(problem.lambda_H, jax.core.Tracer):
        return supports_reduction(problem)
    return supports_reduction(problem) and float(problem.lambda_H) > 0


def ufm_model(problem: UFMProblem) -> Model:
    """The Model of a UFMProblem (closed form for loss='mse', unequal classes without bias
    included; feature elimination when it applies)."""
    closed_form = problem.loss == "mse" and (problem.balanced or not problem.bias)
    return UFM_MODELS[(closed_form, ufm_uses_reduction(problem))]
