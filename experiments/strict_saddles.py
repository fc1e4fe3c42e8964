"""Theorems 3.2 and 3.3: every non-global critical point of the MSE UFM is a strict saddle.

For bias=False (Theorem 3.2, any d) and bias=True with d > K (Theorem 3.3), construct the
critical points of Lemma B.2 keeping r singular directions for every r < min(d, K)
(``theory.ufm_critical_point``; with bias the kept directions lie among the K-1
directions orthogonal to 1, so r <= K-1), and probe each one as
``landscape.saddle_probe`` does: the closed-form smallest Hessian eigenvalue (exact
without bias, an upper bound with bias: the b-fixed restriction), the Lanczos
certificate's lambda_min and the Rayleigh quotient of its witness direction y, the
verdict, then a step x + eps y, gradient descent, refinement and classification of the
endpoint (which should be a certified global minimum). Plus multistart ``explore``
class counts for the same problems.

The probes are the library's ``saddle_probe`` (its escape program compiles once per
problem sizes and serves every r).

Writes ``strict_saddles.json`` (table) and ``strict_saddles.png``.

Usage: python -m experiments.strict_saddles [--quick] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from experiments import harness
from experiments.harness import class_counts, saddle_probe
from nc_jax import landscape, plotting, theory
from nc_jax.ufm import UFMProblem

# (name, bias, lambda_b); lambda_W = 1e-2, lambda_H = 2e-2 throughout
FULL = dict(K=4, n=5, d=6, settings=(("no_bias", False, 0.0), ("bias", True, 1e-2), ("bias_shifted", True, 1.0)),
            num_inits=32, num_steps=2000, explore_steps=2000)
QUICK = dict(K=3, n=2, d=4, settings=(("no_bias", False, 0.0), ("bias", True, 1e-2)),
             num_inits=4, num_steps=300, explore_steps=300)
LAMBDA_W, LAMBDA_H = 1e-2, 2e-2


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    harness.add_quick_arg(parser)
    harness.add_workdir_arg(parser, "strict_saddles")
    parser.add_argument("--num-inits", type=int, default=None)
    harness.add_seed_arg(parser)
    args = parser.parse_args(argv)
    harness.require_x64()
    cfg = dict(QUICK if args.quick else FULL)
    cfg["num_inits"] = args.num_inits or cfg["num_inits"]
    K, n, d = cfg["K"], cfg["n"], cfg["d"]
    workdir = harness.make_workdir(args.workdir, "strict_saddles")
    key = jax.random.key(args.seed)
    probes, explores = [], []
    t_start = time.perf_counter()
    for name, bias, lb in cfg["settings"]:
        problem = UFMProblem(K, n, d, LAMBDA_W, LAMBDA_H, lb, bias=bias)
        gm = theory.global_minimum(problem)
        lr = 0.5 / max(1.0, lb)
        # with bias only the K-1 directions orthogonal to 1 can be kept
        r_values = range(min(d, K) if not bias else min(d, K - 1) + 1)
        t0 = time.perf_counter()
        for r in r_values:
            key, sub = jax.random.split(key)
            out = saddle_probe(problem, r, key=sub, num_steps=cfg["num_steps"], learning_rate=lr)
            # a critical point above f* must be a strict saddle (Theorems 3.2, 3.3)
            above = out["value_at_saddle"] > out["f_star"] + 1e-9 * max(1.0, abs(out["f_star"]))
            out.update(setting=name, bias=bias, lambda_b=lb, r=r, regime=theory.regime_name(gm.regime),
                       name=f"{name} r={r}", above_f_star=bool(above),
                       closed_form_minus_lanczos=out["lambda_min_closed_form"] - out["lambda_min_lanczos"])
            probes.append(out)
            harness.progress(f"{name:12s} r={r}: f-f* {out['value_at_saddle'] - out['f_star']:.3e}  lambda_min closed "
                  f"{out['lambda_min_closed_form']:+.12f} lanczos {out['lambda_min_lanczos']:+.12f} "
                  f"rq {out['rayleigh_quotient']:+.3e}  {out['verdict']:13s} -> {out['final_class']} "
                  f"(gap {out['final_gap']:.1e}, {out['descent_steps']} GD steps)")
        harness.progress(f"{name}: probes {time.perf_counter() - t0:.1f} s")
        t0 = time.perf_counter()
        key, sub = jax.random.split(key)
        engine = "auto"
        res = landscape.explore(problem, key=sub, num_inits=cfg["num_inits"], num_steps=cfg["explore_steps"],
                                learning_rate=lr, engine=engine)
        names = landscape.class_names(res.classification.label)
        gaps = np.abs(res.value - res.f_star)
        explores.append({"name": name, "setting": name, "bias": bias, "lambda_b": lb, "regime": res.regime,
                         "counts": class_counts(names), "max_gap": float(gaps.max()),
                         "max_grad_norm": float(res.grad_norm.max()), "seconds": time.perf_counter() - t0})
        harness.progress(f"{name}: explore {cfg['num_inits']} inits: {explores[-1]['counts']} "
                         f"max|f-f*| {gaps.max():.1e} ({explores[-1]['seconds']:.1f} s)")

    saddles = [p for p in probes if p["above_f_star"]]
    summary = {
        "num_probes": len(probes),
        "num_saddles": len(saddles),
        "all_saddles_certified": all(p["verdict"] == "strict_saddle" for p in saddles),
        "all_escapes_to_global": all(p["final_class"] == "global_minimum" for p in probes),
        "max_abs_closed_minus_lanczos_no_bias": max(
            (abs(p["closed_form_minus_lanczos"]) for p in probes if not p["bias"]), default=None),
        "min_closed_minus_lanczos_bias": min(
            (p["closed_form_minus_lanczos"] for p in probes if p["bias"]), default=None),
        "max_final_gap": max(abs(p["final_gap"]) for p in probes),
        "explore_counts": {e["name"]: e["counts"] for e in explores},
        "seconds": time.perf_counter() - t_start,
    }
    result = {"config": {**cfg, "lambda_W": LAMBDA_W, "lambda_H": LAMBDA_H}, "seed": args.seed, "quick": args.quick,
              "load": harness.load_info(), "summary": summary, "probes": probes, "explore": explores}
    return harness.finish(workdir, "strict_saddles", result,
                          lambda path: plotting.plot_saddle_probes(probes, counts=explores, path=path),
                          f"summary: {summary}")


if __name__ == "__main__":
    harness.run(main, x64=True)
