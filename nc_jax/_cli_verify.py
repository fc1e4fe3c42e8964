"""`nc-jax verify` (the main job) and `nc-jax landscape` (one problem).

`verify` runs a built-in grid of UFM problems that covers every regime of Theorem 3.1
with and without bias, explores each from many random inits (descent, refinement to
gradient norm 1e-10, second-order certificates), probes constructed strict saddles
(Theorems 3.2 and 3.3, and the open case d <= K with bias), and probes the open
questions for rescaled MSE and CE. It writes report.md, results.json and plots into the
work directory and exits non-zero if any spurious local minimum or unexplained
disagreement with the theory is found.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from nc_jax.io import make_workdir, write_json_atomic, write_text_atomic


def add_verify_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="a small grid (under a minute)")
    parser.add_argument("--workdir", type=str, default=None,
                        help="output folder (default: a new timestamped folder under ./runs/)")
    parser.add_argument("--seed", type=int, default=0, help="the one key every run is split from")
    parser.add_argument("--num-inits", type=int, default=None, help="inits per configuration")
    parser.add_argument("--num-steps", type=int, default=None, help="gradient-descent steps per init")
    parser.add_argument("--learning-rate", type=float, default=None,
                        help="gradient-descent step (default 0.5 / (1 + lambda_b))")


def add_landscape_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--K", type=int, default=4)
    parser.add_argument("--n", type=int, default=5)
    parser.add_argument("--d", type=int, default=6)
    parser.add_argument("--lambda-W", type=float, default=1e-2, dest="lambda_W")
    parser.add_argument("--lambda-H", type=float, default=1e-2, dest="lambda_H")
    parser.add_argument("--lambda-b", type=float, default=1e-2, dest="lambda_b")
    parser.add_argument("--no-bias", action="store_true")
    parser.add_argument("--loss", choices=("mse", "rescaled_mse", "ce"), default="mse")
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--M", type=float, default=1.0)
    parser.add_argument("--workdir", type=str, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-inits", type=int, default=32)
    parser.add_argument("--num-steps", type=int, default=2000)
    parser.add_argument("--learning-rate", type=float, default=None,
                        help="gradient-descent step (default 0.5 / (1 + lambda_b))")


def _positive_int(name, value):
    if value is not None and (not isinstance(value, int) or value < 1):
        raise ValueError(f"--{name} must be an integer >= 1; got {value!r}")


def _grid(quick: bool):
    """(name, problem kwargs, kind) of the built-in grid."""
    from nc_jax.ufm import UFMProblem

    K, n = 4, 5
    c = dict(lambda_W=1e-2, lambda_H=1e-2)
    configs = [
        ("etf d>=K, lambda_b small", UFMProblem(K, n, 6, lambda_b=1e-2, **c)),
        ("shifted d>=K, lambda_b large", UFMProblem(K, n, 6, lambda_b=1.0, **c)),
        ("no bias d>=K", UFMProblem(K, n, 6, lambda_b=0.0, bias=False, **c)),
    ]
    if not quick:
        configs[2:2] = [
            ("low rank d<K-1", UFMProblem(K, n, 2, lambda_b=1e-2, **c)),
            ("zero lambda_W lambda_H >= 1/(NK)", UFMProblem(K, n, 6, 0.15, 0.15, 1e-2)),
            ("etf d=K-1", UFMProblem(K, n, 3, lambda_b=1e-2, **c)),
            ("etf d=K-1, lambda_b large", UFMProblem(K, n, 3, lambda_b=1.0, **c)),
        ]
        configs += [
            ("no bias d<K", UFMProblem(K, n, 2, lambda_b=0.0, bias=False, **c)),
            ("CIFAR-like K=10 wd 5e-4", UFMProblem(10, 20, 32, 5e-4, 5e-4, 5e-4)),
        ]
    probes = [("no bias (Thm 3.2)", UFMProblem(K, n, 6, lambda_b=0.0, bias=False, **c), 1)]
    if not quick:
        probes += [
            ("bias d>K (Thm 3.3)", UFMProblem(K, n, 6, lambda_b=1e-2, **c), 2),
            ("no bias, origin (Thm 3.2)", UFMProblem(K, n, 6, lambda_b=0.0, bias=False, **c), 0),
            ("bias d=K-1 (open)", UFMProblem(K, n, 3, lambda_b=1e-2, **c), 1),
            ("bias d<K-1 (open)", UFMProblem(K, n, 2, lambda_b=1e-2, **c), 1),
        ]
    open_questions = []
    if not quick:
        open_questions = [
            ("rescaled MSE alpha=3 M=5", UFMProblem(K, n, 6, lambda_b=1e-2, loss="rescaled_mse", alpha=3.0, M=5.0, **c)),
            ("CE", UFMProblem(K, 2, 6, 5e-3, 5e-3, 5e-3, loss="ce")),
        ]
    return configs, probes, open_questions


def _summarize(name, result, value_atol):
    import numpy as np

    from nc_jax.landscape import CLASS_NAMES

    labels = np.asarray(result.classification.label)
    counts = {c: int(np.sum(labels == i)) for i, c in enumerate(CLASS_NAMES)}
    converged = labels != CLASS_NAMES.index("not_converged")
    converged &= labels != CLASS_NAMES.index("diverged")
    minima = (labels == CLASS_NAMES.index("global_minimum")) | (labels == CLASS_NAMES.index("local_minimum"))
    p = result.problem
    rep = result.report
    values = np.asarray(result.value)
    zero = result.regime == "zero"  # W* = H* = 0: NC2/NC3 are undefined there
    row = {
        "name": name,
        "K": p.num_classes, "n": p.n_per_class, "d": p.feature_dim,
        "lambda_W": float(p.lambda_W), "lambda_H": float(p.lambda_H), "lambda_b": float(p.lambda_b),
        "bias": bool(p.bias), "loss": p.loss, "alpha": float(p.alpha), "M": float(p.M),
        "regime": result.regime, "f_star": result.f_star,
        "inits": int(labels.size), "converged": int(np.sum(converged)), "counts": counts,
        "max_abs_gap": None if result.f_star is None else float(np.max(np.abs(values[converged] - result.f_star)))
        if np.any(converged) else None,
        "minimum_value_spread": float(np.ptp(values[minima])) if np.any(minima) else None,
        "median_nc1_descent_end": float(np.median(result.descent_nc1)),
        "max_nc1": float(np.nanmax(np.asarray(rep.nc1)[minima])) if np.any(minima) else None,
        "max_nc2_centered_means": float(np.nanmax(np.asarray(rep.nc2_means)[minima])) if np.any(minima) and not zero else None,
        "max_nc3": float(np.nanmax(np.asarray(rep.nc3)[minima])) if np.any(minima) and not zero else None,
        "max_gram_spectrum_error": float(np.nanmax(result.gram_spectrum_error[minima])) if np.any(minima) and result.f_star is not None else None,
        "max_grad_norm_refined": float(np.max(result.grad_norm[converged])) if np.any(converged) else None,
        "min_lambda_min_at_minima": float(np.min(np.asarray(result.classification.lambda_min)[minima])) if np.any(minima) else None,
        "seconds": {k: round(v, 2) for k, v in result.seconds.items()},
        "runs": {
            "label": [CLASS_NAMES[int(i)] for i in labels],
            "value": values, "grad_norm": result.grad_norm,
            "descent_status": np.asarray(result.descent.status), "descent_value": np.asarray(result.descent.value),
            "descent_nc1": result.descent_nc1, "lambda_min": np.asarray(result.classification.lambda_min),
            "rayleigh_quotient": np.asarray(result.classification.rayleigh_quotient),
            "tau": np.asarray(result.classification.tau),
            "nc1": np.asarray(rep.nc1), "nc2": np.asarray(rep.nc2), "nc3": np.asarray(rep.nc3),
        },
    }
    problems = []
    bad = counts["spurious_local_minimum"] + counts["below_closed_form"]
    if bad:
        problems.append(f"{name}: {bad} run(s) converged to a minimum whose value differs from f* (kept in results.json)")
    if result.f_star is not None and row["max_abs_gap"] is not None:
        certified = labels == CLASS_NAMES.index("global_minimum")
        if np.any(certified) and np.max(np.abs(values[certified] - result.f_star)) > value_atol:
            problems.append(f"{name}: certified global minima differ from f* by more than {value_atol}")
    notes = []
    if counts["inconclusive"]:
        notes.append(f"{name}: {counts['inconclusive']} certificate(s) inconclusive")
    if result.f_star is None and row["minimum_value_spread"] is not None and row["minimum_value_spread"] > 1e-8:
        notes.append(f"{name}: certified minima at different values (spread {row['minimum_value_spread']:.3g}): possible spurious minima")
    return row, problems, notes


_TABLE_COLUMNS = ("inits", "conv", "global", "saddle", "spurious", "local", "not conv", "diverged", "inconcl",
                  "max abs(f-f*)", "Gram err", "NC1(GD end)", "NC2", "NC3")


def _table_line(row):
    c = row["counts"]

    def fmt(x):
        return "-" if x is None else f"{x:.1e}"

    cells = [row["inits"], row["converged"], c["global_minimum"], c["strict_saddle"],
             c["spurious_local_minimum"] + c["below_closed_form"], c["local_minimum"], c["not_converged"],
             c["diverged"], c["inconclusive"], fmt(row["max_abs_gap"]), fmt(row["max_gram_spectrum_error"]),
             fmt(row["median_nc1_descent_end"]), fmt(row["max_nc2_centered_means"]), fmt(row["max_nc3"])]
    return cells


def _markdown_table(rows):
    head = "| configuration | regime | " + " | ".join(_TABLE_COLUMNS) + " |"
    sep = "|" + "---|" * (len(_TABLE_COLUMNS) + 2)
    lines = [head, sep]
    for row in rows:
        lines.append(f"| {row['name']} | {row['regime'] or row['loss']} | " + " | ".join(str(x) for x in _table_line(row)) + " |")
    return "\n".join(lines)


def _print_row(row):
    cells = _table_line(row)
    print(f"  {row['name']}  [{row['regime'] or row['loss']}; K={row['K']} n={row['n']} d={row['d']} "
          f"lW={row['lambda_W']:g} lH={row['lambda_H']:g} lb={row['lambda_b']:g} bias={row['bias']}]")
    print("    " + "  ".join(f"{h}={v}" for h, v in zip(_TABLE_COLUMNS, cells)))


def run_verify(args: argparse.Namespace) -> int:
    import jax

    jax.config.update("jax_enable_x64", True)  # verification in float64, set at the entry point
    import numpy as np

    from nc_jax import plotting
    from nc_jax.landscape import default_learning_rate, explore, saddle_probe

    try:
        _positive_int("num-inits", args.num_inits)
        _positive_int("num-steps", args.num_steps)
        if args.learning_rate is not None and not (args.learning_rate > 0 and np.isfinite(args.learning_rate)):
            raise ValueError(f"--learning-rate must be finite and > 0; got {args.learning_rate}")
    except ValueError as err:
        print(f"nc-jax verify: error: {err}")
        return 2
    quick = args.quick
    num_inits = args.num_inits or (8 if quick else 32)
    num_steps = args.num_steps or (500 if quick else 2000)
    workdir = make_workdir(args.workdir, "verify")
    print(f"nc-jax verify: writing to {workdir.resolve()}", flush=True)
    configs, probes, open_questions = _grid(quick)
    key = jax.random.key(args.seed)
    total = len(configs) + len(probes) + len(open_questions)
    step = 0
    rows, probe_rows, problems, notes = [], [], [], []
    t_start = time.perf_counter()

    def progress(label):
        nonlocal step
        step += 1
        print(f"[{step}/{total}] {label} ({time.perf_counter() - t_start:.0f} s)", flush=True)

    for i, (name, problem) in enumerate(list(configs) + list(open_questions)):
        progress(name)
        engine = "full" if problem.loss == "ce" else "auto"
        result = explore(problem, key=jax.random.fold_in(key, i), num_inits=num_inits, num_steps=num_steps,
                         learning_rate=args.learning_rate, engine=engine)
        row, bad, note = _summarize(name, result, value_atol=1e-9)
        row["open_question"] = i >= len(configs)
        rows.append(row)
        problems += bad
        notes += note
        _print_row(row)

    from nc_jax import theory

    for j, (name, problem, kept) in enumerate(probes):
        progress(f"saddle probe: {name}, {kept} kept direction(s)")
        r = saddle_probe(problem, kept, key=jax.random.fold_in(key, 1000 + j), num_steps=num_steps * 2,
                         learning_rate=args.learning_rate or default_learning_rate(problem))
        regime = theory.regime_name(theory.global_minimum(problem).regime)
        prow = dict(name=name, K=problem.num_classes, n=problem.n_per_class, d=problem.feature_dim,
                    bias=bool(problem.bias), regime=regime, **r._asdict())
        probe_rows.append(prow)
        exact = not problem.bias
        agree = abs(r.lambda_min_closed_form - r.lambda_min_lanczos) <= 1e-8 * max(1.0, abs(r.lambda_min_closed_form))
        consistent = agree if exact else (r.lambda_min_lanczos <= r.lambda_min_closed_form + 1e-8)
        print(f"    verdict={r.verdict} lambda_min: closed form {r.lambda_min_closed_form:.6g}"
              f"{'' if exact else ' (bound)'}, Lanczos {r.lambda_min_lanczos:.6g}; after the step and descent: "
              f"{r.final_class} (f - f* = {r.final_gap:.1e})")
        if r.verdict != "strict_saddle":
            problems.append(f"probe {name}: the constructed saddle was not certified ({r.verdict})")
        if not consistent:
            problems.append(f"probe {name}: Lanczos lambda_min {r.lambda_min_lanczos} disagrees with theory {r.lambda_min_closed_form}")
        if r.final_class not in ("global_minimum",):
            notes.append(f"probe {name}: descent from the saddle ended as {r.final_class}")

    seconds = time.perf_counter() - t_start
    results = {
        "command": "nc-jax verify" + (" --quick" if quick else "") + f" --seed {args.seed}",
        "quick": quick, "seed": args.seed, "num_inits": num_inits, "num_steps": num_steps,
        "learning_rate": args.learning_rate, "seconds": round(seconds, 1),
        "configurations": rows, "saddle_probes": probe_rows,
        "problems": problems, "notes": notes, "ok": not problems,
        "jax_backend": jax.default_backend(), "devices": len(jax.devices()),
    }
    plotting.plot_verify_summary(rows, probe_rows, path=workdir / "verify.png")
    write_json_atomic(workdir / "results.json", results)
    _write_report(workdir / "report.md", results)
    print()
    print(_markdown_table(rows))
    print()
    for line in notes:
        print(f"note: {line}")
    if problems:
        for line in problems:
            print(f"DISAGREEMENT: {line}")
        print(f"nc-jax verify: FAILED ({len(problems)} disagreement(s)); see {workdir / 'report.md'}")
        return 1
    print(f"nc-jax verify: OK, no spurious local minimum and no disagreement with the theory "
          f"({seconds:.0f} s); report: {workdir / 'report.md'}")
    return 0


def _write_report(path: Path, results: dict) -> None:
    lines = [
        "# nc-jax verify",
        "",
        f"Command: `{results['command']}`; seed {results['seed']}; {results['num_inits']} inits x "
        f"{results['num_steps']} GD steps (learning rate {results['learning_rate'] or '0.5/(1+lambda_b)'}) per configuration, "
        f"then trust-region Newton-CG to gradient norm <= 1e-10 and a Lanczos certificate per run; "
        f"float64; {results['seconds']} s on {results['jax_backend']}.",
        "",
        "## Multistart classification",
        "",
        _markdown_table([r for r in results["configurations"] if not r.get("open_question")]),
        "",
        "Columns: converged = refined to gradient norm <= 1e-10; global = certified PSD Hessian and f = f* "
        "(closed form, Theorem 3.1); saddle = certified negative curvature; spurious = a certified minimum "
        "with f != f* (the theory says none exist); Gram err = worst distance between the normalised "
        "class-mean Gram spectrum and Theorem 3.1's prediction for the regime; NC1(GD end) = median NC1 at "
        "the gradient-descent endpoints (before refinement; NC1 is 0 at every refined critical point, whose "
        "features are ridge solutions per class); NC2 (centered class means) and NC3 = worst over certified "
        "minima (they measure the distance to a simplex ETF, which the theory predicts only in the ETF "
        "regimes; '-' in the zero regime, where W* = 0).",
        "",
        "## Open questions (evidence, not proof)",
        "",
        _markdown_table([r for r in results["configurations"] if r.get("open_question")]) or "(skipped in --quick)",
        "",
        "For losses without a closed form, 'local' counts certified minima; their value spread says whether "
        "more than one minimum value was found.",
        "",
        "## Constructed strict saddles (Lemma B.2, Theorems 3.2 and 3.3)",
        "",
        "| probe | regime | kept | verdict | lambda_min closed form | Lanczos | Rayleigh quotient | tau | after step + descent | f - f* |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in results["saddle_probes"]:
        bound = "" if not p["bias"] else " (bound)"
        lines.append(
            f"| {p['name']} (K={p['K']} n={p['n']} d={p['d']}) | {p['regime']} | {len(p['kept'])} | {p['verdict']} | "
            f"{p['lambda_min_closed_form']:.6g}{bound} | {p['lambda_min_lanczos']:.6g} | {p['rayleigh_quotient']:.6g} | "
            f"{p['tau']:.1e} | {p['final_class']} | {p['final_gap']:.1e} |"
        )
    lines += ["", "## Verdict", ""]
    if results["problems"]:
        lines += [f"- DISAGREEMENT: {p}" for p in results["problems"]]
    else:
        lines.append("No spurious local minimum and no disagreement with the theory.")
    lines += [f"- note: {n}" for n in results["notes"]]
    lines += ["", "Figures: `verify.png`. Per-run numbers: `results.json`."]
    write_text_atomic(path, "\n".join(lines) + "\n")


def run_landscape(args: argparse.Namespace) -> int:
    import jax

    jax.config.update("jax_enable_x64", True)
    from nc_jax import plotting
    from nc_jax.landscape import explore
    from nc_jax.ufm import UFMProblem

    try:
        _positive_int("num-inits", args.num_inits)
        _positive_int("num-steps", args.num_steps)
        problem = UFMProblem(args.K, args.n, args.d, args.lambda_W, args.lambda_H, args.lambda_b,
                             bias=not args.no_bias, loss=args.loss, alpha=args.alpha, M=args.M)
    except ValueError as err:
        print(f"nc-jax landscape: error: {err}")
        return 2
    workdir = make_workdir(args.workdir, "landscape")
    print(f"nc-jax landscape: writing to {workdir.resolve()}", flush=True)
    result = explore(problem, key=jax.random.key(args.seed), num_inits=args.num_inits, num_steps=args.num_steps,
                     learning_rate=args.learning_rate, engine="full" if args.loss == "ce" else "auto")
    row, problems, notes = _summarize("landscape", result, value_atol=1e-9)
    _print_row(row)
    plotting.plot_verify_summary([row], [], path=workdir / "landscape.png")
    write_json_atomic(workdir / "results.json", {"configuration": row, "problems": problems, "notes": notes})
    for line in notes:
        print(f"note: {line}")
    for line in problems:
        print(f"DISAGREEMENT: {line}")
    return 1 if problems else 0
