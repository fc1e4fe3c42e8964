"""Benchmark: a second `nc-jax verify --quick` process with JAX's persistent compilation cache.

Runs the command twice in fresh processes that share one new cache folder (the first fills
it, the second loads its programs), then once with the cache off, and prints the wall times
and the ratios measured in this one run. The verdicts must agree.

    python experiments/benchmarks/bench_compile_cache.py [--repeats 1] [-- extra verify args]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _run(cache: str, workdir: Path, extra: list[str]) -> tuple[float, dict]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "nc_jax.cli", "--cache-dir", cache, "verify", "--quick",
                           "--workdir", str(workdir), *extra], capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode not in (0, 1, 3):
        raise RuntimeError(proc.stderr[-2000:])
    return seconds, json.loads((workdir / "results.json").read_text())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1, help="cold/warm pairs to take the median of")
    parser.add_argument("extra", nargs="*", help="more `nc-jax verify` arguments")
    args = parser.parse_args(argv)
    cold, warm, off = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for i in range(args.repeats):
            cache = str(tmp / f"cache{i}")
            t_cold, r_cold = _run(cache, tmp / f"cold{i}", args.extra)
            t_warm, r_warm = _run(cache, tmp / f"warm{i}", args.extra)
            t_off, r_off = _run("off", tmp / f"off{i}", args.extra)
            assert r_cold["verdict"] == r_warm["verdict"] == r_off["verdict"], "verdicts differ"
            cold.append(t_cold)
            warm.append(t_warm)
            off.append(t_off)
    med = statistics.median
    print(f"nc-jax verify --quick {' '.join(args.extra)}: wall time, median of {args.repeats}")
    print(f"  cache off              {med(off):7.1f} s")
    print(f"  first (fills cache)    {med(cold):7.1f} s")
    print(f"  second (loads cache)   {med(warm):7.1f} s   second/first = {med(warm) / med(cold):.2f}, "
          f"second/off = {med(warm) / med(off):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
