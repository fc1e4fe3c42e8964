"""`nc-jax theory`: the closed-form global minimum and NC predictions of Theorem 3.1.

Bad input (sizes, lambdas, sizes whose arrays cannot fit in memory) is refused before any
work with one line on stderr and exit status 2. Output is strict: a number that is not a
finite float64 (overflow, or an infinite threshold) is printed as null, and a "notes"
entry names the field and says why.
"""

from __future__ import annotations

import argparse
import math
import sys

from nc_jax.io import UsageError, check_memory, class_sizes_arg, dumps_strict


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--K", type=int, default=10, help="number of classes K (>= 2)")
    parser.add_argument("--n", type=class_sizes_arg, default=100,
                        help="samples per class n (>= 1), or one size per class (6,3,1: class-imbalanced); N = sum")
    parser.add_argument("--d", type=int, default=512, help="feature dimension d (>= 1)")
    parser.add_argument("--lambda-W", type=float, default=5e-4, dest="lambda_W",
                        help="weight decay on the classifier W (finite, >= 0; 0 only with --lambda-H 0)")
    parser.add_argument("--lambda-H", type=float, default=5e-4, dest="lambda_H",
                        help="weight decay on the features H (finite, >= 0; 0 only with --lambda-W 0)")
    parser.add_argument("--lambda-b", type=float, default=5e-4, dest="lambda_b",
                        help="weight decay on the bias b (finite, >= 0; unused with --no-bias)")
    parser.add_argument("--no-bias", action="store_true", help="Theorem 3.2's objective (no b)")
    parser.add_argument("--json", action="store_true",
                        help='print one strict JSON object (a non-finite number is null, explained in "notes")')


_FLAGS = {"num_classes": "--K", "n_per_class": "--n", "feature_dim": "--d", "lambda_W": "--lambda-W",
          "lambda_H": "--lambda-H", "lambda_b": "--lambda-b"}

_TINY = sys.float_info.min  # smallest normal float64
_BIG = sys.float_info.max


def _is_normal(x: float) -> bool:
    return _TINY <= abs(x) <= _BIG


def _log10_product(*factors: float) -> float:
    return sum(math.log10(f) for f in factors)


def _product_and_t(K: int, N: int, lw: float, lh: float) -> tuple[float, float, list[str]]:
    """lambda_W lambda_H and t = sqrt(K N lambda_W lambda_H) in float64, with notes where the
    product is not a normal float (then t comes from square roots taken first)."""
    notes = []
    product = lw * lh
    zero_factor = lw == 0 or lh == 0
    if not zero_factor and not _is_normal(product):
        way = "overflows" if product > 1 or math.isinf(product) else "underflows"
        notes.append(f"lambda_W_lambda_H: {way} float64 (it is about 10^{_log10_product(lw, lh):.1f}); "
                     "null here, and the regime is decided without forming it")
        product = math.nan
    x = K * N * lw * lh
    if zero_factor or (_is_normal(K * N * lw) and _is_normal(x)):
        t = math.sqrt(x)
    else:
        t = math.sqrt(K * N) * math.sqrt(max(lw, lh)) * math.sqrt(min(lw, lh))
        if not _is_normal(t):
            way = "overflows" if t > 1 else "underflows"
            notes.append(f"t: {way} float64 (it is about 10^{_log10_product(K * N, lw, lh) / 2:.1f})")
            t = math.nan
    return product, t, notes


