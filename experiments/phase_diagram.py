"""Theorem 3.1 phase diagram of the vanilla-MSE UFM (with bias), certified run by run.

Sweep the feature dimension d (below, at and above K-1 and K), lambda_W = lambda_H =
sqrt(c / (N K)) for c on a log grid around 1 (so lambda_W lambda_H N K = c and the
zero regime is c >= 1), and lambda_b on both sides of the bias threshold t/(1-t),
t = sqrt(c). Per cell, ``nc_jax.landscape.explore`` descends from many inits, refines to
gradient norm 1e-10 and certifies each endpoint; the cell records the fraction of
certified global minima, max |f - f*|, NC1 at the descent endpoints, NC1/NC2/NC3 at the
refined points, and the errors against Theorem 3.1's predictions (class-mean Gram
spectrum, self-duality). The regime of every cell is the theory's
(``theory.regime_name``). Cells sharing (K, n, d) reuse one compiled program (the
lambdas are traced pytree leaves).

Writes ``phase_diagram.json`` and ``phase_diagram.png`` (heatmaps over
(lambda_W lambda_H N K, lambda_b), one column per d, regime names on the cells and the
boundaries lambda_W lambda_H = 1/(NK) and lambda_b = t/(1-t) on top).

Usage: python -m experiments.phase_diagram [--quick] [--workdir DIR] [--num-inits 32]
"""

from __future__ import annotations

import argparse
import math
import time

import jax
import numpy as np

from experiments import harness
from experiments.harness import class_counts
from nc_jax import landscape, plotting, theory
from nc_jax.ufm import UFMProblem

FULL = dict(K=4, n=5, d=(2, 3, 4, 6), c=(0.01, 0.05, 0.25, 0.8, 1.25, 5.0),
            lambda_b=(1e-3, 1e-2, 1e-1, 1.0, 10.0), num_inits=32, num_steps=2000)
QUICK = dict(K=3, n=2, d=(4,), c=(0.1, 2.0), lambda_b=(1e-2, 10.0), num_inits=4, num_steps=300)


def _max(x):
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    return float(x.max()) if x.size else None


def _median(x):
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    return float(np.median(x)) if x.size else None


def _log10(x):
    return None if x is None or x <= 0 else math.log10(x)


