"""Multistart descent on the UFM: many random initializations, one compiled program.

Two engines compute the same gradient-descent iterates:

* ``"full"``: any loss and any optax optimizer on the full parameters (W, H, b).
* ``"gram"``: plain gradient descent on the (vanilla) MSE loss through exact sufficient
  statistics. GD maps every feature column of class k by the same affine map
  h <- A h + c_k with A = (1 - lr lambda_H) I - (lr/N) W^T W, so with
  H = Hbar E + R (class means Hbar, within-class part R with zero class means) the
  iterates of (W, b, Hbar) depend on R only through S = R R^T, and S <- A S A^T.
  A step then costs O(K d^2 + K^2 d) instead of O(K d N), the iterates of W, b and Hbar
  are those of the full engine up to rounding, and R_t = A_{t-1} ... A_0 R_0 is never
  formed (refinement and classification need only W and b; see ``_reduced``).

Batching over initializations: ``batch_size`` inits are vmapped together (on XLA:CPU
batched dots with transposed operands are slow, so small chunks win there; on
accelerators one chunk of all inits wins). On a multi-core CPU the chunks are concurrent
calls of one compiled program, one thread per core (``_dispatch.map_chunks``); elsewhere
they run one after another under ``lax.map`` in one program, and with several local
devices the inits are split across them with ``shard_map``.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, PartitionSpec

from nc_jax import metrics, solvers, ufm
from nc_jax.landscape._dispatch import map_chunks
from nc_jax.solvers import DescentStatus
from nc_jax.ufm import UFMParams, UFMProblem

__all__ = [
    "DESCENT_STATUS_NAMES",
    "DescentResult",
    "GramState",
    "init_batch",
    "gradient_descent",
    "gram_gradient_descent",
    "multistart_descent",
    "descent_from_keys",
    "default_batch_size",
    "default_scales",
]

RUNNING, CONVERGED, MAX_STEPS, DIVERGED = DescentStatus  # private short names for traced code
DESCENT_STATUS_NAMES = tuple(m.name.lower() for m in DescentStatus)


class DescentResult(NamedTuple):
    """Endpoint of one descent run (leading batch axis when batched).

    Attributes:
      W, b: classifier and bias at the endpoint (b None without bias).
      class_means: Hbar (d x K) at the endpoint.
      within_gram: S = R R^T (d x d), the within-class scatter (N Sigma_W).
      H: the full features (d x N) for the ``"full"`` engine, None for ``"gram"``.
      value: objective value at the endpoint.
      grad_norm: Euclidean norm of the full gradient at the endpoint.
      status: CONVERGED (grad_norm <= grad_tol), MAX_STEPS or DIVERGED.
      num_steps: steps taken.
    """

    W: jax.Array
    b: jax.Array | None
    class_means: jax.Array
    within_gram: jax.Array
    H: jax.Array | None
    value: jax.Array
    grad_norm: jax.Array
    status: jax.Array
    num_steps: jax.Array


def gradient_descent(
    problem: UFMProblem,
    params: UFMParams,
    *,
    optimizer: optax.GradientTransformation,
    num_steps: int,
    grad_tol: float,
    divergence_threshold: float = 1e8,
) -> DescentResult:
    """``solvers.gradient_descent`` on the full UFM objective, with the endpoint's class
    means and within-class scatter."""
    run = solvers.gradient_descent(ufm.objective, params, problem, optimizer=optimizer, num_steps=num_steps,
                                   grad_tol=grad_tol, divergence_threshold=divergence_threshold)
    s = gram_state(run.params, problem)
    return DescentResult(s.W, s.b, s.class_means, s.within_gram, run.params.H, run.value, run.grad_norm,
                         run.status, run.num_steps)


class GramState(NamedTuple):
    """Sufficient statistics of the MSE UFM: W, b, class means Hbar (d x K), S = R R^T."""

    W: jax.Array
    b: jax.Array | None
    class_means: jax.Array
    within_gram: jax.Array


class _GramRun(NamedTuple):
    stats: GramState
    step: jax.Array
    status: jax.Array
    value: jax.Array
    grad_norm: jax.Array


def gram_state(params: UFMParams, problem: UFMProblem) -> GramState:
    means = metrics.class_means(params.H, ufm.labels(problem), num_classes=problem.num_classes)
    R = params.H - ufm.repeat_class_columns(means, problem)
    return GramState(params.W, params.b, means, R @ R.T)


def _gram_value_and_grad(s: GramState, problem: UFMProblem, WS):
    """f and its gradient in (W, b, Hbar) plus ||grad_H f||^2, from the statistics alone.

    ``WS`` = W S (K x d) is shared with the S update; nothing here costs O(d^3).
    """
    K, n, N = problem.num_classes, problem.n_per_class, problem.num_samples
    dtype = s.W.dtype
    lw, lh, lb = (jnp.asarray(getattr(problem, f), dtype) for f in ("lambda_W", "lambda_H", "lambda_b"))
    W, Hb, S = s.W, s.class_means, s.within_gram
    eye = jnp.eye(K, dtype=dtype)
    Zbar = W @ Hb - eye  # K x K: residual of the class means (column k)
    if problem.bias:
        Zbar = Zbar + s.b[:, None]
    WSWt = WS @ W.T  # K x K
    value = (n * jnp.sum(Zbar**2) + jnp.trace(WSWt)) / (2 * N)
    value = value + 0.5 * lw * jnp.sum(W**2) + 0.5 * lh * (n * jnp.sum(Hb**2) + jnp.trace(S))
    # grad_W = (Z H^T)/N + lw W with Z H^T = n Zbar Hbar^T + W S
    gW = (n * Zbar @ Hb.T + WS) / N + lw * W
    # grad of each class-k column: W^T zbar_k / N + lh hbar_k; of the within part: L R
    gHb = W.T @ Zbar / N + lh * Hb
    # ||L R||^2 = tr(L S L) with L = W^T W / N + lh I, expanded into K x K traces:
    # tr(W S W^T W W^T)/N^2 + 2 lh tr(W S W^T)/N + lh^2 tr(S)
    within_sq = (jnp.sum(WSWt * (W @ W.T)) / N**2 + 2 * lh * jnp.trace(WSWt) / N
                 + lh**2 * jnp.trace(S))
    grad_sq = jnp.sum(gW**2) + n * jnp.sum(gHb**2) + within_sq
    gb = None
    if problem.bias:
        value = value + 0.5 * lb * jnp.sum(s.b**2)
        gb = n * jnp.sum(Zbar, axis=1) / N + lb * s.b
        grad_sq = grad_sq + jnp.sum(gb**2)
    return value, (gW, gb, gHb), grad_sq


def gram_gradient_descent(
    problem: UFMProblem,
    params: UFMParams,
    *,
    learning_rate: float,
    num_steps: int,
    grad_tol: float,
    divergence_threshold: float = 1e8,
) -> DescentResult:
    """Plain gradient descent on the MSE UFM through (W, b, Hbar, S); see module doc."""
    if problem.loss != "mse":
        raise ValueError(f"the gram engine needs loss='mse'; got loss={problem.loss!r}")
    N = problem.num_samples
    dtype = params.W.dtype
    lr = jnp.asarray(learning_rate, dtype)
    lh = jnp.asarray(problem.lambda_H, dtype)
    n = problem.n_per_class

    def step(state: _GramRun) -> _GramRun:
        s = state.stats
        U = s.W @ s.within_gram  # K x d, shared by the gradient and the S update
        value, (gW, gb, gHb), grad_sq = _gram_value_and_grad(s, problem, U)
        grad_norm = jnp.sqrt(grad_sq)
        norm_sq = jnp.sum(s.W**2) + n * jnp.sum(s.class_means**2) + jnp.trace(s.within_gram)
        if problem.bias:
            norm_sq = norm_sq + jnp.sum(s.b**2)
        status = jnp.where(
            solvers.diverged(norm_sq, value, grad_sq, divergence_threshold),
            DIVERGED,
            jnp.where(grad_norm <= grad_tol, CONVERGED, jnp.where(state.step >= num_steps, MAX_STEPS, RUNNING)),
        ).astype(jnp.int32)
        # S <- A S A^T, A = alpha I - beta W^T W (symmetric), expanded to avoid d x d x d work
        alpha, beta = 1.0 - lr * lh, lr / N
        W, S = s.W, s.within_gram
        CS = W.T @ U  # W^T W S
        CSC = W.T @ ((U @ W.T) @ W)
        S_new = alpha**2 * S - alpha * beta * (CS + CS.T) + beta**2 * CSC
        S_new = 0.5 * (S_new + S_new.T)
        new = GramState(
            W - lr * gW,
            None if gb is None else s.b - lr * gb,
            s.class_means - lr * gHb,
            S_new,
        )
        keep = status != RUNNING
        s = jax.tree.map(lambda old, nw: jnp.where(keep, old, nw), s, new)
        return _GramRun(s, state.step + (~keep).astype(jnp.int32), status, value, grad_norm)

    zero = jnp.zeros((), dtype)
    init = _GramRun(gram_state(params, problem), jnp.zeros((), jnp.int32), jnp.int32(RUNNING), zero, zero)
    out = solvers.run_until(step, lambda r: r.status != RUNNING, init)
    s = out.stats
    return DescentResult(s.W, s.b, s.class_means, s.within_gram, None, out.value, out.grad_norm, out.status,
                         out.step)


def check_scales(scales) -> np.ndarray:
    """Init scales as a flat float64 array; a ValueError unless non-empty, finite and >= 0."""
    s = np.asarray(scales, dtype=np.float64).reshape(-1)
    if s.size == 0 or np.any(~np.isfinite(s)) or np.any(s < 0):
        raise ValueError(f"scales must be a non-empty list of finite values >= 0; got {scales!r}")
    return s


def init_batch(key: jax.Array, problem: UFMProblem, scales, num_inits: int, *, dtype=None) -> UFMParams:
    """``num_inits`` initializations; init i uses ``scales[i % len(scales)]`` and key i."""
    scales = check_scales(scales)
    return _inits_from_keys(problem, jax.random.split(key, num_inits), np.resize(scales, num_inits), dtype)


def _inits_from_keys(problem: UFMProblem, keys, scales, dtype=None) -> UFMParams:
    """One initialization per key, run i scaled by ``scales[i]`` (any subset of the runs of
    :func:`init_batch`: each run depends on its own key and scale only)."""
    dtype = jnp.result_type(float) if dtype is None else dtype
    per_init = jnp.asarray(scales, dtype)
    return jax.vmap(lambda k, s: jax.tree.map(lambda x: s * x, ufm.init_params(k, problem, 1.0, dtype=dtype)))(
        keys, per_init
    )


def default_scales(problem: UFMProblem) -> tuple[float, ...]:
    """Init scales from tiny (near the origin's saddle) to Kaiming-like sqrt(2/d)."""
    return (1e-3, 0.1, math.sqrt(2.0 / problem.feature_dim))


# CPU: runs vmapped together until a chunk holds about this many parameters. Measured with
# experiments/benchmarks/bench_multistart.py (--only-generic): tiny problems (hundreds of
# parameters) are bound by per-step overhead and gain from wide chunks (356 parameters:
# chunks of 64 beat 16 by 1.1-1.3x and 1 by 3x); from ~10^4 parameters on, one run's matmuls
# fill a core and wider chunks lose (K=10 n=100 d=64: chunks of 1 beat 16 by 2.4x on one
# machine; on another, with AVX-512, they tie). Chunks are then called concurrently, one
# thread per core (_dispatch.map_chunks), which is what fills a multi-core CPU.
_CPU_CHUNK_PARAMETERS = 32768
# CPU, refinement and certificates: their loops (Newton-CG, Lanczos) run as long as each run
# needs, and vmapped runs go in lockstep until the slowest stops, each step selecting every
# run's state (a Lanczos basis: (m + 1) x dim) between the runs that go on and those that
# stopped. So only tiny problems are vmapped. Measured through explore, 16 runs, seconds of
# refine / certificates by chunk size. The UFM as a plain function: 16330 parameters, 1:
# 0.17 / 0.72, 2: 1.00 / 1.04; 1770: 1: 0.03 / 0.15, 4: 0.09 / 0.16, 16: 0.16 / 0.16; 356: 1:
# 0.014 / 0.105, 4: 0.014 / 0.084. The built-in UFM in its reduced variables: 330 (K=10 d=32),
# 1: 0.022 / 0.35, 2: 0.041 / 0.35, 4: 0.054 / 0.40; 650: all within 10%; 36 (K=4 d=8, 32
# runs): 1: 0.32, 4: 0.27, 32: 0.27 s of certificates.
_CPU_REFINE_PARAMETERS = 1024
_PHASES = {"descent": _CPU_CHUNK_PARAMETERS, "refine": _CPU_REFINE_PARAMETERS}


def default_batch_size(num_inits: int, num_parameters: int | None = None, *, phase: str = "descent") -> int:
    """Inits vmapped together per chunk, from the backend, the sizes and the phase.

    Accelerators: all of them (one wide vmap fills the device). CPU: 4 without a size
    (the UFM's sufficient-statistics engine, measured), else the largest power of two
    with ``chunk x num_parameters <= 32768`` for ``phase="descent"``, ``<= 1024`` for
    ``phase="refine"`` (refinement and certificates, whose loop lengths differ per run;
    ``num_parameters`` is then the number of variables they work on), at least 1.
    """
    if phase not in _PHASES:
        raise ValueError(f"phase={phase!r}: expected one of {sorted(_PHASES)}")
    if jax.default_backend() != "cpu":
        return num_inits
    if num_parameters is None:
        return min(num_inits, 4)
    per_chunk = max(1, _PHASES[phase] // max(1, int(num_parameters)))
    return min(num_inits, 1 << (per_chunk.bit_length() - 1))


def multistart_descent(
    problem: UFMProblem,
    *,
    key: jax.Array,
    num_inits: int,
    scales=None,
    num_steps: int = 2000,
    learning_rate: float = 0.5,
    optimizer: optax.GradientTransformation | None = None,
    grad_tol: float = 1e-8,
    engine: str = "auto",
    batch_size: int | None = None,
    divergence_threshold: float = 1e8,
    dtype=None,
) -> DescentResult:
    """Descent from ``num_inits`` random initializations (keys split from ``key``).

    Args:
      engine: ``"gram"`` (plain GD, MSE only), ``"full"``, or ``"auto"`` (gram when it
        applies: MSE loss and no custom optimizer).
      optimizer: an optax optimizer for the full engine (default: SGD with
        ``learning_rate``).
      batch_size: inits vmapped per chunk (``default_batch_size`` when None).

    Returns a DescentResult with a leading axis of length ``num_inits``. Inits are split
    across all local devices when there are several.
    """
    if num_inits < 1:
        raise ValueError(f"num_inits must be >= 1; got {num_inits}")
    scales = check_scales(default_scales(problem) if scales is None else scales)
    return descent_from_keys(problem, keys=jax.random.split(key, num_inits), scales=np.resize(scales, num_inits),
                             num_steps=num_steps, learning_rate=learning_rate, optimizer=optimizer,
                             grad_tol=grad_tol, engine=engine, batch_size=batch_size,
                             divergence_threshold=divergence_threshold, dtype=dtype)


def descent_from_keys(
    problem: UFMProblem,
    *,
    keys: jax.Array,
    scales,
    num_steps: int = 2000,
    learning_rate: float = 0.5,
    optimizer: optax.GradientTransformation | None = None,
    grad_tol: float = 1e-8,
    engine: str = "auto",
    batch_size: int | None = None,
    divergence_threshold: float = 1e8,
    dtype=None,
) -> DescentResult:
    """:func:`multistart_descent` from given runs: run i starts from key ``keys[i]`` and init
    scale ``scales[i]`` (one per run). Any subset of a multistart's runs gives the same
    endpoints as the whole (how the explorer splits runs over processes)."""
    if num_steps < 0:
        raise ValueError(f"num_steps must be >= 0; got {num_steps}")
    if not (np.isfinite(learning_rate) and learning_rate > 0):
        raise ValueError(f"learning_rate must be finite and > 0; got {learning_rate}")
    if engine not in ("auto", "gram", "full"):
        raise ValueError(f"engine must be one of ('auto', 'gram', 'full'); got {engine!r}")
    if engine == "auto":
        engine = "gram" if problem.loss == "mse" and optimizer is None and problem.balanced else "full"
    if engine == "gram" and (problem.loss != "mse" or optimizer is not None):
        raise ValueError("engine='gram' runs plain gradient descent on loss='mse' only")
    if engine == "gram":
        ufm.require_balanced(problem, "engine='gram'")
    inits = _inits_from_keys(problem, keys, check_scales(scales), dtype)
    dtype = inits.W.dtype
    numbers = (jnp.asarray(learning_rate, dtype), jnp.asarray(grad_tol, dtype),
               jnp.asarray(divergence_threshold, dtype), jnp.asarray(num_steps, jnp.int32))
    chunk = default_batch_size(len(inits.W)) if batch_size is None else batch_size
    return map_chunks(_descent_program, inits,
                      lambda part, bs: ((problem, part, *numbers), dict(engine=engine, optimizer=optimizer,
                                                                         batch_size=bs)), chunk=chunk)


@functools.partial(jax.jit, static_argnames=("engine", "optimizer", "batch_size"))
def _descent_program(problem, inits, learning_rate, grad_tol, divergence_threshold, num_steps, *,
                     engine, optimizer, batch_size):
    # One compiled program per (problem sizes, engine, optimizer, batch size): new
    # lambdas, learning rates, tolerances and step budgets reuse it.
    if engine == "gram":
        run = functools.partial(
            gram_gradient_descent, problem, learning_rate=learning_rate, num_steps=num_steps,
            grad_tol=grad_tol, divergence_threshold=divergence_threshold,
        )
    else:
        opt = optax.sgd(learning_rate) if optimizer is None else optimizer
        run = functools.partial(
            gradient_descent, problem, optimizer=opt, num_steps=num_steps,
            grad_tol=grad_tol, divergence_threshold=divergence_threshold,
        )
    return run_batched(run, inits, batch_size=batch_size)


def run_batched(run, inits, *, batch_size: int | None = None):
    """``run`` over the leading axis of ``inits``: chunks of ``batch_size`` vmapped runs
    under ``lax.map``, the inits split across all local devices when there are several.
    Not jitted here: call it inside a jitted function.

    Only this process's devices: with several processes each runs its own inits
    (:func:`nc_jax.distributed.process_slice`)."""
    num = jax.tree.leaves(inits)[0].shape[0]
    devices = jax.local_devices()
    ndev = len(devices)
    per_device = -(-num // ndev)
    bs = default_batch_size(per_device) if batch_size is None else max(1, min(batch_size, per_device))

    def local(batch):
        n = jax.tree.leaves(batch)[0].shape[0]
        if n == 1:  # one run, unbatched: a vmap of width 1 turns matmuls into slower batched ones
            return jax.tree.map(lambda x: x[None], run(jax.tree.map(lambda x: x[0], batch)))
        if bs >= n:  # one chunk
            return jax.vmap(run)(batch)
        # batch 1 is a plain scan
        return jax.lax.map(run, batch) if bs == 1 else jax.lax.map(run, batch, batch_size=bs)

    if ndev == 1:
        return local(inits)
    # pad to a multiple of the device count, shard the leading axis, drop the padding
    pad = per_device * ndev - num
    if pad:
        inits = jax.tree.map(lambda x: jnp.concatenate([x, jnp.repeat(x[:1], pad, axis=0)]), inits)
    mesh = Mesh(np.array(devices), ("inits",))
    spec = PartitionSpec("inits")
    # check_vma=False: the while loops inside start from unsharded constants
    out = jax.shard_map(local, mesh=mesh, in_specs=spec, out_specs=spec, check_vma=False)(inits)
    return jax.tree.map(lambda x: x[:num], out)
