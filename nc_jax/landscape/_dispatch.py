"""Runs spread over the host's cores: on a CPU with one JAX device, the explorer's phases call
their compiled program once per chunk of runs, from a pool of one thread per core.

Why: XLA:CPU runs one program's small matmuls no faster on two cores than on one (its
intra-op threading costs what it gains at these sizes: the three matmuls and update of a
K=10 n=100 d=64 UFM gradient step take 214 us on two cores and 160 us pinned to one), but
it runs two programs at once, one per core. Concurrent calls of one compiled program from
host threads are measured in ``experiments/benchmarks/bench_multistart.py`` (2-core CPU,
float64): 16 runs x 48 steps at K=10 n=100 d=64 in 81 ms against 157-162 ms for the best
single program (``lax.map`` chunks, ``jit(vmap)``) or a plain loop of calls; 64 tiny runs
(K=4 n=10 d=8) as two vmapped halves in 13 ms against 21 ms for one ``jit(vmap)``.

Every chunk is a call of the same compiled program (equal shapes: the last chunk is padded
with copies of the last run, dropped afterwards), compiled once before the threads start
(concurrent first calls would each compile it). Chunks are consecutive runs, as in a
``lax.map`` over chunks of the same size, so the runs are grouped as in one program.
Elsewhere (accelerators, several devices, one core) there is one call of the whole batch.
"""

from __future__ import annotations

import concurrent.futures
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp

__all__ = ["host_workers", "map_chunks", "threadable"]

# Programs that may not run concurrently. A custom call (LAPACK: eigh, svd, solve, ...) or an
# FFT splits its batch over XLA:CPU's shared thread pool and blocks a pool thread until it is
# done; two such executions at once can wedge a small pool for good (seen here: the
# certificate program's batched eigh on 2 cores hung in jax::ParallelBatchMap; upstream,
# PyAutoLabs/PyAutoFit#1530 with FFTs). Such programs run their parts one after another.
_BLOCKING_OPS = ("custom_call", "stablehlo.fft")
_threadable: dict[int, tuple[Any, bool]] = {}


def threadable(lowered) -> bool:
    """Whether a lowered program is free of ops that block XLA:CPU's pool (see above)."""
    # jax caches the lowering per program and signature: its identity is a stable key
    key = getattr(lowered, "_lowering", lowered)
    hit = _threadable.get(id(key))
    if hit is None or hit[0] is not key:
        text = lowered.as_text()
        hit = _threadable[id(key)] = (key, not any(op in text for op in _BLOCKING_OPS))
        if len(_threadable) > 256:
            _threadable.pop(next(iter(_threadable)))
    return hit[1]


def host_workers() -> int:
    """Concurrent calls worth making: the usable CPU cores on a CPU backend with one local
    device, else 1 (accelerators fill themselves from one call). The environment variable
    ``NC_JAX_HOST_WORKERS`` (an integer >= 1) sets it on a CPU; 1 turns the threads off."""
    if jax.default_backend() != "cpu" or jax.local_device_count() != 1:
        return 1
    setting = os.environ.get("NC_JAX_HOST_WORKERS", "").strip()
    if setting:
        if not setting.isdigit() or int(setting) < 1:
            raise ValueError(f"NC_JAX_HOST_WORKERS must be an integer >= 1; got {setting!r}")
        return int(setting)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def map_chunks(program, batched: Any, bind: Callable[[Any, int], tuple[tuple, dict]], *, chunk: int,
               workers: int | None = None) -> Any:
    """``program(*a, **kw)`` with ``(a, kw) = bind(part, batch_size)`` over the leading (run)
    axis of the pytree ``batched``; outputs concatenated along it.

    With ``workers > 1`` the runs go in consecutive parts of at most ``chunk`` runs (fewer
    when that leaves a worker idle, but never one run alone when ``chunk > 1``, so that
    every run's rounding is that of a vmapped run whatever the split), one call each,
    ``workers`` calls at a time (one after another for programs that are not
    :func:`threadable`); ``bind`` gets the part's size as ``batch_size`` (one vmapped chunk
    per call). Else one call of everything with ``batch_size=chunk``. ``program`` is a
    jitted function.
    """
    workers = host_workers() if workers is None else workers
    num = jax.tree.leaves(batched)[0].shape[0]
    size = max(1, min(chunk, -(-num // workers)))
    if chunk > 1:  # keep runs batched: an unbatched run can differ from a vmapped one in the last bit
        size = max(size, min(chunk, 2))
    if workers <= 1 or size >= num:
        a, kw = bind(batched, min(chunk, num))
        return program(*a, **kw)
    parts = -(-num // size)
    pad = parts * size - num
    if pad:
        batched = jax.tree.map(lambda x: jnp.concatenate([x, jnp.repeat(x[-1:], pad, axis=0)]), batched)
    calls = [bind(jax.tree.map(lambda x, i=i: x[i * size:(i + 1) * size], batched), size) for i in range(parts)]
    a, kw = calls[0]
    lowered = program.lower(*a, **kw)
    lowered.compile()  # once, here; the calls below then find it compiled
    if threadable(lowered):
        with concurrent.futures.ThreadPoolExecutor(min(workers, parts)) as pool:
            outs = list(pool.map(lambda c: jax.block_until_ready(program(*c[0], **c[1])), calls))
    else:
        outs = [program(*c[0], **c[1]) for c in calls]
    return jax.tree.map(lambda *xs: jnp.concatenate(xs)[:num], *outs)
