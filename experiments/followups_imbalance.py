"""Class-imbalanced UFM: minority-collapse phase diagram and landscape verdicts (issue 12, item 1).

K = 4 classes, two majority classes of n_maj = R and two minority classes of n_min = 1
sample (so R = n_maj / n_min is the imbalance ratio), d = 4, lambda_W = lambda_H =
lambda_b = lambda. Three models: MSE without bias (closed form: theory/_imbalanced.py),
MSE with bias and cross-entropy with bias (no closed form). Each (model, R, lambda) cell is
explored by ``nc_jax.landscape.explore`` on the class-mean UFM
(:mod:`nc_jax.class_mean_ufm`: exact at every critical point, the sizes a traced leaf so one
program serves every R; real R between the integers is the weighted UFM): multistart
descent, Newton refinement to gradient 1e-10, second-order certificates. Per cell: the
verdict, the minimum levels, and the geometry at the lowest certified minimum (classifier
row norms, class-mean norms, cosines between rows and between means, the bias).

Minority collapse is measured as ||w_3 - w_4|| (the two minority classifier rows merge;
relative to ||w_1 - w_2||, collapsed below 1e-6) and, separately, whether the minority
rows vanish (||w_3|| / ||w_1|| < 1e-6). Its onset per (model, lambda) is bracketed on the R
grid and refined by bisection in R (each point explored and certified). For MSE without
bias the theory says collapse iff n_min <= N^2 lambda_W lambda_H, i.e. R >= R_c =
1/(2 lambda sqrt(n_min)) - 1; with a bias the same threshold is predicted for the
*merging* (the swap-antisymmetric direction (e_3 - e_4) is a singular vector of the
bias-shifted target with singular value sqrt(n_min) whenever b_3 = b_4), not for the rows
vanishing.

Saddle probes: per (model, lambda), at R = 0.7 R_c and 1.3 R_c, the merged-minority
critical point (Newton in the subspace w_3 = w_4, g_3 = g_4, b_3 = b_4; critical for the
full model by the swap symmetry) with its exact (dense) Hessian spectrum and the curvature
along the escape direction, against the closed form (lambda_W + lambda_H)/2 -
sqrt(((lambda_W - lambda_H)/2)^2 + n_min/N^2) (:func:`nc_jax.class_mean_ufm.merge_escape_curvature`):
a strict saddle below R_c, a second-order point above.

Writes ``followups_imbalance.json`` and ``followups_imbalance.png``; exits 1 when a closed
form is contradicted and 3 when a cell could not be certified (:func:`exit_status`).

Usage: python -m experiments.followups_imbalance [--quick] [--workdir DIR] [--seed 0]
"""

from __future__ import annotations

import argparse
import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments import harness
from nc_jax import class_mean_ufm as cm
from nc_jax import landscape
from nc_jax.io import ExitCode

MODELS = {"mse_no_bias": ("mse", False), "mse_bias": ("mse", True), "ce": ("ce", True)}
FULL = dict(models=tuple(MODELS), R=(1, 1.5, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32),
            lam=(0.022, 0.03, 0.04, 0.05, 0.065, 0.08), num_inits=8, num_steps=1500, bisect=10, d=4, n_min=1)
QUICK = dict(models=("mse_no_bias",), R=(1, 4, 8, 16), lam=(0.05,), num_inits=4, num_steps=600, bisect=4, d=4,
             n_min=1)
EXPLORE = dict(num_matvecs=12, restarts=10, num_starts=2, learning_rate=0.5)
COLLAPSE_TOL = 1e-6
# second-order points (the labels whose values make the levels)
_SECOND_ORDER = ("global_minimum", "degenerate", "local_minimum", "spurious_local_minimum", "below_closed_form")


def theory_onset(lam: float, n_min: float) -> float:
    """R_c = 1/(2 lambda sqrt(n_min)) - 1: n_min = N^2 lambda^2 with N = 2 n_min (R + 1)."""
    return 1.0 / (2.0 * lam * math.sqrt(n_min)) - 1.0


def make_problem(name: str, R: float, lam: float, cfg: dict) -> cm.ClassMeanUFM:
    loss, bias = MODELS[name]
    n = cfg["n_min"]
    sizes = jnp.asarray([R * n, R * n, n, n], jnp.result_type(float))
    return cm.ClassMeanUFM(sizes, cfg["d"], lam, lam, lam, bias=bias, loss=loss)


