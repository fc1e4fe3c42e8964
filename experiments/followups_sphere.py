"""Normalized features and classifier (no weight decay): is the Riemannian landscape benign?
(issue 12, fourth model).

The model is :mod:`nc_jax.sphere_ufm`: CE(tau W H) with unit classifier rows and unit
features, no bias (Yaras et al., NeurIPS 2022), explored through an exact unconstrained
parametrization (normalization plus a radial penalty that leaves critical points and
their Riemannian inertia unchanged). With d >= K - 1 the global value is the simplex ETF's,
f* = log(1 + (K-1) exp(-tau K/(K-1))), and the explorer's verdict is BENIGN or SPURIOUS;
with d < K - 1 (no ETF fits; no theorem) it reports the levels of the certified minima
(SINGLE_LEVEL or MULTIPLE_LEVELS) and the geometry at the lowest one.

Writes ``followups_sphere.json`` (geometry at the lowest certified minimum of every case)
and ``followups_sphere.png`` (its class-mean cosines).

Usage: python -m experiments.followups_sphere [--quick] [--workdir DIR] [--seed 0]
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from experiments import harness
from nc_jax import landscape
from nc_jax import sphere_ufm as sph

FULL = dict(cases=((4, 3), (4, 4), (5, 2), (6, 2), (6, 3)), tau=(2.0, 8.0), n=2, num_inits=16)
QUICK = dict(cases=((3, 2),), tau=(5.0,), n=2, num_inits=4)
EXPLORE = dict(num_steps=1000, learning_rate=0.2, num_matvecs=20, restarts=10, num_starts=2)


def run_case(K, d, tau, cfg, key) -> dict:
    problem = sph.SphereUFM(K, cfg["n"], d, tau, 1.0)
    res = landscape.explore(sph.model(problem), problem, key=key, num_inits=cfg["num_inits"], **EXPLORE)
    s = landscape.summarize(res)
    names = np.asarray(landscape.class_names(res.classification.label))
    second = np.isin(names, ("global_minimum", "degenerate", "local_minimum", "spurious_local_minimum"))
    out = {"K": K, "d": d, "tau": tau, "n": cfg["n"], "f_star": res.f_star, "verdict": s.verdict.name,
           "levels": list(s.minimum_values), "level_counts": list(s.minimum_counts),
           "counts": {k: v for k, v in s.counts.items() if v}, "reasons": list(s.reasons),
           "max_grad_norm": float(np.max(res.grad_norm))}
    if second.any():
        idx = np.flatnonzero(second)
        best = idx[int(np.argmin(res.value[idx]))]
        out["geometry"] = {k: np.asarray(v[best]).tolist() for k, v in res.measurements.items()}
        if s.verdict.name in ("SPURIOUS", "MULTIPLE_LEVELS"):  # counterexample: keep every minimum found
            out["counterexample_params"] = harness.to_jsonable(jax.tree.map(lambda x: x[idx], res.params))
            out["counterexample_values"] = res.value[idx].tolist()
    return out


def draw(result: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = [c for c in result["cases"] if c.get("geometry")]
    fig, axes = plt.subplots(1, max(1, len(cases)), figsize=(2.6 * max(1, len(cases)), 2.8), squeeze=False)
    for ax, c in zip(axes[0], cases):
        ax.imshow(np.asarray(c["geometry"]["h_cos"]), vmin=-1, vmax=1, cmap="RdBu_r")
        ax.set_title(f"K={c['K']} d={c['d']} tau={c['tau']:g}\n{c['verdict']}", fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("class-mean cosines at the lowest certified minimum", fontsize=8)
    harness.save_png(fig, path, dpi=80)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    harness.add_quick_arg(parser, "K=3, d=2, one tau, 4 inits (< 1 min)")
    harness.add_workdir_arg(parser, "followups_sphere")
    harness.add_seed_arg(parser)
    args = parser.parse_args(argv)
    harness.require_x64()
    cfg = dict(QUICK if args.quick else FULL)
    workdir = harness.make_workdir(args.workdir, "followups_sphere")
    key = jax.random.key(args.seed)
    t0 = time.perf_counter()
    cases = []
    for ci, (K, d) in enumerate(cfg["cases"]):
        for ti, tau in enumerate(cfg["tau"]):
            c = run_case(K, d, tau, cfg, jax.random.fold_in(key, 100 * ci + ti))
            cases.append(c)
            harness.progress(f"K={K} d={d} tau={tau:g}: {c['verdict']} levels {c['levels']} {c['counts']} "
                             f"({time.perf_counter() - t0:.0f} s)")
    summary = {"verdicts": {f"K={c['K']} d={c['d']} tau={c['tau']:g}": c["verdict"] for c in cases},
               "etf_cases_benign": all(c["verdict"] == "BENIGN" for c in cases if c["f_star"] is not None),
               "spurious_found": [(c["K"], c["d"], c["tau"]) for c in cases
                                  if c["verdict"] in ("SPURIOUS", "MULTIPLE_LEVELS")],
               "seconds": time.perf_counter() - t0}
    result = {"config": cfg, "explore": EXPLORE, "seed": args.seed, "quick": args.quick, "load": harness.load_info(),
              "summary": summary, "cases": cases}
    return harness.finish(workdir, "followups_sphere", result, lambda p: draw(result, p), f"summary: {summary}")


if __name__ == "__main__":
    harness.run(main, x64=True)
