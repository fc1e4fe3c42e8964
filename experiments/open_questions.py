"""The paper's open questions, probed numerically (evidence, not proof).

(a) Strict saddle property WITH bias for d <= K (Theorem 3.3 proves it for d > K only;
    Section 3.2 conjectures it for every d): for d in {K-2, K-1, K}, the biased critical
    points of Lemma B.2 (``theory.ufm_critical_point`` with bias, every r <= min(d, K-1))
    are certified (Lanczos witness of negative curvature for those above f*), escaped
    (step + descent + refinement should reach a certified global minimum), and a
    multistart ``explore`` classifies the endpoints: is any spurious local minimum found?
(b) Rescaled MSE (eq. 4) under the UFM (Section 3.1: "we expect that similar global
    optimality results should also hold"): ``explore`` with loss="rescaled_mse" over a
    small (alpha, M) grid. Are all certified local minima at one value (spread of values),
    and do the endpoints show NC (NC1, NC2 of W and of the centered class means, NC3)?
(c) Cross-entropy under the UFM (engine="full", loss="ce"; small K, n, d): the same
    questions (Zhu et al. 2021 prove a benign landscape with NC for d >= K; the paper
    leaves CE with its MSE-style analysis as future work).

No closed form is known for (b) and (c): a run is ``local_minimum`` when converged to
gradient norm 1e-10 with a PSD-certified Hessian; equal values of all such runs and
collapsed metrics are the evidence for "no spurious minima, NC at the minimum".

Writes ``open_questions.json`` and ``open_questions.png`` and prints a summary.

Usage: python -m experiments.open_questions [--quick] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import functools
import time

import jax
import numpy as np
from matplotlib.figure import Figure

from experiments import harness
from experiments.harness import class_counts, saddle_probe
from nc_jax import landscape, metrics, plotting, theory
from nc_jax.ufm import UFMProblem

FULL = dict(
    a=dict(K=5, n=4, d_offsets=(-2, -1, 0), lambda_W=1e-2, lambda_H=2e-2, lambda_b=1e-2, num_inits=32,
           num_steps=2000),
    b=dict(K=4, n=5, d=(3, 6), lambda_W=5e-3, lambda_H=5e-3, lambda_b=5e-3,
           alpha_M=((1.0, 1.0), (2.0, 1.0), (1.0, 3.0), (2.0, 3.0), (4.0, 5.0)), num_inits=32, num_steps=3000),
    c=dict(K=4, n=5, d=(3, 4, 6), lambda_W=5e-3, lambda_H=5e-3, lambda_b=5e-3, num_inits=32, num_steps=3000),
)
QUICK = dict(
    a=dict(K=3, n=2, d_offsets=(-1,), lambda_W=1e-2, lambda_H=2e-2, lambda_b=1e-2, num_inits=4, num_steps=300),
    b=dict(K=3, n=2, d=(4,), lambda_W=5e-3, lambda_H=5e-3, lambda_b=5e-3, alpha_M=((1.0, 1.0), (2.0, 3.0)),
           num_inits=4, num_steps=300),
    c=dict(K=3, n=2, d=(4,), lambda_W=5e-3, lambda_H=5e-3, lambda_b=5e-3, num_inits=4, num_steps=300),
)


def _finite(x):
    x = np.asarray(x, dtype=float)
    return x[np.isfinite(x)]


def _stat(x, fn):
    x = _finite(x)
    return float(fn(x)) if x.size else None


@functools.partial(jax.jit, static_argnames=())
def _centered_nc2(W):
    return jax.vmap(lambda w: metrics.nc2(w, center=True))(W)


def _explore_summary(problem: UFMProblem, *, key, num_inits, num_steps, learning_rate, engine="auto") -> dict:
    res = landscape.explore(problem, key=key, num_inits=num_inits, num_steps=num_steps,
                            learning_rate=learning_rate, engine=engine)
    names = landscape.class_names(res.classification.label)
    labels = np.asarray(res.classification.label)
    minima = np.isin(labels, (landscape.RunClass.LOCAL_MINIMUM, landscape.RunClass.GLOBAL_MINIMUM,
                              landscape.RunClass.DEGENERATE))
    vals = res.value[minima]
    rep = res.report
    sel = lambda x: np.asarray(x)[minima]  # noqa: E731
    out = {
        "counts": class_counts(names),
        "num_minima": int(minima.sum()),
        "min_value": _stat(vals, np.min),
        "value_spread": _stat(vals, np.ptp),
        "max_grad_norm": _stat(res.grad_norm, np.max),
        "nc1_max": _stat(sel(rep.nc1), np.max),
        "descent_nc1_median": _stat(res.descent_nc1, np.median),
        "nc2_W_max": _stat(sel(rep.nc2), np.max),
        "nc2_W_centered_max": _stat(sel(_centered_nc2(res.params.W)), np.max),
        "nc2_means_centered_max": _stat(sel(rep.nc2_means), np.max),
        "nc3_max": _stat(sel(rep.nc3), np.max),
        "accuracy_min": _stat(sel(rep.accuracy), np.min),
        "bias_abs_max": None if res.params.b is None else _stat(np.abs(sel(res.params.b)), np.max),
        "bias_spread_max": None if res.params.b is None else _stat(np.ptp(sel(res.params.b), axis=1), np.max),
        "f_star": res.f_star,
        "seconds": res.seconds,
    }
    if res.f_star is not None:
        out["max_gap"] = _stat(np.abs(res.value - res.f_star), np.max)
    return out


def question_a(cfg, key) -> dict:
    K, n = cfg["K"], cfg["n"]
    rows = []
    for off in cfg["d_offsets"]:
        d = K + off
        if d < 1:
            continue
        problem = UFMProblem(K, n, d, cfg["lambda_W"], cfg["lambda_H"], cfg["lambda_b"], bias=True)
        gm = theory.global_minimum(problem)
        probes = []
        for r in range(min(d, K - 1) + 1):
            key, sub = jax.random.split(key)
            p = saddle_probe(problem, r, key=sub, num_steps=cfg["num_steps"],
                      learning_rate=landscape.default_learning_rate(problem))
            p["r"] = r
            p["above_f_star"] = bool(p["value_at_saddle"] > p["f_star"] + 1e-9 * max(1.0, abs(p["f_star"])))
            probes.append(p)
            harness.progress(f"(a) d={d} r={r}: f-f* {p['value_at_saddle'] - p['f_star']:.3e} lambda_min closed(b fixed) "
                             f"{p['lambda_min_closed_form']:+.6f} lanczos {p['lambda_min_lanczos']:+.6f} "
                             f"{p['verdict']} -> {p['final_class']}")
        key, sub = jax.random.split(key)
        ex = _explore_summary(problem, key=sub, num_inits=cfg["num_inits"], num_steps=cfg["num_steps"],
                              learning_rate=0.5)
        harness.progress(f"(a) d={d} explore: {ex['counts']}")
        rows.append({"d": d, "regime": theory.regime_name(gm.regime), "probes": probes, "explore": ex})
    saddles = [p for row in rows for p in row["probes"] if p["above_f_star"]]
    spurious = sum(row["explore"]["counts"].get("spurious_local_minimum", 0) for row in rows)
    return {
        "config": cfg,
        "rows": rows,
        "finding": {
            "num_saddles_constructed": len(saddles),
            "all_saddles_negative_curvature": all(p["verdict"] == "strict_saddle" for p in saddles),
            "all_escapes_to_global": all(p["final_class"] == "global_minimum"
                                         for row in rows for p in row["probes"]),
            "spurious_minima_found": spurious,
            "explore_all_global": all(set(row["explore"]["counts"]) == {"global_minimum"} for row in rows),
        },
    }


def question_b(cfg, key) -> dict:
    rows = []
    for d in cfg["d"]:
        for alpha, M in cfg["alpha_M"]:
            problem = UFMProblem(cfg["K"], cfg["n"], d, cfg["lambda_W"], cfg["lambda_H"], cfg["lambda_b"],
                                 loss="rescaled_mse", alpha=alpha, M=M)
            key, sub = jax.random.split(key)
            # the true-class weight alpha and target M scale the curvature
            ex = _explore_summary(problem, key=sub, num_inits=cfg["num_inits"], num_steps=cfg["num_steps"],
                                  learning_rate=0.5 / max(alpha, 1.0))
            ex.update(d=d, alpha=alpha, M=M, name=f"rescaled d={d} a={alpha:g} M={M:g}")
            rows.append(ex)
            harness.progress(f"(b) d={d} alpha={alpha:g} M={M:g}: {ex['counts']} spread {ex['value_spread']} "
                             f"nc1 {ex['nc1_max']} nc2(W,c) {ex['nc2_W_centered_max']} nc2(means) "
                             f"{ex['nc2_means_centered_max']} nc3 {ex['nc3_max']}")
    return {"config": cfg, "rows": rows, "finding": _minima_finding(rows)}


def question_c(cfg, key) -> dict:
    rows = []
    for d in cfg["d"]:
        problem = UFMProblem(cfg["K"], cfg["n"], d, cfg["lambda_W"], cfg["lambda_H"], cfg["lambda_b"], loss="ce")
        key, sub = jax.random.split(key)
        ex = _explore_summary(problem, key=sub, num_inits=cfg["num_inits"], num_steps=cfg["num_steps"],
                              learning_rate=0.5, engine="full")
        ex.update(d=d, name=f"ce d={d}")
        rows.append(ex)
        harness.progress(f"(c) d={d}: {ex['counts']} spread {ex['value_spread']} nc1 {ex['nc1_max']} nc2(W,c) "
                         f"{ex['nc2_W_centered_max']} nc2(means) {ex['nc2_means_centered_max']} nc3 {ex['nc3_max']} "
                         f"|b| {ex['bias_abs_max']}")
    return {"config": cfg, "rows": rows, "finding": _minima_finding(rows)}


def _minima_finding(rows) -> dict:
    bad = ("strict_saddle", "inconclusive", "not_converged", "diverged")
    return {
        "max_value_spread": max((r["value_spread"] for r in rows if r["value_spread"] is not None), default=None),
        "runs_not_minima": sum(r["counts"].get(k, 0) for r in rows for k in bad),
        "max_nc1": max((r["nc1_max"] for r in rows if r["nc1_max"] is not None), default=None),
        "max_nc2_means_centered_d_ge_K_minus_1": max(
            (r["nc2_means_centered_max"] for r in rows if r["nc2_means_centered_max"] is not None), default=None),
        "max_nc3": max((r["nc3_max"] for r in rows if r["nc3_max"] is not None), default=None),
    }


def _plot(result, path):
    fig = Figure(figsize=(15, 4.5), layout="constrained")
    axes = fig.subplots(1, 3)
    rows_a = [{"name": f"d={row['d']} ({row['regime']})", "counts": row["explore"]["counts"]}
              for row in result["a"]["rows"]]
    plotting.plot_class_counts(rows_a, ax=axes[0], title="(a) biased UFM, d <= K: explore classes")
    for row in result["a"]["rows"]:
        closed = [p["lambda_min_closed_form"] for p in row["probes"]]
        lanczos = [p["lambda_min_lanczos"] for p in row["probes"]]
        axes[1].scatter(closed, lanczos, label=f"(a) d={row['d']}")
    axes[1].axhline(0, color="k", lw=0.6)
    axes[1].axvline(0, color="k", lw=0.6)
    axes[1].set_xlabel("lambda_min, b-fixed closed form (upper bound)")
    axes[1].set_ylabel("lambda_min, Lanczos (full Hessian)")
    axes[1].legend(fontsize=7)
    axes[1].set_title("(a) biased critical points", fontsize=9)
    names, nc = [], {"nc1": [], "nc2_means": [], "nc3": []}
    for q in ("b", "c"):
        for r in result[q]["rows"]:
            names.append(r["name"])
            nc["nc1"].append(r["nc1_max"])
            nc["nc2_means"].append(r["nc2_means_centered_max"])
            nc["nc3"].append(r["nc3_max"])
    y = np.arange(len(names))
    for i, (k, v) in enumerate(nc.items()):
        vals = np.maximum(np.array([np.nan if x is None else x for x in v], dtype=float), 1e-18)
        axes[2].scatter(vals, y + 0.2 * (i - 1), label=k, s=14)
    axes[2].set_xscale("log")
    axes[2].set_yticks(y, names, fontsize=6)
    axes[2].invert_yaxis()
    axes[2].set_xlabel("max over certified minima (floored at 1e-18)")
    axes[2].legend(fontsize=7)
    axes[2].set_title("(b) rescaled MSE, (c) CE: NC at the minima", fontsize=9)
    harness.save_png(fig, path, dpi=120)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    harness.add_quick_arg(parser)
    harness.add_workdir_arg(parser, "open_questions")
    harness.add_seed_arg(parser)
    args = parser.parse_args(argv)
    harness.require_x64()
    cfg = QUICK if args.quick else FULL
    workdir = harness.make_workdir(args.workdir, "open_questions")
    ka, kb, kc = jax.random.split(jax.random.key(args.seed), 3)
    t0 = time.perf_counter()
    result = {"quick": args.quick, "seed": args.seed, "load": harness.load_info()}
    result["a"] = question_a(cfg["a"], ka)
    result["b"] = question_b(cfg["b"], kb)
    result["c"] = question_c(cfg["c"], kc)
    result["seconds"] = time.perf_counter() - t0
    findings = [f"({q}) finding: {result[q]['finding']}" for q in ("a", "b", "c")]
    return harness.finish(workdir, "open_questions", result, lambda path: _plot(result, path), *findings)


if __name__ == "__main__":
    harness.run(main, x64=True)