def run_cell(name: str, R: float, lam: float, cfg: dict, key, num_inits: int) -> dict:
    """Explore one cell; the geometry at the lowest certified second-order point."""
    problem = make_problem(name, R, lam, cfg)
    res = landscape.explore(cm.model(problem), problem, key=key, num_inits=num_inits, num_steps=cfg["num_steps"],
                            **EXPLORE)
    summary = landscape.summarize(res)
    names = np.asarray(landscape.class_names(res.classification.label))
    second = np.isin(names, _SECOND_ORDER)
    cell = {"model": name, "R": float(R), "lambda": float(lam), "verdict": summary.verdict.name,
            "counts": {k: v for k, v in summary.counts.items() if v}, "levels": list(summary.minimum_values),
            "level_counts": list(summary.minimum_counts), "f_star": res.f_star,
            "max_grad_norm": float(np.max(res.grad_norm)), "strict_saddles": int(np.sum(names == "strict_saddle")),
            "theory_collapsed": 1.0 <= (2 * cfg["n_min"] * (R + 1)) ** 2 * lam * lam / cfg["n_min"]}
    if not second.any():
        cell.update(collapsed=None, vanished=None, geometry=None)
        return cell
    m = res.measurements
    idx = np.flatnonzero(second)
    rho = np.asarray(m["w_diff_last_two"])[idx] / np.maximum(np.asarray(m["w_diff_first_two"])[idx], 1e-300)
    w_norm = np.asarray(m["w_norm"])[idx]
    vanish = w_norm[:, -1] / np.maximum(w_norm[:, 0], 1e-300)
    collapsed, vanished = rho < COLLAPSE_TOL, vanish < COLLAPSE_TOL
    best = idx[int(np.argmin(res.value[idx]))]
    geo = {k: np.asarray(v[best]).tolist() for k, v in m.items()}
    cell.update(
        # every certified second-order point must agree on the flag, else no verdict on collapse
        collapsed=bool(collapsed[0]) if np.all(collapsed == collapsed[0]) else None,
        vanished=bool(vanished[0]) if np.all(vanished == vanished[0]) else None,
        rho=float(rho[int(np.argmin(res.value[idx]))]),
        minority_row_ratio=float(vanish[int(np.argmin(res.value[idx]))]),
        geometry=geo,
    )
    if summary.verdict.name in ("SPURIOUS", "MULTIPLE_LEVELS"):  # a counterexample: keep the points
        cell["counterexample_params"] = harness.to_jsonable(jax.tree.map(lambda x: x[idx], res.params))
    return cell


def onset(cells: list, flag: str):
    """(R below, R at or above) bracketing the onset of ``flag`` on a monotone R grid, or None."""
    cells = sorted(cells, key=lambda c: c["R"])
    flags = [c[flag] for c in cells]
    if any(f is None for f in flags):
        return None
    if not any(flags):
        return (cells[-1]["R"], None)
    first = flags.index(True)
    if not all(flags[first:]):  # not monotone in R
        return None
    return (cells[first - 1]["R"] if first else None, cells[first]["R"])


def bisect_onset(name, lam, lo, hi, cfg, key, flag="collapsed") -> dict:
    """Shrink [lo, hi] (flag False at lo, True at hi) by certified explorations in between."""
    steps = []
    for i in range(cfg["bisect"]):
        mid = 0.5 * (lo + hi)
        cell = run_cell(name, mid, lam, cfg, jax.random.fold_in(key, i), cfg["num_inits"])  # same shapes: no recompile
        steps.append({"R": mid, "verdict": cell["verdict"], flag: cell[flag]})
        if cell[flag] is None:
            break
        lo, hi = (lo, mid) if cell[flag] else (mid, hi)
    return {"bracket": [lo, hi], "steps": steps}


