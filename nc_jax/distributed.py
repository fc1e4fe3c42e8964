"""Several processes through :func:`jax.distributed.initialize`: start-up, flags and collectives.

JAX runs one program per process ("multi-controller"); every process runs the same
command, and together they see ``jax.devices()`` of all of them. ``nc-jax train``,
``landscape`` and ``verify`` take the arguments of :func:`jax.distributed.initialize`:

* two processes on one machine (CPU; collectives through gloo)::

      nc-jax train --workdir runs/t --coordinator-address 127.0.0.1:12345 --num-processes 2 --process-id 0 &
      nc-jax train --workdir runs/t --coordinator-address 127.0.0.1:12345 --num-processes 2 --process-id 1

* a GPU cluster: one process per host (all its GPUs) with the flags above, the address
  being host 0's; or one process per GPU under SLURM (``srun --ntasks-per-node=<GPUs>
  nc-jax train ...``) or Open MPI (``mpirun``) with no flags: JAX reads the launcher's
  environment (each process then gets one GPU);
* a TPU pod: run the same command on every host with no flags
  (``gcloud compute tpus tpu-vm ssh NAME --worker=all --command="nc-jax train ..."``);
  JAX finds the pod's hosts itself.

Without the flags and without a cluster environment nothing is initialized: one process,
as always. What each entry point does with several processes:

* training: the global batch is split over all devices of all processes, each process
  places only its own rows of each batch; metrics come out replicated; only process 0
  writes the work directory (orbax checkpoints are written by all, as orbax requires);
* landscape exploration: the inits are split in contiguous blocks over the processes
  (:func:`process_slice`), each runs its block on its own devices, and the blocks are
  gathered (:func:`allgather_blocks`): every process holds the single-process result.

A process that dies makes the others stop with a non-zero exit status once its heartbeats
are missing for ``heartbeat_timeout`` seconds (JAX's coordination service aborts them).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys

import numpy as np

__all__ = [
    "FLAG_DESTS",
    "add_arguments",
    "allgather_blocks",
    "barrier",
    "broadcast_string",
    "check_arguments",
    "check_flags",
    "cluster_environment",
    "initialize",
    "initialize_from_args",
    "is_primary",
    "primary_stdout",
    "process_block",
    "process_slice",
]

DEFAULT_INITIALIZATION_TIMEOUT = 300  # seconds; jax.distributed.initialize's default
DEFAULT_HEARTBEAT_TIMEOUT = 100  # seconds; jax.distributed.initialize's default

# HOST:PORT with HOST a name, an IPv4 address or a bracketed IPv6 address
_ADDRESS = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.\-]+):([0-9]+)$")
_FLAGS = {"coordinator_address": "--coordinator-address", "num_processes": "--num-processes",
          "process_id": "--process-id", "initialization_timeout": "--initialization-timeout",
          "heartbeat_timeout": "--heartbeat-timeout"}
FLAG_DESTS = tuple(_FLAGS)  # the argparse destinations of add_arguments
_PROCESS_ID = [None]  # this process's id once initialize() ran (read without touching JAX's backend)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--coordinator-address --num-processes --process-id`` and the two timeouts."""
    group = parser.add_argument_group(
        "several processes (jax.distributed)",
        "give all three of --coordinator-address, --num-processes and --process-id, or none: then a "
        "cluster launcher's environment (SLURM, Open MPI, a TPU pod, $JAX_COORDINATOR_ADDRESS) is detected "
        "by JAX, and without one the run is a single process")
    unset = "; unset (%(default)s): one process, or what a cluster launcher's environment says"
    group.add_argument("--coordinator-address", default=None, metavar="HOST:PORT",
                       help="address of process 0's coordinator, the same in every process" + unset)
    group.add_argument("--num-processes", type=int, default=None, metavar="N",
                       help="number of processes (>= 1)" + unset)
    group.add_argument("--process-id", type=int, default=None, metavar="I",
                       help="this process's id, in [0, N)" + unset)
    group.add_argument("--initialization-timeout", type=int, default=DEFAULT_INITIALIZATION_TIMEOUT,
                       metavar="SECONDS", help="how long to wait for every process to connect (>= 1)")
    group.add_argument("--heartbeat-timeout", type=int, default=DEFAULT_HEARTBEAT_TIMEOUT, metavar="SECONDS",
                       help="a process silent this long counts as dead and the others stop (>= 1)")


