"""Explore a landscape: descend from many inits, refine, certify, classify, measure.

Pipeline per run, for any :class:`Model` (the UFM is one, ``_ufm_model``): multistart
descent (the model's ``descend`` hook, or plain gradient descent / any optax optimizer)
-> refinement to a true critical point (``solvers.trust_region_newton``; in the reduced
variables when the model has a ``reduction``) -> second-order certificate and class
(``_classify``) -> the model's measurements. Each phase is one module-level compiled
program; new parameter values, keys and tolerances reuse it.

With several processes (:mod:`nc_jax.distributed`) every process runs a contiguous block of
the runs on its own devices and the blocks are gathered at the end: each run depends only
on its own key and scale, so every process ends with the single-process result.
"""

from __future__ import annotations

import functools
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nc_jax import distributed, solvers, theory, ufm
from nc_jax.landscape._classify import Classification, RunClass, certify_point
from nc_jax.landscape._descent import check_scales, default_batch_size, run_batched
from nc_jax.landscape._dispatch import host_workers, map_chunks
from nc_jax.landscape._model import Model
from nc_jax.landscape._reduced import ReducedParams, lift, reduced_objective
from nc_jax.landscape._ufm_model import ufm_model, ufm_uses_reduction
from nc_jax.ufm import UFMParams, UFMProblem

__all__ = [
    "ExplorationResult",
    "default_learning_rate",
    "refine",
    "classify",
    "explore",
    "descend",
    "memory_estimate",
    "num_parameters",
]


def default_learning_rate(problem) -> float:
    """UFM: 0.5 / (1 + lambda_b) with bias (the b-block of the Hessian is (1 + lambda_b) I),
    else 0.5; any other model: 0.1."""
    if not isinstance(problem, UFMProblem):
        return 0.1
    return 0.5 / (1.0 + float(problem.lambda_b)) if problem.bias else 0.5


def num_parameters(model: Model, *args, reduced: bool = False) -> int:
    """Number of scalars in one point of ``model`` (from shapes alone, cached per shapes); with
    ``reduced=True`` in one point of the variables that refinement and certificates work on
    (the model's reduced variables where it has a ``reduction``)."""
    leaves, treedef = jax.tree.flatten(args)
    reduce = model.reduction.reduce if reduced and model.reduction is not None else None
    return _num_parameters(model.init, reduce, treedef, tuple((np.shape(x), jnp.result_type(x)) for x in leaves))


@functools.lru_cache(maxsize=256)
def _num_parameters(init, reduce, treedef, leaf_types) -> int:
    args = jax.tree.unflatten(treedef, [jax.ShapeDtypeStruct(shape, dtype) for shape, dtype in leaf_types])
    point = init if reduce is None else lambda k, s, *a: reduce(init(k, s, *a), *a)
    shapes = jax.eval_shape(point, jax.random.key(0), 1.0, *args)
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))


def memory_estimate(model, num_inits: int, *args, num_matvecs: int = 40, batch_size: int | None = None,
                    itemsize: int = 8) -> int:
    """Bytes an exploration with ``num_inits`` runs needs, from the sizes alone.

    Stored per run: descent endpoint, refined point and measurements (about three copies
    of the parameters); working set per chunk of ``batch_size`` runs, times the chunks in
    flight at once (one per host thread, :func:`_dispatch.host_workers`): a Lanczos basis of
    ``num_matvecs`` vectors and the refinement's vectors. For a UFMProblem also the K x N
    targets and the d x d scatter. An estimate to refuse impossible sizes early.
    """
    bs = min(num_inits, host_workers() * (4 if batch_size is None else batch_size))
    if isinstance(model, UFMProblem):
        problem = model
        K, N, d = problem.num_classes, problem.num_samples, problem.feature_dim
        size = K * d + d * N + (K if problem.bias else 0)
        stored = 3 * size + d * d + 2 * K * d
        shared = 2 * K * N + theory.memory_estimate(problem) // itemsize
    else:
        size = num_parameters(model, *args)
        stored, shared = 3 * size, 0
    return int(itemsize * (num_inits * stored + bs * (num_matvecs + 20) * size + shared))


