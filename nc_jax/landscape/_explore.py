"""Explore a UFM landscape: descend from many inits, refine, certify and classify.

Pipeline per run: multistart descent (``_descent``) -> refinement to a true critical
point (trust-region Newton-CG, ``_refine``; in the reduced variables (W, b) when the
features can be eliminated, ``_reduced``) -> second-order certificate (Lanczos,
``nc_jax.hessian.certify_saddle``) -> class, NC measurements and the distance to the
prediction of Theorem 3.1.

Classes (``CLASS_NAMES``):
  * ``global_minimum``: converged, Hessian PSD to rounding, value = f* (closed form).
  * ``strict_saddle``: converged and a certified direction of negative curvature.
  * ``spurious_local_minimum``: converged, PSD, value above f*. The theory says this
    never happens for the vanilla MSE: such a run is kept and reported loudly.
  * ``below_closed_form``: converged with a value below f*: the closed form would be
    wrong. Also reported loudly.
  * ``local_minimum``: converged and PSD where no closed form is known (rescaled MSE, CE).
  * ``not_converged``: refinement did not reach the gradient tolerance.
  * ``diverged``: descent produced non-finite or exploding values.
  * ``inconclusive``: converged but the certificate could not decide.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nc_jax import hessian, metrics, theory, ufm
from nc_jax.landscape._descent import DIVERGED, DescentResult, default_scales, multistart_descent, run_batched
from nc_jax.landscape._reduced import ReducedParams, lift, optimal_features, reduced_objective, supports_reduction
from nc_jax.landscape._refine import trust_region_newton
from nc_jax.ufm import UFMParams, UFMProblem

__all__ = [
    "CLASS_NAMES",
    "GLOBAL_MINIMUM",
    "STRICT_SADDLE",
    "SPURIOUS_LOCAL_MINIMUM",
    "BELOW_CLOSED_FORM",
    "LOCAL_MINIMUM",
    "NOT_CONVERGED",
    "DIVERGED_RUN",
    "INCONCLUSIVE",
    "Classification",
    "ExplorationResult",
    "default_scales",
    "default_learning_rate",
    "refine",
    "classify",
    "explore",
    "class_names",
    "memory_estimate",
]

CLASS_NAMES = (
    "global_minimum",
    "strict_saddle",
    "spurious_local_minimum",
    "below_closed_form",
    "local_minimum",
    "not_converged",
    "diverged",
    "inconclusive",
)
(
    GLOBAL_MINIMUM,
    STRICT_SADDLE,
    SPURIOUS_LOCAL_MINIMUM,
    BELOW_CLOSED_FORM,
    LOCAL_MINIMUM,
    NOT_CONVERGED,
    DIVERGED_RUN,
    INCONCLUSIVE,
) = range(len(CLASS_NAMES))


def _check_positive_int(name: str, value, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")


def class_names(codes) -> list[str]:
    """Host-side names of class codes."""
    return [CLASS_NAMES[int(c)] for c in np.asarray(codes).reshape(-1)]


def default_learning_rate(problem: UFMProblem) -> float:
    """0.5 / (1 + lambda_b) with bias (the b-block of the Hessian is (1 + lambda_b) I), else 0.5."""
    return 0.5 / (1.0 + float(problem.lambda_b)) if problem.bias else 0.5


def memory_estimate(problem: UFMProblem, num_inits: int, *, num_matvecs: int = 40,
                    batch_size: int | None = None, itemsize: int = 8) -> int:
    """Bytes an exploration of ``problem`` with ``num_inits`` runs needs, from the sizes alone.

    Stored per run: descent endpoint, refined point and measurements (about three copies
    of (W, H, b) plus the d x d scatter); working set per chunk of ``batch_size`` runs: a
    Lanczos basis of ``num_matvecs`` vectors and the refinement's vectors; shared: the
    K x N targets and the closed form. An estimate to refuse impossible sizes early, not
    an exact account.
    """
    K, N, d = problem.num_classes, problem.num_samples, problem.feature_dim
    size = K * d + d * N + (K if problem.bias else 0)
    stored = 3 * size + d * d + 2 * K * d
    bs = min(num_inits, 4 if batch_size is None else batch_size)
    working = bs * (num_matvecs + 20) * size
    shared = 2 * K * N + K * K + 4 * K * min(K, d)
    return int(itemsize * (num_inits * stored + working + shared))


def _uses_reduction(problem: UFMProblem) -> bool:
    # Under tracing lambda_H is abstract: explore() checks lambda_H > 0 before tracing.
    if isinstance(problem.lambda_H, jax.core.Tracer):
        return supports_reduction(problem)
    return supports_reduction(problem) and float(problem.lambda_H) > 0


def refine(problem: UFMProblem, W, b, H=None, *, grad_tol: float = 1e-10, max_iters: int = 200):
    """Refine one descent endpoint to a critical point; returns (full params, RefineResult).

    Reduced variables (W, b) for the (rescaled) MSE with lambda_H > 0 (the features are
    then H*(W, b)); the full parameters otherwise (``H`` needed).
    """
    if _uses_reduction(problem):
        res = trust_region_newton(reduced_objective, ReducedParams(W, b), problem,
                                  grad_tol=grad_tol, max_iters=max_iters)
        return lift(res.params, problem), res
    res = trust_region_newton(ufm.objective, UFMParams(W, H, b), problem,
                              grad_tol=grad_tol, max_iters=max_iters)
    return res.params, res


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


def classify(
    problem: UFMProblem,
    params: UFMParams,
    grad_norm,
    *,
    key: jax.Array,
    f_star=None,
    grad_tol: float = 1e-10,
    value_rtol: float = 1e-9,
    num_starts: int = 3,
    num_matvecs: int = 40,
    restarts: int = 20,
    criticality_slack: float = 1e3,
) -> Classification:
    """Second-order certificate and class of a refined point (jit/vmap-able).

    The certificate runs on the reduced objective F(W, b) when the features can be
    eliminated (same number of negative eigenvalues as the full Hessian, by the
    Haynsworth inertia formula); the negative direction is then lifted to the full
    space and its Rayleigh quotient recomputed with a full HVP as a second witness.
    """
    if not isinstance(params, UFMParams):
        raise TypeError(f"params must be a UFMParams(W, H, b); got {type(params).__name__}")
    ufm._check_shapes(params, problem)  # e.g. b=None on a problem with bias: a clear error, not a NoneType one
    # Slack for approximate criticality: at a point with gradient g the Hessian differs
    # from the one at the nearby critical point by (Hessian Lipschitz constant) x
    # (distance); along the symmetry orbits (W -> W Q) the curvature is O(||g||) exactly.
    atol = criticality_slack * grad_norm
    if _uses_reduction(problem):
        x = ReducedParams(params.W, params.b)
        cert = hessian.certify_saddle(reduced_objective, x, problem, key=key, num_starts=num_starts,
                                      num_matvecs=num_matvecs, restarts=restarts, atol=atol)
        y = cert.direction
        _, dH = jax.jvp(lambda z: optimal_features(z, problem), (x,), (y,))
        v = UFMParams(y.W, dH, y.b)
    else:
        cert = hessian.certify_saddle(ufm.objective, params, problem, key=key, num_starts=num_starts,
                                      num_matvecs=num_matvecs, restarts=restarts, atol=atol)
        v = cert.direction
    Hv = hessian.hvp(ufm.objective, params, v, problem)
    vv = sum(jnp.vdot(a, a) for a in jax.tree.leaves(v))
    vHv = sum(jnp.vdot(a, c) for a, c in zip(jax.tree.leaves(v), jax.tree.leaves(Hv)))
    full_rq = vHv / vv
    value = ufm.objective(params, problem)
    converged = grad_norm <= grad_tol
    saddle = (cert.verdict == hessian.STRICT_SADDLE) & (full_rq < -cert.tau)
    psd = cert.verdict == hessian.MINIMUM
    if f_star is None:
        minimum_label = jnp.int32(LOCAL_MINIMUM)
    else:
        tol = value_rtol * jnp.maximum(jnp.abs(f_star), 1.0)
        minimum_label = jnp.where(
            value > f_star + tol, SPURIOUS_LOCAL_MINIMUM, jnp.where(value < f_star - tol, BELOW_CLOSED_FORM, GLOBAL_MINIMUM)
        )
    label = jnp.where(
        ~jnp.isfinite(value),
        DIVERGED_RUN,
        jnp.where(
            ~converged,
            NOT_CONVERGED,
            jnp.where(saddle, STRICT_SADDLE, jnp.where(psd, minimum_label, INCONCLUSIVE)),
        ),
    ).astype(jnp.int32)
    return Classification(label, cert.verdict, cert.rayleigh_quotient, full_rq, cert.tau, cert.lambda_min,
                          cert.residual, cert.num_agree, cert.num_hvps)


class ExplorationResult(NamedTuple):
    """Everything measured in one exploration (per-run arrays have a leading run axis).

    Attributes:
      problem: the UFMProblem.
      f_star: the closed-form optimum (None where none is known).
      regime: Theorem 3.1 regime name (None where no closed form).
      descent: endpoints of the descent phase (DescentResult).
      descent_nc1: NC1 at the descent endpoints.
      params: refined points (UFMParams, batched).
      value, grad_norm: at the refined points.
      refine_iters: trust-region iterations per run.
      classification: Classification (labels in ``CLASS_NAMES``).
      report: metrics.CollapseReport at the refined points (batched).
      gram_spectrum_error: max |normalised class-mean Gram spectrum - prediction|.
      self_duality_error: ||Hbar - c W^T||_F / ||W||_F with c = sqrt(lambda_W/(lambda_H n)).
      seconds: wall time of each phase.
    """

    problem: UFMProblem
    f_star: float | None
    regime: str | None
    descent: DescentResult
    descent_nc1: np.ndarray
    params: UFMParams
    value: np.ndarray
    grad_norm: np.ndarray
    refine_iters: np.ndarray
    classification: Classification
    report: Any
    gram_spectrum_error: np.ndarray
    self_duality_error: np.ndarray
    seconds: dict


def _nc1_from_statistics(class_means, within_gram, num_samples):
    """NC1 = tr(Sigma_W Sigma_B^+)/K from Hbar (d x K) and S = R R^T (rank <= K-1 pinv).

    With Sigma_B = C C^T / K for the centred means C = U diag(s) V^T,
    Sigma_B^+ = K U diag(1/s^2) U^T, so NC1 = sum_j u_j^T Sigma_W u_j / s_j^2.
    """
    d, K = class_means.shape
    centered = class_means - class_means.mean(axis=1, keepdims=True)
    U, s, _ = jnp.linalg.svd(centered, full_matrices=False)
    eps = jnp.finfo(class_means.dtype).eps
    keep = (s > max(d, K) * eps * s[0]) & (jnp.arange(s.shape[0]) < K - 1)
    sigma_w = within_gram / num_samples
    # u^T Sigma_W u >= 0; the recurrence for S can leave rounding-size negative parts
    quad = jnp.maximum(jnp.einsum("ij,ik,kj->j", U, sigma_w, U), 0.0)
    # Sigma_B = centered centered^T / K, so Sigma_B^+ = K U diag(1/s^2) U^T on the kept part
    return jnp.sum(jnp.where(keep, quad / jnp.where(keep, s, 1.0) ** 2, 0.0))


def _prediction_errors(problem: UFMProblem, params: UFMParams, pred):
    W = params.W
    means = ufm.class_means(params.H, problem.num_classes)
    gram = means.T @ means
    norm = jnp.linalg.norm(gram)
    spectrum = jnp.sort(jnp.linalg.eigvalsh(gram / jnp.where(norm > 0, norm, 1.0)))[::-1]
    spec_err = jnp.max(jnp.abs(spectrum - pred.gram_spectrum))
    wn = jnp.linalg.norm(W)
    dual_err = jnp.linalg.norm(means - pred.self_duality * W.T) / jnp.where(wn > 0, wn, 1.0)
    return spec_err, dual_err


def explore(
    problem: UFMProblem,
    *,
    key: jax.Array,
    num_inits: int = 64,
    scales=None,
    num_steps: int = 2000,
    learning_rate: float | None = None,
    optimizer: optax.GradientTransformation | None = None,
    grad_tol: float = 1e-10,
    descent_grad_tol: float | None = None,
    engine: str = "auto",
    batch_size: int | None = None,
    num_starts: int = 3,
    num_matvecs: int = 40,
    restarts: int = 20,
    value_rtol: float = 1e-9,
) -> ExplorationResult:
    """Descend from ``num_inits`` random inits, refine, certify and classify every run.

    Call it with float64 enabled (``jax.enable_x64``) for certificates at gradient norm
    1e-10; keys split from ``key`` make the whole exploration reproducible bit for bit.
    """
    import time

    from nc_jax.io import check_memory

    _check_positive_int("num_inits", num_inits)
    _check_positive_int("num_steps", num_steps, minimum=0)
    _check_positive_int("num_starts", num_starts)
    _check_positive_int("num_matvecs", num_matvecs, minimum=2)
    _check_positive_int("restarts", restarts)
    if batch_size is not None:
        _check_positive_int("batch_size", batch_size)
    for name, value in (("grad_tol", grad_tol), ("value_rtol", value_rtol), ("learning_rate", learning_rate),
                        ("descent_grad_tol", descent_grad_tol)):
        if value is not None and not (isinstance(value, (int, float, np.floating, np.integer))
                                      and not isinstance(value, bool) and np.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a finite number > 0; got {value!r}")
    if engine not in ("auto", "gram", "full"):
        raise ValueError(f"engine must be one of ('auto', 'gram', 'full'); got {engine!r}")
    check_memory(memory_estimate(problem, num_inits, num_matvecs=num_matvecs, batch_size=batch_size),
                 f"exploring K={problem.num_classes} n={problem.n_per_class} d={problem.feature_dim} "
                 f"with num_inits={num_inits}")
    if not _uses_reduction(problem) and (engine == "gram" or (engine == "auto" and problem.loss == "mse" and optimizer is None)):
        raise ValueError(
            "with lambda_H = 0 the features cannot be eliminated: use engine='full' "
            f"(got engine={engine!r}, loss={problem.loss!r}, lambda_H={problem.lambda_H})"
        )
    seconds = {}
    scales = default_scales(problem) if scales is None else scales
    learning_rate = default_learning_rate(problem) if learning_rate is None else learning_rate
    k_descent, k_cert = jax.random.split(key)
    t0 = time.perf_counter()
    descent = multistart_descent(
        problem, key=k_descent, num_inits=num_inits, scales=scales, num_steps=num_steps,
        learning_rate=learning_rate, optimizer=optimizer,
        grad_tol=grad_tol if descent_grad_tol is None else descent_grad_tol,
        engine=engine, batch_size=batch_size,
    )
    jax.block_until_ready(descent)
    seconds["descent"] = time.perf_counter() - t0

    has_closed_form = problem.loss == "mse"
    f_star = float(theory.global_minimum(problem).value) if has_closed_form else None
    regime = theory.regime_name(theory.global_minimum(problem).regime) if has_closed_form else None

    # Diverged runs are refined from a harmless point and relabelled afterwards.
    diverged = np.asarray(descent.status) == DIVERGED
    W0 = jnp.where(diverged[:, None, None], 0.0, descent.W)
    b0 = None if descent.b is None else jnp.where(diverged[:, None], 0.0, descent.b)
    H0 = None if descent.H is None else jnp.where(diverged[:, None, None], 0.0, descent.H)

    t0 = time.perf_counter()
    if H0 is None and not _uses_reduction(problem):
        raise ValueError("refinement in the full space needs the full engine (engine='full')")
    dtype = W0.dtype
    params, grad_norm, iters = _refine_program(problem, W0, b0, H0, jnp.asarray(grad_tol, dtype), batch_size=batch_size)
    jax.block_until_ready(params)
    seconds["refine"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    keys = jax.random.split(k_cert, num_inits)
    fs = jnp.asarray(jnp.nan if f_star is None else f_star, dtype)
    cls = _classify_program(
        problem, params, grad_norm, keys, fs, jnp.asarray(grad_tol, dtype), jnp.asarray(value_rtol, dtype),
        has_closed_form=has_closed_form, num_starts=num_starts, num_matvecs=num_matvecs,
        restarts=restarts, batch_size=batch_size,
    )
    label = np.where(diverged, DIVERGED_RUN, np.asarray(cls.label)).astype(np.int32)
    cls = cls._replace(label=label)
    seconds["classify"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    report, nc1_descent, spec_err, dual_err, value = _measure_program(
        problem, params, descent.class_means, descent.within_gram, has_closed_form=has_closed_form,
        batch_size=batch_size,
    )
    jax.block_until_ready(report)
    seconds["measure"] = time.perf_counter() - t0
    return ExplorationResult(
        problem=problem, f_star=f_star, regime=regime, descent=descent,
        descent_nc1=np.asarray(nc1_descent), params=params, value=np.asarray(value),
        grad_norm=np.asarray(grad_norm), refine_iters=np.asarray(iters), classification=cls,
        report=report, gram_spectrum_error=np.asarray(spec_err), self_duality_error=np.asarray(dual_err),
        seconds=seconds,
    )


# Module-level compiled programs: one compilation per problem sizes and static
# settings; new lambdas (pytree leaves), keys and tolerances reuse it.


@functools.partial(jax.jit, static_argnames=("batch_size",))
def _refine_program(problem, W, b, H, grad_tol, *, batch_size):
    def one(args):
        params, res = refine(problem, *args, grad_tol=grad_tol)
        return params, res.grad_norm, res.num_iters

    return run_batched(one, (W, b, H), batch_size=batch_size)


@functools.partial(
    jax.jit, static_argnames=("has_closed_form", "num_starts", "num_matvecs", "restarts", "batch_size")
)
def _classify_program(problem, params, grad_norm, keys, f_star, grad_tol, value_rtol, *,
                      has_closed_form, num_starts, num_matvecs, restarts, batch_size):
    def one(args):
        p, g, k = args
        return classify(problem, p, g, key=k, f_star=f_star if has_closed_form else None,
                        grad_tol=grad_tol, value_rtol=value_rtol, num_starts=num_starts,
                        num_matvecs=num_matvecs, restarts=restarts)

    return run_batched(one, (params, grad_norm, keys), batch_size=batch_size)


@functools.partial(jax.jit, static_argnames=("has_closed_form", "batch_size"))
def _measure_program(problem, params, class_means, within_gram, *, has_closed_form, batch_size=None):
    # chunked like the other phases: a vmap of all runs' SVDs at once was seen to stall
    # XLA:CPU at 256 runs
    K, n = problem.num_classes, problem.n_per_class
    labels_ = ufm.labels(problem)
    pred = theory.nc_predictions(problem) if has_closed_form else None

    def one(args):
        p, means, within = args
        report = metrics.collapse_report(p.W, p.b, p.H, labels_, num_classes=K, max_class_size=n)
        nc1_descent = _nc1_from_statistics(means, within, problem.num_samples)
        if has_closed_form:
            spec_err, dual_err = _prediction_errors(problem, p, pred)
        else:
            spec_err = dual_err = jnp.full((), jnp.nan, p.W.dtype)
        return report, nc1_descent, spec_err, dual_err, ufm.objective(p, problem)

    return run_batched(one, (params, class_means, within_gram), batch_size=batch_size)