def _error(param: str, flags: bool, message: str) -> ValueError:
    from nc_jax.io import UsageError

    return UsageError(f"{_FLAGS[param]} {message}") if flags else ValueError(f"{param} {message}")


def check_arguments(coordinator_address=None, num_processes=None, process_id=None, *,
                    initialization_timeout: int = DEFAULT_INITIALIZATION_TIMEOUT,
                    heartbeat_timeout: int = DEFAULT_HEARTBEAT_TIMEOUT, flags: bool = False) -> None:
    """Check the arguments of :func:`initialize` without touching JAX.

    Raises ValueError naming the argument, its value and the accepted range
    (:class:`nc_jax.io.UsageError` naming the command-line flag when ``flags``).
    """
    given = {"coordinator_address": coordinator_address, "num_processes": num_processes, "process_id": process_id}
    for name, value in (("num_processes", num_processes), ("process_id", process_id),
                        ("initialization_timeout", initialization_timeout), ("heartbeat_timeout", heartbeat_timeout)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer))):
            raise _error(name, flags, f"must be an integer; got {value!r}")
    if num_processes is not None and num_processes < 1:
        raise _error("num_processes", flags, f"must be >= 1; got {num_processes}")
    if process_id is not None:
        if process_id < 0 or (num_processes is not None and process_id >= num_processes):
            n_name = _FLAGS["num_processes"] if flags else "num_processes"
            upper = f"N) (N = {n_name})" if num_processes is None else f"{num_processes}) ({n_name} {num_processes})"
            raise _error("process_id", flags, f"must be in [0, {upper}; got {process_id}")
    if coordinator_address is not None:
        match = _ADDRESS.match(str(coordinator_address))
        if match is None or not 1 <= int(match.group(2)) <= 65535:
            raise _error("coordinator_address", flags, f"must look like HOST:PORT with PORT in [1, 65535] "
                                                       f"(e.g. 10.0.0.1:12345); got {coordinator_address!r}")
    for name, value in (("initialization_timeout", initialization_timeout), ("heartbeat_timeout", heartbeat_timeout)):
        if value < 1:
            raise _error(name, flags, f"must be >= 1 (seconds); got {value}")
    missing = [n for n, v in given.items() if v is None]
    if len(missing) not in (0, 3) and cluster_environment() is None:
        named = [(_FLAGS[n] if flags else n) for n in missing]
        raise _error(next(n for n, v in given.items() if v is not None), flags,
                     f"needs {' and '.join(named)} as well (all three, or none to let a cluster launcher's "
                     f"environment decide; none was detected)")


def cluster_environment() -> str | None:
    """The cluster environment :func:`jax.distributed.initialize` would detect, or None.

    ``$JAX_COORDINATOR_ADDRESS``, then JAX's own detectors (SLURM, Open MPI, Kubernetes,
    Cloud TPU), the same ones and in the same order as ``jax.distributed.initialize()``.
    """
    if os.environ.get("JAX_COORDINATOR_ADDRESS"):
        return "JAX_COORDINATOR_ADDRESS"
    try:  # JAX's detectors are private: fall back to the launchers' variables if they move
        from jax._src import clusters

        envs = list(clusters.ClusterEnv._cluster_types)
    except (ImportError, AttributeError):  # pragma: no cover
        markers = {"slurm": ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID"),
                   "ompi": ("OMPI_MCA_orte_hnp_uri",), "gketpu": ("TPU_WORKER_HOSTNAMES",)}
        return next((name for name, keys in markers.items() if all(k in os.environ for k in keys)), None)
    for env in envs:
        if not getattr(env, "opt_in_only_method", False) and env.is_env_present():
            return str(getattr(env, "name", env.__name__))
    return None


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, initialization_timeout: int = DEFAULT_INITIALIZATION_TIMEOUT,
               heartbeat_timeout: int = DEFAULT_HEARTBEAT_TIMEOUT) -> bool:
    """Join the processes of one run; call it before any other JAX call (``jax.devices()``...).

    All three of ``coordinator_address`` (``"HOST:PORT"`` of process 0), ``num_processes``
    and ``process_id``: :func:`jax.distributed.initialize` with them. None of them: JAX
    auto-detects a cluster launcher (:func:`cluster_environment`), and without one nothing
    happens. Some of them: allowed inside a detected cluster (JAX fills the rest).

    Returns True if the process joined a distributed run (also with one process).
    Raises ValueError for bad arguments (before anything starts); JAX raises RuntimeError if
    a JAX computation already ran in this process.
    """
    check_arguments(coordinator_address, num_processes, process_id,
                    initialization_timeout=initialization_timeout, heartbeat_timeout=heartbeat_timeout)
    import jax

    if jax.distributed.is_initialized():
        _PROCESS_ID[0] = jax.process_index()
        return True
    if coordinator_address is None and num_processes is None and process_id is None \
            and cluster_environment() is None:
        return False
    jax.distributed.initialize(coordinator_address, num_processes, process_id,
                               initialization_timeout=int(initialization_timeout),
                               heartbeat_timeout_seconds=int(heartbeat_timeout))
    _PROCESS_ID[0] = jax.process_index()
    return True


