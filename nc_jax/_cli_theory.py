"""`nc-jax theory`: the closed-form global minimum and NC predictions of Theorem 3.1."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--K", type=int, default=10, help="number of classes (>= 2)")
    parser.add_argument("--n", type=int, default=100, help="samples per class (>= 1)")
    parser.add_argument("--d", type=int, default=512, help="feature dimension (>= 1)")
    parser.add_argument("--lambda-W", type=float, default=5e-4, dest="lambda_W")
    parser.add_argument("--lambda-H", type=float, default=5e-4, dest="lambda_H")
    parser.add_argument("--lambda-b", type=float, default=5e-4, dest="lambda_b")
    parser.add_argument("--no-bias", action="store_true", help="Theorem 3.2's objective (no b)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def theory_summary(problem) -> dict:
    """Host-side summary of Theorem 3.1 for one problem (float64 numbers)."""
    import numpy as np

    from nc_jax import theory

    gm = theory.global_minimum(problem)
    pred = theory.nc_predictions(problem)
    K, N = problem.num_classes, problem.num_samples
    t = float(np.sqrt(K * N * problem.lambda_W * problem.lambda_H))
    return {
        "K": K,
        "n": problem.n_per_class,
        "d": problem.feature_dim,
        "lambda_W": float(problem.lambda_W),
        "lambda_H": float(problem.lambda_H),
        "lambda_b": float(problem.lambda_b),
        "bias": bool(problem.bias),
        "regime": theory.regime_name(gm.regime),
        "f_star": float(gm.value),
        "b_star": float(gm.bias),
        "zero_threshold_lambda_W_lambda_H": problem.zero_threshold,
        "lambda_W_lambda_H": float(problem.lambda_W * problem.lambda_H),
        "t": t,
        "lambda_b_threshold": float(gm.lambda_b_threshold),
        "singular_values_of_Y_minus_b": [float(s) for s in gm.singular_values],
        "nc1": float(pred.nc1),
        "self_duality": float(pred.self_duality),
        "rank": int(pred.rank),
        "gamma": float(pred.gamma),
        "class_mean_gram_spectrum": [float(s) for s in pred.gram_spectrum],
        "norm_W_sq": float((gm.params.W**2).sum()),
        "norm_H_sq": float((gm.params.H**2).sum()),
    }


_GRAM_TEXT = {
    "zero": "W* = H* = 0 (no collapse structure)",
    "low_rank": "class means: scaled best rank-d approximation of I - 11^T/K (not an ETF)",
    "simplex_etf_d=K-1": "class means: simplex ETF, Gram ~ I - 11^T/K (independent of lambda_b)",
    "simplex_etf": "class means: simplex ETF, Gram ~ I - 11^T/K",
    "shifted_etf": "class means: Gram ~ I - gamma 11^T with gamma < 1/K (not an ETF)",
    "no_bias_low_rank": "class means: scaled rank-d orthogonal projection (no bias)",
    "no_bias_orthogonal": "class means: orthogonal frame, Gram ~ I (no bias)",
}


def run(args: argparse.Namespace) -> int:
    import jax

    jax.config.update("jax_enable_x64", True)  # entry point: verification in float64
    from nc_jax.ufm import UFMProblem

    try:
        problem = UFMProblem(
            args.K, args.n, args.d, args.lambda_W, args.lambda_H, args.lambda_b, bias=not args.no_bias
        )
        summary = theory_summary(problem)
    except ValueError as err:
        print(f"nc-jax theory: error: {err}")
        return 2
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    s = summary
    print(f"UFM: K={s['K']} n={s['n']} d={s['d']} lambda_W={s['lambda_W']:g} "
          f"lambda_H={s['lambda_H']:g} lambda_b={s['lambda_b']:g} bias={s['bias']}")
    print(f"regime        : {s['regime']}")
    print(f"f*            : {s['f_star']:.15g}")
    print(f"b*            : {s['b_star']:.15g}" + ("" if s["bias"] else " (no bias)"))
    print(f"zero solution : lambda_W*lambda_H = {s['lambda_W_lambda_H']:.4g} vs 1/(NK) = {s['zero_threshold_lambda_W_lambda_H']:.4g}")
    if s["bias"] and s["d"] >= s["K"]:
        print(f"lambda_b threshold t/(1-t) = {s['lambda_b_threshold']:.6g} (t = {s['t']:.6g})")
    print(f"NC1 (within-class variability) : {s['nc1']:g}")
    print(f"NC3 self-duality  h_k = c w^k  : c = sqrt(lambda_W/(lambda_H n)) = {s['self_duality']:.6g}")
    print(f"NC2               : {_GRAM_TEXT[s['regime']]}")
    print(f"                    rank {s['rank']}, gamma {s['gamma']:.6g}, normalised Gram spectrum "
          + ", ".join(f"{v:.4g}" for v in s["class_mean_gram_spectrum"]))
    return 0
