"""Entry-point harness: work directories, atomic strict JSON/text/PNG, usage errors, exit codes.

Nothing half-written is left on disk: files go to a temporary name in the same folder
and are renamed into place (atomic on POSIX); JSON is strict (NaN and inf become null).
"""

from __future__ import annotations

import datetime
import enum
import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np

__all__ = [
    "ExitCode",
    "UsageError",
    "available_memory_bytes",
    "check_memory",
    "check_workdir",
    "class_sizes_arg",
    "enable_compilation_cache",
    "dumps_strict",
    "make_workdir",
    "remove_if_empty",
    "save_figure",
    "save_npz_atomic",
    "to_jsonable",
    "write_json_atomic",
    "write_text_atomic",
]


class ExitCode(enum.IntEnum):
    """Exit status of every `nc-jax` subcommand and experiment script."""

    OK = 0            # the evidence supports the verdict printed
    DISAGREEMENT = 1  # a spurious minimum or a disagreement with the theory was found
    USAGE = 2         # bad input: refused before any heavy work, nothing written
    INCONCLUSIVE = 3  # too few runs converged and were certified to support a verdict
    DIVERGED = 4      # a training run's loss turned non-finite; it stopped there


class UsageError(ValueError):
    """Bad input from the user; entry points print the message and exit with ``ExitCode.USAGE``."""


def available_memory_bytes() -> int | None:
    """Memory the process can still allocate (MemAvailable, capped by a cgroup limit)."""
    avail = None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),):
        try:
            limit = Path(limit_file).read_text().strip()
            if limit != "max":
                free = int(limit) - int(Path(usage_file).read_text())
                avail = free if avail is None else min(avail, free)
        except (OSError, ValueError):
            pass
    return avail


def _human(nbytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(nbytes) < 1024 or unit == "PiB":
            return f"{nbytes:.3g} {unit}"
        nbytes /= 1024
    return f"{nbytes:.3g} PiB"


def check_memory(nbytes: float, what: str, *, fraction: float = 0.8) -> None:
    """Refuse work whose estimated memory exceeds ``fraction`` of what is available.

    Args:
      nbytes: the estimate (bytes), computed from the sizes before any allocation.
      what: names the arguments that set the size, e.g. ``"--K 100000 --n 5 --d 6"``.
    """
    avail = available_memory_bytes()
    if avail is not None and nbytes > fraction * avail:
        raise UsageError(
            f"{what} needs about {_human(nbytes)} of memory; this machine has {_human(avail)} available "
            f"(at most {fraction:.0%} of it is used): choose smaller sizes"
        )


def enable_compilation_cache(path: str | os.PathLike | None = None) -> Path | None:
    """Turn on JAX's persistent compilation cache (entry points only; the library never does).

    ``path`` None: ``$NC_JAX_CACHE_DIR`` or ``~/.cache/nc_jax/xla``; ``"off"`` (or an empty
    ``$NC_JAX_CACHE_DIR``) disables it. A second process with the same programs then loads
    them instead of compiling. Returns the folder used, or None.
    """
    import jax

    if path is None:
        path = os.environ.get("NC_JAX_CACHE_DIR", str(Path.home() / ".cache" / "nc_jax" / "xla"))
    if not str(path) or str(path) == "off":
        return None
    folder = Path(path).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None  # a cache is an optimisation: never a reason to fail
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return folder


def check_workdir(workdir: str | os.PathLike | None, flag: str = "--workdir") -> None:
    """Fail early, without creating anything, if ``workdir`` cannot become an output folder."""
    if workdir is None:
        return
    path = Path(workdir)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{flag} {str(path)!r} is an existing file; give a folder (new or existing)")
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise UsageError(f"{flag} {str(path)!r}: {str(probe)!r} is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {str(path)!r}: {str(probe)!r} is not writable (read-only file system or permissions)")


def make_workdir(workdir: str | os.PathLike | None, prefix: str, flag: str = "--workdir") -> Path:
    """The given folder (created), or a new unique ``./runs/<prefix>-<timestamp>`` folder.

    Default names are claimed with an exclusive ``mkdir``, so two runs started in the same
    second get different folders. Errors are :class:`UsageError` naming ``flag``.
    """
    if workdir is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        Path("runs").mkdir(exist_ok=True)
        suffix = 0
        while True:
            path = Path("runs") / (f"{prefix}-{stamp}" + (f"-{suffix}" if suffix else ""))
            try:
                path.mkdir()
                return path
            except FileExistsError:
                suffix += 1
    check_workdir(workdir, flag)
    path = Path(workdir)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"{flag} {str(path)!r} cannot be created: {err.strerror or err}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {str(path)!r} is not writable")
    return path


def remove_if_empty(path: str | os.PathLike | None) -> None:
    """Remove a work directory this run created if nothing was written to it (no debris)."""
    if path is None:
        return
    p = Path(path)
    try:
        if p.is_dir() and not any(p.iterdir()):
            p.rmdir()
    except OSError:
        pass


def to_jsonable(obj):
    """numpy/JAX scalars and arrays to Python values; non-finite floats to None."""
    if isinstance(obj, enum.Enum):
        return obj.name.lower()
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "__array__") and not isinstance(obj, (str, bytes)):
        arr = np.asarray(obj)
        return to_jsonable(arr.tolist()) if arr.ndim else to_jsonable(arr.item())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        x = float(obj)
        return x if math.isfinite(x) else None
    return obj


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _write_atomic(path: Path, write, mode: str = "w") -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        # mkstemp makes 0600 files; give outputs the permissions a plain open() would
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def dumps_strict(obj, **kwargs) -> str:
    """Strict JSON text (non-finite floats as null)."""
    return json.dumps(to_jsonable(obj), allow_nan=False, **kwargs)


def class_sizes_arg(text: str):
    """argparse type of ``--n``: ``"5"`` (balanced) or ``"6,3,1"`` (one size per class)."""
    import argparse

    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r} (an int n, or one int per class: 6,3,1)")
    return values[0] if len(values) == 1 else tuple(values)


def save_npz_atomic(path: str | os.PathLike, **arrays) -> None:
    """``np.savez`` of ``arrays`` through a temporary file and a rename."""
    import numpy as np

    _write_atomic(Path(path), lambda fh: np.savez(fh, **arrays), mode="wb")


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    """Strict JSON written through a temporary file and a rename."""
    data = to_jsonable(obj)
    _write_atomic(Path(path), lambda fh: json.dump(data, fh, indent=1, allow_nan=False))


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Text written through a temporary file and a rename."""
    _write_atomic(Path(path), lambda fh: fh.write(text))


def save_figure(fig, path: str | os.PathLike, **savefig_kwargs) -> None:
    """A matplotlib figure written atomically (the format from the suffix of ``path``)."""
    path = Path(path)
    fmt = path.suffix.lstrip(".") or "png"
    _write_atomic(path, lambda fh: fig.savefig(fh, format=fmt, **savefig_kwargs), mode="wb")