def theory_summary(problem) -> dict:
    """Host-side summary of Theorem 3.1 for one problem (float64 numbers).

    Every number is a finite float or None; ``summary["notes"]`` names each None field and
    why (overflow or underflow of float64, an infinite threshold).
    """
    import numpy as np

    from nc_jax import theory

    gm = theory.global_minimum(problem)
    pred = theory.nc_predictions(problem, minimum=gm)
    K, N = problem.num_classes, problem.num_samples
    lw, lh, lb = float(problem.lambda_W), float(problem.lambda_H), float(problem.lambda_b)
    product, t, notes = _product_and_t(K, N, lw, lh)
    summary = {
        "K": K,
        "n": problem.n_per_class,
        "d": problem.feature_dim,
        "lambda_W": lw,
        "lambda_H": lh,
        "lambda_b": lb,
        "bias": bool(problem.bias),
        "regime": theory.regime_name(gm.regime),
        "f_star": float(gm.value),
        "b_star": float(gm.bias),
        "zero_threshold_lambda_W_lambda_H": problem.zero_threshold,
        "lambda_W_lambda_H": product,
        "t": t,
        "lambda_b_threshold": float(gm.lambda_b_threshold),
        "singular_values_of_Y_minus_b": [float(s) for s in np.asarray(gm.singular_values)],
        "nc1": float(pred.nc1),
        "self_duality": float(pred.self_duality),
        "rank": int(pred.rank),
        "gamma": float(pred.gamma),
        "class_mean_gram_spectrum": [float(s) for s in np.asarray(pred.gram_spectrum)],
        "norm_W_sq": float((gm.params.W**2).sum()),
        "norm_H_sq": float((gm.params.H**2).sum()),
    }
    noted = {note.split(":", 1)[0] for note in notes}
    for field, value in summary.items():
        values = value if isinstance(value, list) else [value]
        bad = [i for i, v in enumerate(values) if isinstance(v, float) and not math.isfinite(v)]
        if not bad:
            continue
        if isinstance(value, list):
            summary[field] = [None if i in bad else v for i, v in enumerate(value)]
        else:
            summary[field] = None
        if field in noted:
            continue
        if field == "lambda_b_threshold" and math.isinf(value):
            notes.append("lambda_b_threshold: infinite (t >= 1, the zero regime: W* = H* = 0 for every lambda_b)")
        else:
            where = f"{field}[{', '.join(map(str, bad))}]" if isinstance(value, list) else field
            kinds = sorted({"nan" if math.isnan(values[i]) else "inf" for i in bad})
            notes.append(f"{where}: not a finite float64 ({'/'.join(kinds)}: overflow of an intermediate)")
    summary["notes"] = notes
    return summary


def imbalanced_summary(problem) -> dict:
    """The class-imbalanced no-bias closed form: f*, and per class its size, whether its
    classifier row survives (minority collapse: n_k <= N^2 lambda_W lambda_H), ||w_k||, ||hbar_k||."""
    import numpy as np

    from nc_jax import metrics, theory, ufm

    gm = theory.global_minimum(problem)
    _, _, alive, _ = theory.imbalanced_global_minimum(problem)
    W, H = np.asarray(gm.params.W), gm.params.H
    means = np.asarray(metrics.class_means(H, ufm.labels(problem), num_classes=problem.num_classes))
    return {
        "K": problem.num_classes, "n": list(problem.class_sizes), "d": problem.feature_dim,
        "lambda_W": float(problem.lambda_W), "lambda_H": float(problem.lambda_H), "bias": False,
        "regime": theory.regime_name(gm.regime), "f_star": float(gm.value),
        "minority_collapse_threshold_n": float(theory.minority_collapse_threshold(problem)),
        "classes": [{"n": int(n), "alive": bool(a), "norm_w": float(np.linalg.norm(W[k])),
                     "norm_class_mean": float(np.linalg.norm(means[:, k]))}
                    for k, (n, a) in enumerate(zip(problem.class_sizes, np.asarray(alive)))],
        "notes": ["class means: orthogonal frame with class-dependent lengths (not a simplex ETF)"],
    }


def _print_imbalanced(s: dict, as_json: bool) -> int:
    if as_json:
        print(dumps_strict(s, indent=2))
        return 0
    print(f"UFM (class-imbalanced, no bias): K={s['K']} n={s['n']} d={s['d']} lambda_W={s['lambda_W']:g} "
          f"lambda_H={s['lambda_H']:g}")
    print(f"regime        : {s['regime']}")
    print(f"f*            : {s['f_star']:.15g}")
    print(f"minority collapse: class k's classifier row vanishes iff n_k <= N^2 lambda_W lambda_H = "
          f"{s['minority_collapse_threshold_n']:.6g} (or k is not among the d largest classes)")
    for k, c in enumerate(s["classes"]):
        print(f"  class {k}: n={c['n']:<6d} {'alive    ' if c['alive'] else 'COLLAPSED'} ||w_k|| = "
              f"{c['norm_w']:.6g}  ||hbar_k|| = {c['norm_class_mean']:.6g}")
    for note in s["notes"]:
        print(f"note: {note}")
    return 0