def _from_args(args: argparse.Namespace) -> dict:
    return dict(coordinator_address=getattr(args, "coordinator_address", None),
                num_processes=getattr(args, "num_processes", None), process_id=getattr(args, "process_id", None),
                initialization_timeout=getattr(args, "initialization_timeout", DEFAULT_INITIALIZATION_TIMEOUT),
                heartbeat_timeout=getattr(args, "heartbeat_timeout", DEFAULT_HEARTBEAT_TIMEOUT))


def check_flags(args: argparse.Namespace) -> None:
    """:func:`check_arguments` of the flags of :func:`add_arguments` (UsageError naming a bad flag);
    entry points call it first, before any other check or work."""
    check_arguments(**_from_args(args), flags=True)


def initialize_from_args(args: argparse.Namespace) -> bool:
    """:func:`initialize` with the flags of :func:`add_arguments` (UsageError naming a bad flag)."""
    check_flags(args)
    return initialize(**_from_args(args))


def is_primary() -> bool:
    """True in process 0, the one that writes files and prints (always True in one process)."""
    import jax

    return jax.process_index() == 0


@contextlib.contextmanager
def primary_stdout():
    """Within the block, stdout of processes other than 0 is dropped once :func:`initialize` ran
    (every process would print the same lines); stderr is left alone."""
    real = sys.stdout

    class _Filtered:
        def write(self, text):
            return real.write(text) if _PROCESS_ID[0] in (None, 0) else len(text)

        def __getattr__(self, name):
            return getattr(real, name)

    sys.stdout = _Filtered()
    try:
        yield
    finally:
        sys.stdout = real


# ----------------------------------------------------------------------------- collectives


def process_block(n: int) -> int:
    """Items per process when ``n`` items are split in equal contiguous blocks (the last ones
    may be short or empty): ``ceil(n / process_count)``."""
    import jax

    return -(-int(n) // jax.process_count())


def process_slice(n: int) -> slice:
    """This process's contiguous block of ``range(n)`` (all of it in one process)."""
    import jax

    m = process_block(n)
    start = min(jax.process_index() * m, n)
    return slice(start, min(start + m, n))


def allgather_blocks(tree, n: int):
    """The blocks of :func:`process_slice`, gathered from all processes, as one pytree of numpy
    arrays with a leading axis of length ``n`` (identity in one process).

    Every process passes its block padded to :func:`process_block` rows (the padding rows
    are dropped), so every process ends with the same arrays.
    """
    import jax

    if jax.process_count() == 1:
        return tree
    from jax.experimental import multihost_utils

    gathered = multihost_utils.process_allgather(tree, tiled=True)
    return jax.tree.map(lambda x: np.asarray(x)[:n], gathered)


def barrier(name: str) -> None:
    """Wait until every process reaches ``name`` (nothing in one process)."""
    import jax

    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def broadcast_string(text: str) -> str:
    """Process 0's ``text`` in every process (e.g. a work directory named from the clock)."""
    import jax

    if jax.process_count() == 1:
        return text
    from jax.experimental import multihost_utils

    data = np.frombuffer(text.encode(), np.uint8)
    size = int(np.asarray(multihost_utils.broadcast_one_to_all(np.int32(data.size))))
    buf = np.zeros(size, np.uint8)
    buf[:min(size, data.size)] = data[:size]
    return bytes(np.asarray(multihost_utils.broadcast_one_to_all(buf))).decode()
