"""Is deep neural collapse optimal in the deep ReLU UFM? (issue 12, item 2, ReLU part).

The model is :mod:`nc_jax.deep_ufm` with ``activation="relu"``: free features H, ReLU after
each of the L - 1 hidden layers, MSE against one-hot targets, weight decay on every factor,
no bias (the deep unconstrained features model of Sukenik et al.). The claims:

* Sukenik, Mondelli, Lampert 2023: with two classes, DNC is optimal at every depth.
* Sukenik, Lampert, Mondelli 2024: beyond two layers or two classes DNC stops being optimal;
  lower-rank configurations reach lower values (a low-rank bias of the weight decay).

The DNC level f_DNC = K phi_on is closed form (``deep_ufm.dnc_value``, checked here against
two constructed DNC points). No optimum is known, so the test is one of values: for every
cell (K, L, lambda) ``deep_ufm.search_below_dnc`` runs the explorer's vmapped descent from
``num_inits`` random inits, polishes the endpoints by L-BFGS, and compares the lowest value
with f_DNC. A point below
f_DNC (by more than ``MARGIN``) refutes DNC's optimality there, whatever its gradient (ReLU's
kinks stop first-order methods short of stationarity, so no second-order certificate is
claimed); it is saved with its value and the numerical rank of its class means per layer.
Finding none is evidence, not proof, and only where the search reached f_DNC itself (a
search that stops above it has not tested anything).

Writes ``followups_deep_relu.json`` (every cell), ``followups_deep_relu_counterexamples.json``
(the points below f_DNC with their problems and values) and ``followups_deep_relu.png``.

Exit status (``nc_jax.io.ExitCode``): 1 when a two-class cell goes below f_DNC (against a
theorem) or a DNC point misses f_DNC; 3 when no cell beyond two layers and two classes was
beaten (the 2024 claim then has no evidence here) or a two-class search stopped above f_DNC;
else 0.

Usage: python -m experiments.followups_deep_relu [--quick] [--workdir DIR] [--seed 0]
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from experiments import harness
from nc_jax import deep_ufm
from nc_jax.io import ExitCode

FULL = dict(classes=(2, 3, 4), depths=(2, 3, 4, 5), lambdas=(0.01, 0.02), n=1, extra_width=2, num_inits=24)
QUICK = dict(classes=(2, 4), depths=(4,), lambdas=(0.02,), n=1, extra_width=2, num_inits=16)
DESCENT = dict(scales=(0.5, 1.0, 1.5), num_steps=3000, learning_rate=0.05)
MARGIN = 1e-6  # relative: far above float64 rounding of f (~1e-15), far below the gaps found (~1e-2)
RANK_TOL = 1e-3  # singular values below RANK_TOL * the largest count as zero (endpoints sit near kinks)


def layer_spectra(problem, params) -> list[list[float]]:
    """Singular values of the class means of H and of every rectified layer, each divided by its
    largest (the low-rank bias shows as small trailing values)."""
    K, n = problem.num_classes, problem.n_per_class
    reps = [params.H] + [jax.nn.relu(Z) for Z in deep_ufm.pre_activations(params, problem)[:-1]]
    out = []
    for R in reps:
        s = np.linalg.svd(np.asarray(R).reshape(R.shape[0], K, n).mean(axis=2), compute_uv=False)
        out.append((s / s[0]).tolist() if s[0] > 0 else [0.0] * len(s))
    return out


def layer_ranks(problem, params) -> list[int]:
    """Numerical rank of the class means of H and of every rectified layer (tolerance RANK_TOL)."""
    return [int(np.sum(np.asarray(s) > RANK_TOL)) for s in layer_spectra(problem, params)]


def run_cell(K, L, lam, cfg, key) -> dict:
    problem = deep_ufm.DeepUFMProblem(K, cfg["n"], (K + cfg["extra_width"],) * L, lambda_W=lam, lambda_H=lam,
                                      activation="relu")
    dnc_values = {fl: float(deep_ufm.objective(deep_ufm.dnc_point(problem, first_layer=fl), problem))
                  for fl in ("orthogonal", "simplex")}
    found = deep_ufm.search_below_dnc(problem, key=key, num_inits=cfg["num_inits"], margin=MARGIN, **DESCENT)
    f_dnc = found.f_dnc
    out = {"K": K, "L": L, "lambda": lam, "n": cfg["n"], "widths": list(problem.widths), "f_dnc": f_dnc,
           "dnc_point_values": dnc_values, "num_runs": int(cfg["num_inits"]), "num_finite": found.num_finite,
           "values": np.sort(found.values).tolist()}
    if found.best_params is not None:
        params = found.best_params
        out.update(best_value=found.best_value, best_grad_norm=found.best_grad_norm,
                   relative_gap=(found.best_value - f_dnc) / f_dnc, below_dnc=found.below, reached_dnc=found.reached,
                   best_ranks=layer_ranks(problem, params), best_spectra=layer_spectra(problem, params),
                   dnc_ranks=layer_ranks(problem, deep_ufm.dnc_point(problem)),
                   share_below=float(np.mean(found.values < f_dnc * (1 - MARGIN))))
        out["verdict"] = ("below DNC" if found.below else "reached DNC, none below" if found.reached
                          else "search stopped above DNC")
        if found.below:  # the counterexample: the point itself, re-evaluated from what is saved
            out["counterexample_params"] = harness.to_jsonable(params)
            out["counterexample_value"] = float(deep_ufm.objective(params, problem))
    return out


def summarize(cells: list[dict]) -> dict:
    beaten = [(c["K"], c["L"], c["lambda"]) for c in cells if c.get("below_dnc")]
    two_class = [c for c in cells if c["K"] == 2]
    beyond = [c for c in cells if c["K"] >= 3 and c["L"] >= 3]
    dnc_ok = all(abs(v - c["f_dnc"]) <= 1e-12 * c["f_dnc"] for c in cells for v in c["dnc_point_values"].values())
    return {
        "dnc_points_at_closed_form": dnc_ok,
        "beaten_cells": beaten,
        "cell_verdicts": {f"K={c['K']} L={c['L']} lambda={c['lambda']:g}": c.get("verdict", "no finite run")
                          for c in cells},
        # evidence for "DNC is optimal" only where the search reached the DNC level and went no lower
        "sukenik_2023_two_classes": ("refuted" if any(c.get("below_dnc") for c in two_class)
                                     else "not run" if not two_class
                                     else "evidence only" if all(c.get("reached_dnc") for c in two_class)
                                     else "inconclusive"),
        "sukenik_2024_beyond_two": ("confirmed" if any(c.get("below_dnc") for c in beyond)
                                    else "inconclusive" if beyond else "not run"),
        "two_layers_beaten": [(c["K"], c["lambda"]) for c in cells if c["L"] == 2 and c.get("below_dnc")],
        "min_relative_gap_beyond_two": min((c["relative_gap"] for c in beyond if "relative_gap" in c), default=None),
    }


def exit_status(result: dict) -> int:
    s = result["summary"]
    if not s["dnc_points_at_closed_form"] or s["sukenik_2023_two_classes"] == "refuted":
        return int(ExitCode.DISAGREEMENT)
    if s["sukenik_2024_beyond_two"] != "confirmed" or s["sukenik_2023_two_classes"] != "evidence only":
        return int(ExitCode.INCONCLUSIVE)
    return int(ExitCode.OK)


def draw(result: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg, cells = result["config"], result["cells"]
    lams = cfg["lambdas"]
    fig, axes = plt.subplots(1, len(lams), figsize=(3.4 * len(lams), 2.9), squeeze=False)
    for ax, lam in zip(axes[0], lams):
        grid = np.full((len(cfg["classes"]), len(cfg["depths"])), np.nan)
        for c in cells:
            if c["lambda"] == lam and "relative_gap" in c:
                i, j = cfg["classes"].index(c["K"]), cfg["depths"].index(c["L"])
                gap = 100 * c["relative_gap"]
                label = (f"{gap:.2f}%" if c["below_dnc"] else "= DNC" if c["reached_dnc"] else "search\nabove DNC")
                grid[i, j] = gap if c["below_dnc"] else 0.0 if c["reached_dnc"] else np.nan
                ax.text(j, i, f"{label}\n{c['best_ranks']}", ha="center", va="center", fontsize=5.5)
        # red below DNC, white at it; a search that stopped above it stays blank (no evidence)
        ax.imshow(-np.clip(grid, -8, 8), cmap="RdBu_r", vmin=-8, vmax=8)
        ax.set_xticks(range(len(cfg["depths"])), [str(d) for d in cfg["depths"]])
        ax.set_yticks(range(len(cfg["classes"])), [str(k) for k in cfg["classes"]])
        ax.set_xlabel("L (weight matrices)", fontsize=7)
        ax.set_ylabel("K (classes)", fontsize=7)
        ax.set_title(f"lambda = {lam:g}", fontsize=8)
    fig.suptitle("lowest value found vs f_DNC (red: below it); class-mean ranks per layer (tol 1e-3)", fontsize=8)
    harness.save_png(fig, path, dpi=90)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    harness.add_quick_arg(parser, "K = 2 and 4 at L = 4, one lambda, 16 inits (< 1 min)")
    harness.add_workdir_arg(parser, "followups_deep_relu")
    harness.add_seed_arg(parser)
    args = parser.parse_args(argv)
    harness.require_x64()
    cfg = dict(QUICK if args.quick else FULL)
    workdir = harness.make_workdir(args.workdir, "followups_deep_relu")
    key = jax.random.key(args.seed)
    t0 = time.perf_counter()
    cells = []
    for ki, K in enumerate(cfg["classes"]):
        for li, L in enumerate(cfg["depths"]):
            for ai, lam in enumerate(cfg["lambdas"]):
                c = run_cell(K, L, lam, cfg, jax.random.fold_in(key, 10000 * ki + 100 * li + ai))
                cells.append(c)
                harness.progress(f"K={K} L={L} lambda={lam:g}: f_DNC {c['f_dnc']:.8f} best "
                                 f"{c.get('best_value', float('nan')):.8f} ({100 * c.get('relative_gap', np.nan):+.3f}%)"
                                 f" ranks {c.get('best_ranks')} ({time.perf_counter() - t0:.0f} s)")
    summary = summarize(cells)
    summary["seconds"] = time.perf_counter() - t0
    result = {"config": cfg, "descent": DESCENT, "margin": MARGIN, "rank_tol": RANK_TOL, "seed": args.seed,
              "quick": args.quick, "load": harness.load_info(), "summary": summary, "cells": cells}
    # the counterexamples alone, small enough to keep beside the docs (docs/followups/)
    points = [{k: c[k] for k in ("K", "L", "lambda", "n", "widths", "f_dnc", "counterexample_value",
                                 "counterexample_params")} for c in cells if c.get("below_dnc")]
    harness.write_json(workdir / "followups_deep_relu_counterexamples.json", points)
    return harness.finish(workdir, "followups_deep_relu", result, lambda p: draw(result, p), f"summary: {summary}")


if __name__ == "__main__":
    harness.run(lambda: exit_status(main()), x64=True)
