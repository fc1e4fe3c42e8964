"""Small file helpers shared by the entry points: work directories and atomic JSON.

Nothing half-written is left on disk: files are written to a temporary name in the same
folder and renamed into place (atomic on POSIX); JSON is strict (NaN and inf become null).
"""

from __future__ import annotations

import datetime
import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["make_workdir", "to_jsonable", "write_json_atomic", "write_text_atomic"]


def make_workdir(workdir: str | os.PathLike | None, prefix: str) -> Path:
    """The given folder (created), or a new ``./runs/<prefix>-<timestamp>`` folder."""
    if workdir is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        path = Path("runs") / f"{prefix}-{stamp}"
        suffix = 1
        while path.exists():
            path = Path("runs") / f"{prefix}-{stamp}-{suffix}"
            suffix += 1
    else:
        path = Path(workdir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def to_jsonable(obj):
    """numpy/JAX scalars and arrays to Python values; non-finite floats to None."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
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


def _write_atomic(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    """Strict JSON written through a temporary file and a rename."""
    data = to_jsonable(obj)
    _write_atomic(Path(path), lambda fh: json.dump(data, fh, indent=1, allow_nan=False))


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Text written through a temporary file and a rename."""
    _write_atomic(Path(path), lambda fh: fh.write(text))
