"""Shared helpers of the landscape experiments: work directory, float64 check, JSON.

Used by ``phase_diagram.py``, ``strict_saddles.py``, ``open_questions.py`` and
``benchmarks/bench_multistart.py``. Nothing here imports the experiments.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import jax

from nc_jax import io as _io

__all__ = ["make_workdir", "require_x64", "to_jsonable", "write_json", "class_counts", "load_info"]


def make_workdir(workdir: str | os.PathLike | None, name: str) -> Path:
    """The work directory (default ``./runs/<name>-<timestamp>``), created and printed."""
    path = _io.make_workdir(workdir, name)
    print(f"workdir: {path.absolute()}", flush=True)
    return path


def require_x64() -> None:
    """Raise unless float64 is on (script entries turn it on; tests via conftest)."""
    if not jax.config.jax_enable_x64:
        raise RuntimeError(
            "these experiments certify at gradient norm 1e-10 and need float64: call "
            'jax.config.update("jax_enable_x64", True) first (the script entry does)'
        )


to_jsonable = _io.to_jsonable


def write_json(path: str | os.PathLike, obj) -> Path:
    """Write ``obj`` as strict JSON, atomically (nc_jax._io)."""
    _io.write_json_atomic(path, obj)
    return Path(path)


def class_counts(names) -> dict:
    """Class name -> count, in order of first appearance."""
    return dict(Counter(names))


def load_info() -> dict:
    """Machine load (1, 5, 15 min averages) and core count, for noisy timings."""
    try:
        load = os.getloadavg()
    except OSError:  # pragma: no cover - not on every platform
        load = (float("nan"),) * 3
    return {"loadavg": [round(x, 2) for x in load], "cpu_count": os.cpu_count(),
            "backend": jax.default_backend(), "devices": len(jax.devices())}