def run_cell(problem: UFMProblem, *, key, num_inits, num_steps, learning_rate) -> dict:
    """Explore one cell and summarise it (host values only)."""
    res = landscape.explore(problem, key=key, num_inits=num_inits, num_steps=num_steps,
                            learning_rate=learning_rate)
    names = landscape.class_names(res.classification.label)
    labels = np.asarray(res.classification.label)
    gaps = np.abs(res.value - res.f_star)
    certified = labels == landscape.RunClass.GLOBAL_MINIMUM
    converged = res.grad_norm <= 1e-10
    gm = theory.global_minimum(problem)
    rep = res.report
    max_gap = _max(gaps[certified])
    return {
        "regime": res.regime,
        "lambda_b_threshold": float(gm.lambda_b_threshold),
        "bias_star": float(gm.bias),
        "f_star": res.f_star,
        "counts": class_counts(names),
        "frac_global": float(certified.mean()),
        "max_gap_certified": max_gap,
        "log10_max_gap": _log10(max(max_gap, 1e-18)) if max_gap is not None else None,
        "max_gap_converged": _max(gaps[converged]),
        "max_grad_norm": _max(res.grad_norm),
        "descent_nc1_median": _median(res.descent_nc1),
        "descent_nc1_max": _max(res.descent_nc1),
        "log10_descent_nc1": _log10(_median(res.descent_nc1)),
        "nc1_max": _max(rep.nc1),
        "nc2_max": _max(rep.nc2),
        "nc2_means_max": _max(rep.nc2_means),
        "nc3_max": _max(rep.nc3),
        "gram_spectrum_error_max": _max(res.gram_spectrum_error),
        "self_duality_error_max": _max(res.self_duality_error),
        "bias_error_max": (None if res.params.b is None
                           else _max(np.abs(np.asarray(res.params.b) - float(gm.bias)).max(axis=1)[certified])),
        "runs": {"label": names, "value": res.value, "grad_norm": res.grad_norm,
                 "descent_status": [landscape.DESCENT_STATUS_NAMES[int(s)] for s in np.asarray(res.descent.status)]},
        "seconds": res.seconds,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    harness.add_quick_arg(parser)
    harness.add_workdir_arg(parser, "phase_diagram")
    parser.add_argument("--num-inits", type=int, default=None)
    parser.add_argument("--num-steps", type=int, default=None)
    parser.add_argument("--learning-rate", type=float, default=0.5)
    harness.add_seed_arg(parser)
    args = parser.parse_args(argv)
    harness.require_x64()
    cfg = dict(QUICK if args.quick else FULL)
    cfg["num_inits"] = args.num_inits or cfg["num_inits"]
    cfg["num_steps"] = args.num_steps or cfg["num_steps"]
    workdir = harness.make_workdir(args.workdir, "phase_diagram")
    K, n = cfg["K"], cfg["n"]
    N = K * n
    key = jax.random.key(args.seed)
    cells = []
    t_start = time.perf_counter()
    for d in cfg["d"]:
        t_d = time.perf_counter()
        for c in cfg["c"]:
            lam = math.sqrt(c / (N * K))
            for lb in cfg["lambda_b"]:
                problem = UFMProblem(K, n, d, lambda_W=lam, lambda_H=lam, lambda_b=lb)
                key, sub = jax.random.split(key)
                cell = {"K": K, "n": n, "d": d, "c": c, "lambda_W": lam, "lambda_H": lam, "lambda_b": lb}
                # the b-block of the Hessian is (1 + lambda_b) I: keep GD stable for large lambda_b
                lr = args.learning_rate / max(1.0, lb)
                cell["learning_rate"] = lr
                cell.update(run_cell(problem, key=sub, num_inits=cfg["num_inits"], num_steps=cfg["num_steps"],
                                     learning_rate=lr))
                cells.append(cell)
                harness.progress(f"d={d} c={c:g} lambda_b={lb:g}: {cell['regime']:18s} global {cell['frac_global']:.2f} "
                      f"max|f-f*| {cell['max_gap_certified'] if cell['max_gap_certified'] is not None else float('nan'):.1e} "
                      f"{cell['counts']}")
        harness.progress(f"d={d}: {time.perf_counter() - t_d:.1f} s (first cell compiles)")

    mse_ok = all(
        cell["max_gap_certified"] is None or cell["max_gap_certified"] < 1e-9 for cell in cells
    )
    bad = [(c["d"], c["c"], c["lambda_b"], c["counts"]) for c in cells
           if any(k in c["counts"] for k in ("spurious_local_minimum", "below_closed_form"))]
    summary = {
        "num_cells": len(cells),
        "min_frac_global": min(c["frac_global"] for c in cells),
        "mean_frac_global": float(np.mean([c["frac_global"] for c in cells])),
        "all_certified_within_1e-9": mse_ok,
        "cells_with_spurious_or_below": bad,
        "regimes": class_counts(c["regime"] for c in cells),
        "max_gram_spectrum_error": _max([c["gram_spectrum_error_max"] or np.nan for c in cells]),
        "max_self_duality_error": _max([c["self_duality_error_max"] or np.nan for c in cells]),
        "seconds": time.perf_counter() - t_start,
    }
    result = {"config": cfg, "learning_rate": args.learning_rate, "seed": args.seed, "quick": args.quick,
              "load": harness.load_info(), "summary": summary, "cells": cells}
    return harness.finish(workdir, "phase_diagram", result,
                          lambda path: plotting.plot_phase_diagram(cells, num_classes=K, path=path),
                          f"summary: {summary}")


if __name__ == "__main__":
    harness.run(main, x64=True)