_GRAM_TEXT = {
    "zero": "W* = H* = 0 (no collapse structure)",
    "low_rank": "class means: scaled best rank-d approximation of I - 11^T/K (not an ETF)",
    "simplex_etf_d=K-1": "class means: simplex ETF, Gram ~ I - 11^T/K (independent of lambda_b)",
    "simplex_etf": "class means: simplex ETF, Gram ~ I - 11^T/K",
    "shifted_etf": "class means: Gram ~ I - gamma 11^T with gamma < 1/K (not an ETF)",
    "no_bias_low_rank": "class means: scaled rank-d orthogonal projection (no bias)",
    "no_bias_orthogonal": "class means: orthogonal frame, Gram ~ I (no bias)",
}


def _fmt(value, spec: str) -> str:
    return "null" if value is None else format(value, spec)


def _flagged(err: Exception) -> str:
    """The library's message, prefixed with the command-line flag it is about."""
    text = str(err)
    if text.startswith("lambda_W and lambda_H"):
        return f"--lambda-W/--lambda-H: {text}"
    field = next((f for f in _FLAGS if text.startswith(f + " ") or text.startswith(f + ":")), None)
    return f"{_FLAGS[field]}: {text}" if field else text


def run(args: argparse.Namespace) -> int:
    import jax

    jax.config.update("jax_enable_x64", True)  # entry point: verification in float64
    from nc_jax import theory
    from nc_jax.ufm import UFMProblem

    try:
        problem = UFMProblem(
            args.K, args.n, args.d, args.lambda_W, args.lambda_H, args.lambda_b, bias=not args.no_bias
        )
    except (TypeError, ValueError) as err:
        raise UsageError(_flagged(err)) from None
    # from the sizes alone, before any allocation
    check_memory(theory.memory_estimate(problem), f"--K {args.K} --n {args.n} --d {args.d}")
    try:
        summary = theory_summary(problem) if problem.balanced else imbalanced_summary(problem)
    except (TypeError, ValueError) as err:
        raise UsageError(_flagged(err)) from None
    if not problem.balanced:
        return _print_imbalanced(summary, args.json)
    if args.json:
        print(dumps_strict(summary, indent=2))
        return 0
    s = summary
    print(f"UFM: K={s['K']} n={s['n']} d={s['d']} lambda_W={s['lambda_W']:g} "
          f"lambda_H={s['lambda_H']:g} lambda_b={s['lambda_b']:g} bias={s['bias']}")
    print(f"regime        : {s['regime']}")
    print(f"f*            : {_fmt(s['f_star'], '.15g')}")
    print(f"b*            : {_fmt(s['b_star'], '.15g')}" + ("" if s["bias"] else " (no bias)"))
    product = s["lambda_W_lambda_H"]
    if product is None:
        product_text = f"10^{_log10_product(s['lambda_W'], s['lambda_H']):.1f} (not a float64)"
    else:
        product_text = f"{product:.4g}"
    print(f"zero solution : lambda_W*lambda_H = {product_text} vs 1/(NK) = {s['zero_threshold_lambda_W_lambda_H']:.4g}")
    if s["bias"] and s["d"] >= s["K"]:
        print(f"lambda_b threshold t/(1-t) = {_fmt(s['lambda_b_threshold'], '.6g')} (t = {_fmt(s['t'], '.6g')})")
    print(f"NC1 (within-class variability) : {_fmt(s['nc1'], 'g')}")
    print(f"NC3 self-duality  h_k = c w^k  : c = sqrt(lambda_W/(lambda_H n)) = {_fmt(s['self_duality'], '.6g')}")
    print(f"NC2               : {_GRAM_TEXT[s['regime']]}")
    print(f"                    rank {s['rank']}, gamma {_fmt(s['gamma'], '.6g')}, normalised Gram spectrum "
          + ", ".join(_fmt(v, ".4g") for v in s["class_mean_gram_spectrum"]))
    for note in s["notes"]:
        print(f"note: {note}")
    return 0