def refine(problem: UFMProblem, W, b, H=None, *, grad_tol: float = 1e-10, max_iters: int = 200):
    """Refine one UFM descent endpoint to a critical point; returns (full params, RefineResult).

    Reduced variables (W, b) for the (rescaled) MSE with lambda_H > 0 (the features are
    then H*(W, b)); the full parameters otherwise (``H`` needed).
    """
    if ufm_uses_reduction(problem):
        res = solvers.trust_region_newton(reduced_objective, ReducedParams(W, b), problem,
                                          grad_tol=grad_tol, max_iters=max_iters)
        return lift(res.params, problem), res
    res = solvers.trust_region_newton(ufm.objective, UFMParams(W, H, b), problem, grad_tol=grad_tol,
                                      max_iters=max_iters)
    return res.params, res


def classify(problem: UFMProblem, params: UFMParams, grad_norm, *, key: jax.Array, f_star=None,
             **settings) -> Classification:
    """Certificate and class of a refined UFM point (jit/vmap-able); see ``certify_point``."""
    if not isinstance(params, UFMParams):
        raise TypeError(f"params must be a UFMParams(W, H, b); got {type(params).__name__}")
    ufm.check_params(params, problem)  # e.g. b=None on a problem with bias: a clear error
    return certify_point(ufm_model(problem), params, grad_norm, problem, key=key, f_star=f_star, **settings)


class ExplorationResult(NamedTuple):
    """Everything measured in one exploration (per-run arrays have a leading run axis).

    Attributes:
      model: the Model explored; args: its arguments (``(problem,)`` for the UFM).
      f_star: the known optimum (None where none is known).
      descent: endpoints of the descent phase (status, value, grad_norm, num_steps, ...).
      params: refined points (batched pytree).
      value, grad_norm: at the refined points.
      refine_iters: trust-region iterations per run.
      classification: Classification (labels are :class:`RunClass` values).
      measurements: the model's ``measure`` at the refined points (None without it),
        plus what its ``descend`` hook measured at the descent endpoints.
      invariants: the model's ``invariant`` at the refined points (None without it).
      seconds: wall time of each phase.
    """

    model: Model
    args: tuple
    f_star: float | None
    descent: Any
    params: Any
    value: np.ndarray
    grad_norm: np.ndarray
    refine_iters: np.ndarray
    classification: Classification
    measurements: dict | None
    invariants: Any
    seconds: dict

    # --- views of the UFM's measurements (None for other models) -----------------------
    @property
    def problem(self):
        return self.args[0] if self.args and isinstance(self.args[0], UFMProblem) else None

    @property
    def regime(self) -> str | None:
        p = self.problem
        return theory.regime_name(theory.global_minimum(p).regime) if p is not None and p.loss == "mse" else None

    def _measured(self, name):
        return None if self.measurements is None else self.measurements.get(name)

    # the UFM hook's measurements: CollapseReport at the refined points, NC1 at the descent
    # endpoints, and the distances to the closed-form predictions
    report = property(lambda self: self._measured("report"))
    descent_nc1 = property(lambda self: self._measured("descent_nc1"))
    gram_spectrum_error = property(lambda self: self._measured("gram_spectrum_error"))
    self_duality_error = property(lambda self: self._measured("self_duality_error"))