def saddle_probe(name: str, R: float, lam: float, cfg: dict, key) -> dict:
    """The merged-minority critical point (w_3 = w_4, g_3 = g_4, b_3 = b_4; Newton in that
    subspace), its dense Hessian (the class-mean UFM has 4 d + d 4 + 4 parameters: exact
    eigenvalues) and the curvature along the escape direction against the closed form
    (lambda_W + lambda_H)/2 - sqrt(((lambda_W - lambda_H)/2)^2 + n_min/N^2)."""
    from jax.flatten_util import ravel_pytree

    from nc_jax import conditioning

    problem = make_problem(name, R, lam, cfg)
    x, sub_grad = cm.merged_critical_point(problem, key)
    grad = float(np.linalg.norm(np.asarray(ravel_pytree(jax.grad(cm.objective)(x, problem))[0])))
    H = np.asarray(conditioning.dense_hessian(cm.objective)(x, problem))
    eig = np.linalg.eigvalsh(0.5 * (H + H.T))
    s = math.sqrt(cfg["n_min"]) / float(np.sum(np.asarray(problem.class_sizes)))
    _, vecs = np.linalg.eigh(np.array([[lam, -s], [-s, lam]]))
    D = np.asarray(ravel_pytree(cm.merge_escape_direction(x, problem, *vecs[:, 0]))[0])
    predicted = cm.merge_escape_curvature(problem)
    tau = 1e-8 * max(1.0, abs(eig[-1]))
    return {"model": name, "R": R, "lambda": lam, "grad_norm": grad, "value": float(cm.objective(x, problem)),
            "lambda_min": float(eig[0]), "escape_curvature": float(D @ H @ D / (D @ D)),
            "predicted_escape_curvature": predicted,
            "label": ("not_converged" if grad > 1e-10 else "strict_saddle" if eig[0] < -tau
                      else "second_order_point")}


