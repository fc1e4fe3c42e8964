"""The one harness of the experiment scripts: options, float64, work directory, outputs, progress.

Every script runs from the repository root as a module, with no ``sys.path`` edits::

    python -m experiments.phase_diagram --quick --workdir runs/pd
    python -m experiments.figures --figure 7 --tiny
    python -m experiments.benchmarks.bench_multistart --quick

What the scripts share lives here and nowhere else (no script imports another):

* :func:`add_workdir_arg`, :func:`add_seed_arg`, :func:`add_quick_arg` - the common options;
* :func:`enable_x64` / :func:`require_x64` - float64 for the verification scripts;
* :func:`make_workdir` - ``--workdir`` or a new ``./runs/<name>-<timestamp>`` (one naming
  scheme for every script, :func:`nc_jax.io.make_workdir`), created and printed;
* :func:`write_json` / :func:`save_png` - strict JSON and PNG, written atomically
  (:func:`nc_jax.io.write_json_atomic`, :func:`nc_jax.io.save_figure`);
* :func:`finish` - the end of a script: ``<name>.json``, ``<name>.png`` and the summary printed;
* :func:`progress` - a flushed progress line; :func:`timings` - the benchmarks' timer;
* :func:`run` - the ``if __name__ == "__main__"`` entry (x64 switch, exit status);
* small shared pieces: :func:`class_counts`, :func:`load_info`, :func:`saddle_probe`,
  :func:`parse_alpha_m_pairs`, :func:`train_config`.

Only the public ``nc_jax`` API is used here.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Callable

import jax

from nc_jax import io

__all__ = [
    "add_quick_arg",
    "add_seed_arg",
    "add_workdir_arg",
    "class_counts",
    "enable_x64",
    "finish",
    "load_info",
    "make_workdir",
    "parse_alpha_m_pairs",
    "progress",
    "require_x64",
    "run",
    "saddle_probe",
    "timings",
    "save_png",
    "to_jsonable",
    "train_config",
    "write_json",
]


# ----------------------------------------------------------------------------- options


def add_workdir_arg(parser: argparse.ArgumentParser, name: str, help: str | None = None) -> None:
    """``--workdir DIR`` (default: a new ``./runs/<name>-<timestamp>``)."""
    parser.add_argument("--workdir", default=None, help=help or f"output folder (default: ./runs/{name}-<timestamp>)")


def add_seed_arg(parser: argparse.ArgumentParser, default: int = 0, help: str | None = None) -> None:
    """``--seed N``: the PRNG seed everything is split from."""
    parser.add_argument("--seed", type=int, default=default, help=help or "PRNG seed")


def add_quick_arg(parser: argparse.ArgumentParser, help: str = "tiny sizes (tests)") -> None:
    """``--quick``: the small sizes the tests run."""
    parser.add_argument("--quick", action="store_true", help=help)


# ----------------------------------------------------------------------------- float64


def enable_x64() -> None:
    """Turn float64 on (script entries of the verification scripts; before any array exists)."""
    jax.config.update("jax_enable_x64", True)


def require_x64() -> None:
    """Raise unless float64 is on (script entries turn it on; tests via conftest)."""
    if not jax.config.jax_enable_x64:
        raise RuntimeError(
            "these experiments certify at gradient norm 1e-10 and need float64: call "
            'jax.config.update("jax_enable_x64", True) first (the script entry does)'
        )


# ----------------------------------------------------------------------------- outputs


def make_workdir(workdir: str | os.PathLike | None, name: str) -> Path:
    """The work directory (``workdir``, or a new ``./runs/<name>-<timestamp>``), created and printed."""
    path = io.make_workdir(workdir, name)
    print(f"workdir: {path.absolute()}", flush=True)
    return path


to_jsonable = io.to_jsonable


def write_json(path: str | os.PathLike, obj) -> Path:
    """Write ``obj`` as strict JSON (non-finite floats as null), atomically."""
    io.write_json_atomic(path, obj)
    return Path(path)


def save_png(fig, path: str | os.PathLike, **savefig_kwargs) -> Path:
    """Write a matplotlib figure atomically (format from the suffix, PNG by default)."""
    io.save_figure(fig, path, **savefig_kwargs)
    return Path(path)


def finish(workdir: Path, name: str, result: dict, draw: Callable[[Path], object], *lines: str) -> dict:
    """The end of every script: ``<name>.json`` (strict, atomic), ``<name>.png`` by ``draw(path)``,
    the summary ``lines`` and where the files went, printed."""
    json_path = write_json(workdir / f"{name}.json", result)
    png_path = workdir / f"{name}.png"
    draw(png_path)
    for line in lines:
        print(line)
    print(f"wrote {json_path} and {png_path}")
    return result


def timings(fn: Callable[[], object], repeats: int, warmup: int = 1) -> list[float]:
    """Wall seconds of ``repeats`` calls of ``fn`` (results blocked on) after ``warmup`` calls:
    the benchmarks' one timer (report medians, or minima on a shared machine)."""
    for _ in range(warmup):
        jax.block_until_ready(fn())
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        out.append(time.perf_counter() - t)
    return out


def progress(*parts, **print_kwargs) -> None:
    """One progress line, flushed at once (so it shows while jitted work runs)."""
    print(*parts, flush=True, **print_kwargs)


# ----------------------------------------------------------------------------- entry


def run(main: Callable[[], object], *, x64: bool = False) -> None:
    """The script entry: optionally float64, then ``main()``; exit with its int status (else 0)."""
    if x64:
        enable_x64()
    status = main()
    sys.exit(status if isinstance(status, int) else 0)


# ----------------------------------------------------------------------------- shared pieces


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


def saddle_probe(problem, kept: int, *, key, num_steps, learning_rate) -> dict:
    """:func:`nc_jax.landscape.saddle_probe` as a JSON-ready dict."""
    from nc_jax import landscape

    out = landscape.saddle_probe(problem, kept, key=key, num_steps=num_steps, learning_rate=learning_rate)._asdict()
    out["kept"] = list(out["kept"])
    return out


def parse_alpha_m_pairs(text: str) -> list[tuple[float, float]]:
    """``"1,1;1,5;5,1"`` -> ``[(1, 1), (1, 5), (5, 1)]`` (alpha, M pairs of ``--configs``)."""
    out = []
    for item in text.split(";"):
        item = item.strip()
        if not item:
            continue
        try:
            alpha, M = (float(v) for v in item.split(","))
        except ValueError as e:
            raise argparse.ArgumentTypeError(
                f"--configs items must be 'alpha,M'; got {item!r}") from e
        if alpha <= 0 or M <= 0:
            raise argparse.ArgumentTypeError(f"alpha and M must be > 0; got {item!r}")
        out.append((alpha, M))
    if not out:
        raise argparse.ArgumentTypeError("--configs needs at least one 'alpha,M' pair")
    return out


def train_config(name: str):
    """The ``TrainConfig`` of ``experiments/configs/<name>.py`` (imported as a package module)."""
    return importlib.import_module(f"{__package__ or 'experiments'}.configs.{name}").get_config()