def _check_positive_int(name: str, value, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")


def _check_settings(num_inits, num_steps, num_starts, num_matvecs, restarts, batch_size, engine, check_every,
                    **positive):
    _check_positive_int("num_inits", num_inits)
    _check_positive_int("check_every", check_every)
    _check_positive_int("num_steps", num_steps, minimum=0)
    _check_positive_int("num_starts", num_starts)
    _check_positive_int("num_matvecs", num_matvecs, minimum=2)
    _check_positive_int("restarts", restarts)
    if batch_size is not None:
        _check_positive_int("batch_size", batch_size)
    for name, value in positive.items():
        if value is not None and not (isinstance(value, (int, float, np.floating, np.integer))
                                      and not isinstance(value, bool) and np.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a finite number > 0; got {value!r}")
    if engine not in ("auto", "gram", "full"):
        raise ValueError(f"engine must be one of ('auto', 'gram', 'full'); got {engine!r}")


def explore(
    model,
    *args,
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
    divergence_threshold: float = 1e8,
    check_every: int = 8,
    progress: Callable[[str], None] | None = None,
) -> ExplorationResult:
    """Descend from ``num_inits`` random inits, refine, certify and classify every run.

    Args:
      model: a :class:`Model` (then ``*args`` are its arguments) or a ``UFMProblem``
        (the built-in model; no further args).
      scales: init scales (default: the model's); init i uses ``scales[i % len(scales)]``.
      engine: for models with a ``descend`` hook: ``"auto"`` (the hook decides),
        ``"gram"`` / ``"full"`` (the UFM's sufficient-statistics / full-parameter GD).
      optimizer: an optax optimizer for the descent (default: SGD with ``learning_rate``).
      batch_size: runs vmapped together per chunk in every phase (default: from the backend,
        the number of parameters and the phase, :func:`default_batch_size`; refinement and
        certificates count the reduced variables where the model has a reduction).
      check_every: the generic descent tests convergence every ``check_every`` steps.
      progress: called with a one-line message as each phase starts (descent, refinement,
        certificates, measurements) and with each phase's time; e.g. ``print``.

    Call it with float64 enabled (``jax.enable_x64``) for certificates at gradient norm
    1e-10; keys split from ``key`` make the whole exploration reproducible bit for bit.
    With several processes, call it in all of them with the same arguments: each explores
    its block of the runs (:func:`nc_jax.distributed.process_slice`) and all return the
    whole result.
    """
    _check_settings(num_inits, num_steps, num_starts, num_matvecs, restarts, batch_size, engine, check_every,
                    grad_tol=grad_tol, value_rtol=value_rtol, learning_rate=learning_rate,
                    descent_grad_tol=descent_grad_tol, divergence_threshold=divergence_threshold)
    run = _setup(model, args, num_inits=num_inits, scales=scales, learning_rate=learning_rate,
                 batch_size=batch_size, check_every=check_every, memory=dict(num_matvecs=num_matvecs))
    model, args, core, batch_size, dtype = run.model, run.args, run.core, run.batch_size, run.dtype
    refine_batch_size = run.refine_batch_size
    seconds = {}
    say = _progress_printer(progress, seconds)
    k_descent, k_cert = jax.random.split(key)
    say("descent", f"gradient descent from {num_inits} inits, at most {num_steps} steps")
    t0 = time.perf_counter()
    descent, starts, extras = _descend(run, _runs_keys(k_descent, run), num_steps, optimizer,
                                       grad_tol if descent_grad_tol is None else descent_grad_tol, engine,
                                       divergence_threshold)
    jax.block_until_ready(descent)
    seconds["descent"] = time.perf_counter() - t0

    f_star = model.optimum(*args)
    f_star = None if f_star is None else float(f_star)
    # Diverged runs are refined from a harmless point (zeros) and relabelled afterwards.
    diverged = np.asarray(descent.status) == solvers.DescentStatus.DIVERGED
    starts = jax.tree.map(lambda x: jnp.where(diverged.reshape((-1,) + (1,) * (x.ndim - 1)), 0.0, x), starts)

    say("refine", "refining the endpoints to gradient norm <= %.0e" % grad_tol)
    t0 = time.perf_counter()
    params, grad_norm, iters = map_chunks(
        _refine_program, starts, lambda part, bs: ((core, part, args, jnp.asarray(grad_tol, dtype)),
                                                   dict(batch_size=bs)), chunk=refine_batch_size)
    jax.block_until_ready(params)
    seconds["refine"] = time.perf_counter() - t0

    say("classify", "second-order certificates (Lanczos on Hessian-vector products)")
    t0 = time.perf_counter()
    numbers = (jnp.asarray(jnp.nan if f_star is None else f_star, dtype), jnp.asarray(grad_tol, dtype),
               jnp.asarray(value_rtol, dtype))
    cls = map_chunks(
        _classify_program, (params, grad_norm, _runs_keys(k_cert, run)),
        lambda part, bs: ((core, *part[:2], args, part[2], *numbers),
                          dict(has_optimum=f_star is not None, num_starts=num_starts, num_matvecs=num_matvecs,
                               restarts=restarts, batch_size=bs)), chunk=refine_batch_size)
    cls = cls._replace(label=np.where(diverged, RunClass.DIVERGED, np.asarray(cls.label)).astype(np.int32))
    seconds["classify"] = time.perf_counter() - t0

    say("measure", "measurements of the endpoints")
    t0 = time.perf_counter()
    value, measured, invariants = map_chunks(
        _measure_program, params, lambda part, bs: ((model.objective, model.measure, model.invariant, part, args),
                                                    dict(batch_size=bs)), chunk=batch_size)
    jax.block_until_ready(value)
    seconds["measure"] = time.perf_counter() - t0
    if jax.process_count() > 1:
        t0 = time.perf_counter()
        descent, params, value, grad_norm, iters, cls, measured, extras, invariants = distributed.allgather_blocks(
            (descent, params, value, grad_norm, iters, cls, measured, extras, invariants), num_inits)
        seconds["gather"] = time.perf_counter() - t0
    say(None, "")
    measurements = None if measured is None and not extras else {**(measured or {}), **extras}
    return ExplorationResult(
        model=model, args=args, f_star=f_star, descent=descent, params=params, value=np.asarray(value),
        grad_norm=np.asarray(grad_norm), refine_iters=np.asarray(iters), classification=cls,
        measurements=measurements, invariants=invariants, seconds=seconds,
    )


def _progress_printer(progress, seconds: dict):
    """``say(phase, message)``: reports the previous phase's time (from ``seconds``) and the next
    phase; ``phase=None`` closes the last one. A no-op without ``progress``."""
    if progress is None:
        return lambda phase, message: None
    last = []

    def say(phase, message):
        if last and last[-1] in seconds:
            progress(f"explore: {last[-1]} done in {seconds[last[-1]]:.1f} s")
        if phase is not None:
            last.append(phase)
            progress(f"explore: {message} ...")

    return say


class _Run(NamedTuple):
    """What every phase of one exploration shares, decided once."""

    model: Model
    args: tuple
    core: Model  # the model without hooks that compiled programs are keyed on
    num_inits: int
    runs: np.ndarray  # this process's runs (all of them in one process; padded to equal blocks)
    scales: tuple
    learning_rate: float
    hook_batch_size: int | None  # the descend hook keeps its own default
    batch_size: int  # descent and measurements
    refine_batch_size: int  # refinement and certificates
    check_every: int
    dtype: Any


def _setup(model, args, *, num_inits, scales, learning_rate, batch_size, check_every, memory) -> _Run:
    """Model and arguments (a UFMProblem becomes its Model), defaults, and the memory check
    (the settings were checked by the caller)."""
    from nc_jax.io import check_memory

    if isinstance(model, UFMProblem):
        if args:
            raise TypeError("explore(problem) takes no further positional arguments")
        args = (model,)
        model = ufm_model(model)
    elif not isinstance(model, Model):
        raise TypeError(f"model must be a landscape.Model or a UFMProblem; got {type(model).__name__}")
    learning_rate = default_learning_rate(args[0] if args else None) if learning_rate is None else learning_rate
    scales = check_scales(model.default_scales(*args) if scales is None else scales)
    sized = (args[0],) if len(args) == 1 and isinstance(args[0], UFMProblem) else (model, *args)
    check_memory(memory_estimate(sized[0], num_inits, *sized[1:], batch_size=batch_size, **memory),
                 f"exploring {model.name} with num_inits={num_inits}")
    chunk = default_batch_size(num_inits, num_parameters(model, *args)) if batch_size is None else batch_size
    refine_chunk = (default_batch_size(num_inits, num_parameters(model, *args, reduced=True), phase="refine")
                    if batch_size is None else batch_size)
    # compiled programs are keyed on what they use: models that share an objective, init and
    # reduction (e.g. with and without a known optimum) share them
    core = _core_model(model.objective, model.init, model.reduction)
    return _Run(model, args, core, num_inits, _process_runs(num_inits), scales, learning_rate, batch_size, chunk,
                refine_chunk, check_every, jnp.result_type(float))


def _process_runs(num_inits: int) -> np.ndarray:
    """Indices of this process's runs: its block of :func:`nc_jax.distributed.process_slice`,
    padded with copies of the last run to the common block size (equal shapes to gather)."""
    block = distributed.process_slice(num_inits)
    return np.minimum(np.arange(block.start, block.start + distributed.process_block(num_inits)), num_inits - 1)


def _runs_keys(key, run: _Run):
    """Keys of this process's runs among ``split(key, num_inits)`` (all of them in one process)."""
    keys = jax.random.split(key, run.num_inits)
    return keys if jax.process_count() == 1 else keys[run.runs]


def descend(model, *args, key: jax.Array, num_inits: int = 64, scales=None, num_steps: int = 2000,
            learning_rate: float | None = None, optimizer: optax.GradientTransformation | None = None,
            grad_tol: float = 1e-10, engine: str = "auto", batch_size: int | None = None,
            divergence_threshold: float = 1e8, check_every: int = 8):
    """The explorer's first phase alone: descent from ``num_inits`` random inits.

    Same arguments and the same runs as :func:`explore` (its descent endpoints for the same
    key); returns the batched endpoints (``params``, ``value``, ``grad_norm``, ``status``
    (:class:`~nc_jax.solvers.DescentStatus`), ``num_steps``).
    """
    _check_settings(num_inits, num_steps, 1, 2, 1, batch_size, engine, check_every, grad_tol=grad_tol,
                    learning_rate=learning_rate, divergence_threshold=divergence_threshold)
    run = _setup(model, args, num_inits=num_inits, scales=scales, learning_rate=learning_rate,
                 batch_size=batch_size, check_every=check_every, memory={})
    k_descent, _ = jax.random.split(key)  # as explore splits it
    out = _descend(run, _runs_keys(k_descent, run), num_steps, optimizer, grad_tol, engine,
                   divergence_threshold)[0]
    return distributed.allgather_blocks(out, num_inits) if jax.process_count() > 1 else out


def _descend(run: _Run, keys, num_steps, optimizer, grad_tol, engine, divergence_threshold):
    """(descent endpoints, refinement starts, extra measurements) of the runs ``run.runs`` (one
    key each) from the hook or plain descent."""
    model, args, dtype = run.model, run.args, run.dtype
    # run i's scale is scales[i % len(scales)] (the Model contract)
    scales = np.resize(np.asarray(run.scales, dtype), run.num_inits)[run.runs]
    if model.descend is not None:
        return model.descend(keys=keys, scales=scales, num_steps=num_steps,
                             learning_rate=run.learning_rate, optimizer=optimizer, grad_tol=grad_tol, engine=engine,
                             batch_size=run.hook_batch_size, divergence_threshold=divergence_threshold, dtype=dtype,
                             args=args)
    if engine == "gram":
        raise ValueError(f"engine='gram' needs a model with a descend hook (the UFM); {model.name} has none")
    # plain Python numbers and numpy in, conversions inside the program: a call's host
    # overhead stays well under a millisecond
    numbers = (float(run.learning_rate), float(grad_tol), float(divergence_threshold), int(num_steps))
    out = map_chunks(_descent_program, (keys, scales),
                     lambda part, bs: ((run.core, *part, args, *numbers),
                                       dict(optimizer=optimizer, batch_size=bs, check_every=run.check_every)),
                     chunk=run.batch_size)
    return out, out.params, {}


@functools.lru_cache(maxsize=None)
def _core_model(objective, init, reduction) -> Model:
    return Model(objective, init, reduction=reduction, name="core")


# Module-level compiled programs: one compilation per model, argument shapes and static
# settings; new parameter values (pytree leaves), keys and tolerances reuse it.


def _one_descent(model, key, scale, args, learning_rate, grad_tol, divergence_threshold, num_steps, optimizer,
                 check_every):
    """One run of the generic descent (traced inside the programs below)."""
    dtype = jnp.result_type(scale)
    learning_rate, grad_tol, divergence_threshold = (jnp.asarray(x, dtype) for x in
                                                     (learning_rate, grad_tol, divergence_threshold))
    opt = optax.sgd(learning_rate) if optimizer is None else optimizer
    params = model.init(key, scale, *args)
    return solvers.gradient_descent(model.objective, params, *args, optimizer=opt,
                                    num_steps=jnp.asarray(num_steps, jnp.int32), grad_tol=grad_tol,
                                    divergence_threshold=divergence_threshold, check_every=check_every)


@functools.partial(jax.jit, static_argnames=("model", "optimizer", "batch_size", "check_every"))
def _descent_program(model, keys, scales, args, learning_rate, grad_tol, divergence_threshold, num_steps, *,
                     optimizer, batch_size, check_every):
    def one(ks):
        return _one_descent(model, ks[0], ks[1], args, learning_rate, grad_tol, divergence_threshold, num_steps,
                            optimizer, check_every)

    return run_batched(one, (keys, scales), batch_size=batch_size)


@functools.partial(jax.jit, static_argnames=("model", "batch_size"))
def _refine_program(model, starts, args, grad_tol, *, batch_size):
    def one(start):
        if model.reduction is not None:
            x = model.reduction.reduce(start, *args)
            res = solvers.trust_region_newton(model.reduction.objective, x, *args, grad_tol=grad_tol)
            return model.reduction.lift(res.params, *args), res.grad_norm, res.num_iters
        res = solvers.trust_region_newton(model.objective, start, *args, grad_tol=grad_tol)
        return res.params, res.grad_norm, res.num_iters

    return run_batched(one, starts, batch_size=batch_size)


@functools.partial(jax.jit, static_argnames=("model", "has_optimum", "num_starts", "num_matvecs", "restarts",
                                             "batch_size"))
def _classify_program(model, params, grad_norm, args, keys, f_star, grad_tol, value_rtol, *,
                      has_optimum, num_starts, num_matvecs, restarts, batch_size):
    def one(a):
        p, g, k = a
        return certify_point(model, p, g, *args, key=k, f_star=f_star if has_optimum else None, grad_tol=grad_tol,
                             value_rtol=value_rtol, num_starts=num_starts, num_matvecs=num_matvecs,
                             restarts=restarts)

    return run_batched(one, (params, grad_norm, keys), batch_size=batch_size)


@functools.partial(jax.jit, static_argnames=("objective", "measure", "invariant", "batch_size"))
def _measure_program(objective, measure, invariant, params, args, *, batch_size=None):
    # chunked like the other phases: a vmap of all runs' SVDs at once was seen to stall
    # XLA:CPU at 256 runs
    def one(p):
        measured = None if measure is None else measure(p, *args)
        inv = None if invariant is None else invariant(p, *args)
        return objective(p, *args), measured, inv

    return run_batched(one, params, batch_size=batch_size)