def draw(result: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg, models = result["config"], result["config"]["models"]
    R, lam = np.asarray(cfg["R"], float), np.asarray(cfg["lam"], float)
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.4), squeeze=False)
    for ax, name in zip(axes[0], models):
        grid = np.full((lam.size, R.size), np.nan)
        for c in result["cells"]:
            if c["model"] == name and c.get("rho") is not None:
                grid[list(lam).index(c["lambda"]), list(R).index(c["R"])] = np.log10(max(c["rho"], 1e-16))
        im = ax.imshow(grid, origin="lower", aspect="auto", cmap="viridis", vmin=-16, vmax=0.5,
                       extent=(-0.5, R.size - 0.5, -0.5, lam.size - 0.5))
        ax.set_xticks(range(R.size), [f"{r:g}" for r in R], fontsize=6)
        ax.set_yticks(range(lam.size), [f"{v:g}" for v in lam], fontsize=7)
        ax.set_xlabel("R = n_major / n_minor")
        ax.set_ylabel("lambda")
        # theory onset and measured (bisected) onsets in grid coordinates (interpolated in R)
        xs = np.interp([theory_onset(v, cfg["n_min"]) for v in lam], R, np.arange(R.size), left=np.nan, right=np.nan)
        ax.plot(xs, np.arange(lam.size), "w--", lw=1.2, label="theory R_c (no bias)")
        meas = [o for o in result["onsets"] if o["model"] == name and o.get("bisected")]
        if meas:
            ax.plot(np.interp([0.5 * sum(o["bisected"]["bracket"]) for o in meas], R, np.arange(R.size)),
                    [list(lam).index(o["lambda"]) for o in meas], "r.", ms=7, label="measured onset")
        ax.set_title(f"{name}: log10 ||w3-w4|| / ||w1-w2||", fontsize=8)
        ax.legend(fontsize=6, loc="upper right")
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8)
    harness.save_png(fig, path, dpi=80)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    harness.add_quick_arg(parser, "one model (MSE without bias), one lambda, four R (< 1 min)")
    harness.add_workdir_arg(parser, "followups_imbalance")
    harness.add_seed_arg(parser)
    args = parser.parse_args(argv)
    harness.require_x64()
    cfg = dict(QUICK if args.quick else FULL)
    workdir = harness.make_workdir(args.workdir, "followups_imbalance")
    key = jax.random.key(args.seed)
    t0 = time.perf_counter()
    cells, onsets, probes = [], [], []
    for mi, name in enumerate(cfg["models"]):
        for li, lam in enumerate(cfg["lam"]):
            row = []
            for ri, R in enumerate(cfg["R"]):
                cell = run_cell(name, R, lam, cfg, jax.random.fold_in(key, 10000 * mi + 100 * li + ri),
                                cfg["num_inits"])
                row.append(cell)
                harness.progress(f"{name} lambda={lam:g} R={R:g}: {cell['verdict']} collapsed={cell['collapsed']} "
                                 f"vanished={cell['vanished']} rho={cell.get('rho', float('nan')):.2e} "
                                 f"({time.perf_counter() - t0:.0f} s)")
            cells += row
            entry = {"model": name, "lambda": lam, "theory_R_c_no_bias": theory_onset(lam, cfg["n_min"])}
            for flag in ("collapsed", "vanished"):
                bracket = onset(row, flag)
                entry[f"grid_bracket_{flag}"] = bracket
                if flag == "collapsed" and bracket is not None and None not in bracket:
                    entry["bisected"] = bisect_onset(name, lam, bracket[0], bracket[1], cfg,
                                                     jax.random.fold_in(key, 777 + 10000 * mi + 100 * li))
            for R in (0.7 * entry["theory_R_c_no_bias"], 1.3 * entry["theory_R_c_no_bias"]):
                probes.append(saddle_probe(name, R, lam, cfg, jax.random.fold_in(key, 555 + 10000 * mi + 100 * li)))
                harness.progress(f"{name} lambda={lam:g} R={R:.3g}: merged point {probes[-1]['label']}, "
                                 f"escape curvature {probes[-1]['escape_curvature']:.6g} "
                                 f"(closed form {probes[-1]['predicted_escape_curvature']:.6g})")
            onsets.append(entry)
            harness.progress(f"{name} lambda={lam:g}: onset {entry.get('bisected', {}).get('bracket')} "
                             f"(grid {entry['grid_bracket_collapsed']}), "
                             f"theory (no bias) {entry['theory_R_c_no_bias']:.4g}")
    per_model = {}
    for name in cfg["models"]:
        mine = [c for c in cells if c["model"] == name]
        per_model[name] = {
            "verdicts": harness.class_counts(c["verdict"] for c in mine),
            "strict_saddles_found": sum(c["strict_saddles"] for c in mine),
            "cells_with_a_spurious_candidate": [(c["R"], c["lambda"]) for c in mine
                                                if c["verdict"] in ("SPURIOUS", "MULTIPLE_LEVELS")],
            "benign_on_the_evidence": all(c["verdict"] in ("BENIGN", "SINGLE_LEVEL") for c in mine),
            "merged_point_strict_saddle_below_R_c": all(
                p["label"] == "strict_saddle" for p in probes if p["model"] == name
                and p["R"] < theory_onset(p["lambda"], cfg["n_min"])),
            "merged_point_second_order_above_R_c": all(
                p["label"] == "second_order_point" for p in probes if p["model"] == name
                and p["R"] > theory_onset(p["lambda"], cfg["n_min"])),
            "max_escape_curvature_error": max(abs(p["escape_curvature"] - p["predicted_escape_curvature"])
                                              for p in probes if p["model"] == name),
            "onset_within_theory_bracket": [
                (o["lambda"], o["bisected"]["bracket"][0] <= o["theory_R_c_no_bias"] <= o["bisected"]["bracket"][1])
                for o in onsets if o["model"] == name and o.get("bisected")],
        }
    summary = {"per_model": per_model, "seconds": time.perf_counter() - t0}
    result = {"config": cfg, "explore": EXPLORE, "seed": args.seed, "quick": args.quick, "load": harness.load_info(),
              "summary": summary, "onsets": onsets, "saddle_probes": probes, "cells": cells}
    return harness.finish(workdir, "followups_imbalance", result, lambda p: draw(result, p), f"summary: {summary}")


def exit_status(result: dict) -> int:
    """The script's exit status (:class:`nc_jax.io.ExitCode`): DISAGREEMENT when a closed form
    is contradicted (MSE without bias not BENIGN at the closed-form optimum, a measured onset
    outside its bisection bracket's theory value, or a merged-minority probe on the wrong side
    of the threshold), INCONCLUSIVE when a cell's runs could not be certified, else OK."""
    per_model = result["summary"]["per_model"]
    contradicted = any(
        not s["merged_point_strict_saddle_below_R_c"] or not s["merged_point_second_order_above_R_c"]
        or not all(inside for _, inside in s["onset_within_theory_bracket"])
        for s in per_model.values())
    if "mse_no_bias" in per_model:
        contradicted |= set(per_model["mse_no_bias"]["verdicts"]) != {"BENIGN"}
    if contradicted:
        return int(ExitCode.DISAGREEMENT)
    if any(c["verdict"] == "INCONCLUSIVE" for c in result["cells"]):
        return int(ExitCode.INCONCLUSIVE)
    return int(ExitCode.OK)


if __name__ == "__main__":
    harness.run(lambda: exit_status(main()), x64=True)
