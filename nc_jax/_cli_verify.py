"""`nc-jax verify` (the main job) and `nc-jax landscape` (one problem).

`verify` runs a built-in grid of UFM problems that covers every regime of Theorem 3.1
with and without bias, explores each from many random inits (descent, refinement to
gradient norm 1e-10, second-order certificates), probes constructed strict saddles
(Theorems 3.2 and 3.3, and the open case d <= K with bias), and probes the open
questions for rescaled MSE and CE. It writes report.md, results.json and plots into the
work directory and exits non-zero if any spurious local minimum or unexplained
disagreement with the theory is found.

Both take the flags of several processes (:mod:`nc_jax.distributed`): each process explores
a block of the inits, all hold the gathered result, and only process 0 writes and prints.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from nc_jax import distributed, losses
from nc_jax.io import (
    ExitCode,
    UsageError,
    check_memory,
    check_workdir,
    class_sizes_arg,
    make_workdir,
    write_json_atomic,
    write_text_atomic,
)

_DEFAULT_MIN_SHARE = 0.5  # landscape.DEFAULT_MIN_CERTIFIED_SHARE (not imported: keeps --help cheap)


def _common_arguments(parser: argparse.ArgumentParser, *, num_inits, num_steps, defaults_note="") -> None:
    parser.add_argument("--workdir", type=str, default=None,
                        help="output folder, new or existing (default: a new unique folder under ./runs/)")
    parser.add_argument("--seed", type=int, default=0, help="the one key every run is split from")
    parser.add_argument("--num-inits", type=int, default=num_inits,
                        help=f"random inits per configuration (>= 1){defaults_note and defaults_note[0]}")
    parser.add_argument("--num-steps", type=int, default=num_steps,
                        help=f"gradient-descent steps per init (>= 1){defaults_note and defaults_note[1]}")
    parser.add_argument("--learning-rate", type=float, default=None,
                        help="gradient-descent step, finite and > 0 (default: 0.5 / (1 + lambda_b) with bias, else 0.5)")
    parser.add_argument("--min-certified-share", type=float, default=_DEFAULT_MIN_SHARE,
                        help="share of runs per configuration that must converge and be certified for a verdict; "
                             "below it the configuration is INCONCLUSIVE (in (0, 1])")


def add_verify_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="a small grid (about a minute)")
    parser.add_argument("--suite", choices=("paper", "followups"), default="paper",
                        help="paper: Theorem 3.1's regimes and the strict saddles; followups: the follow-up models "
                             "(imbalanced UFM, deep linear UFM, label smoothing, focal loss)")
    # the defaults depend on --quick
    _common_arguments(parser, num_inits=None, num_steps=None,
                      defaults_note=("; None means 32, or 8 with --quick", "; None means 2000, or 500 with --quick"))


def add_landscape_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--K", type=int, default=4, help="number of classes (>= 2)")
    parser.add_argument("--n", type=class_sizes_arg, default=5,
                        help="samples per class (>= 1), or one size per class (6,3,1: class-imbalanced)")
    parser.add_argument("--d", type=int, default=6, help="feature dimension (>= 1)")
    parser.add_argument("--lambda-W", type=float, default=1e-2, dest="lambda_W", help="weight decay on W (>= 0)")
    parser.add_argument("--lambda-H", type=float, default=1e-2, dest="lambda_H", help="weight decay on H (>= 0)")
    parser.add_argument("--lambda-b", type=float, default=1e-2, dest="lambda_b", help="weight decay on b (>= 0)")
    parser.add_argument("--no-bias", action="store_true", help="Theorem 3.2's objective (no b)")
    parser.add_argument("--loss", choices=losses.LOSSES, default="mse", help="the loss (eq. 3, eq. 4, CE)")
    parser.add_argument("--alpha", type=float, default=1.0, help="rescaled MSE weight alpha (eq. 4)")
    parser.add_argument("--M", type=float, default=1.0, help="rescaled MSE target M (eq. 4)")
    parser.add_argument("--label-smoothing", type=float, default=0.1, dest="label_smoothing",
                        help="epsilon of --loss label_smoothing, in [0, 1)")
    parser.add_argument("--focal-gamma", type=float, default=2.0, dest="focal_gamma",
                        help="gamma of --loss focal (>= 0)")
    _common_arguments(parser, num_inits=32, num_steps=2000)


_UFM_FLAGS = {"num_classes": "--K", "n_per_class": "--n", "feature_dim": "--d", "lambda_W": "--lambda-W",
              "lambda_H": "--lambda-H", "lambda_b": "--lambda-b", "alpha": "--alpha", "M": "--M", "loss": "--loss",
              "label_smoothing": "--label-smoothing", "focal_gamma": "--focal-gamma"}


def ufm_problem_from_args(args: argparse.Namespace):
    """The UFMProblem of ``--K --n --d --lambda-* [--no-bias] [--loss --alpha --M]``; errors name the flag."""
    from nc_jax.ufm import UFMProblem

    kwargs = dict(bias=not args.no_bias)
    for field in ("loss", "alpha", "M", "label_smoothing", "focal_gamma"):
        if hasattr(args, field):
            kwargs[field] = getattr(args, field)
    try:
        return UFMProblem(args.K, args.n, args.d, args.lambda_W, args.lambda_H, args.lambda_b, **kwargs)
    except (TypeError, ValueError) as err:
        text = str(err)
        field = next((f for f in _UFM_FLAGS if text.startswith(f + " ") or text.startswith(f + ":")), None)
        raise UsageError(f"{_UFM_FLAGS[field]}: {text}" if field else text) from None


def _check_args(args: argparse.Namespace) -> None:
    """Every run-time argument checked before anything is created (UsageError naming the flag)."""
    import math

    distributed.check_flags(args)
    for flag in ("num_inits", "num_steps"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise UsageError(f"--{flag.replace('_', '-')} must be an integer >= 1; got {value}")
    lr = args.learning_rate
    if lr is not None and not (math.isfinite(lr) and lr > 0):
        raise UsageError(f"--learning-rate must be finite and > 0; got {lr}")
    share = args.min_certified_share
    if not (share > 0 and share <= 1):
        raise UsageError(f"--min-certified-share must be in (0, 1]; got {share}")
    check_workdir(args.workdir)


def _grid(quick: bool):
    """(name, problem) configurations, saddle probes (name, problem, kept) and open questions."""
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
    # Probes differ in sizes, kept sets and lambdas, so their negative curvatures differ.
    probes = [("no bias (Thm 3.2)", UFMProblem(K, n, 6, lambda_b=0.0, bias=False, **c), 1)]
    if not quick:
        probes += [
            ("no bias, origin (Thm 3.2)", UFMProblem(K, 3, 6, 2e-2, 5e-3, 0.0, bias=False), 0),
            ("no bias, d<K (Thm 3.2)", UFMProblem(5, 4, 3, 5e-3, 2e-2, 0.0, bias=False), 2),
            ("bias d>K (Thm 3.3)", UFMProblem(K, n, 6, 1e-2, 3e-2, 1e-2), 2),
            ("bias d=K-1 (open)", UFMProblem(K, n, 3, 5e-3, 5e-3, 0.1), 1),
            ("bias d<K-1 (open)", UFMProblem(K, n, 2, 2e-2, 5e-3, 1e-2), 0),
        ]
    open_questions = []
    if not quick:
        open_questions = [
            ("rescaled MSE alpha=3 M=5", UFMProblem(K, n, 6, lambda_b=1e-2, loss="rescaled_mse", alpha=3.0, M=5.0, **c)),
            ("CE", UFMProblem(K, 2, 6, 5e-3, 5e-3, 5e-3, loss="ce")),
        ]
    return configs, probes, open_questions


def _check_memory(problems, num_inits) -> None:
    from nc_jax import landscape

    need = max(landscape.memory_estimate(p, num_inits) for p in problems)
    check_memory(need, f"--num-inits {num_inits}")


def _summarize(name, result, value_atol, min_certified_share):
    """(JSON row, disagreements, notes, Summary) of one exploration."""
    import numpy as np

    from nc_jax import theory
    from nc_jax.landscape import RunClass, summarize

    summary = summarize(result, min_certified_share=min_certified_share)
    labels = np.asarray(result.classification.label)
    counts = summary.counts
    converged = ~np.isin(labels, (RunClass.NOT_CONVERGED, RunClass.DIVERGED))
    minima = np.isin(labels, (RunClass.GLOBAL_MINIMUM, RunClass.LOCAL_MINIMUM, RunClass.DEGENERATE))
    p = result.problem
    rep = result.report
    values = np.asarray(result.value)
    Regime = theory.Regime
    etf = result.regime in (Regime.SIMPLEX_ETF.label, Regime.SIMPLEX_ETF_D_EQ_K_MINUS_1.label)  # NC2: distance to an ETF
    zero = result.regime == Regime.ZERO.label  # W* = H* = 0: no Gram, NC2 or NC3 to measure
    predicted = result.f_star is not None and not zero and p.balanced  # Theorem 3.1's NC predictions apply

    def worst(x, where, reduce=np.nanmax):
        return float(reduce(np.asarray(x)[where])) if np.any(where) else None

    row = {
        "name": name,
        "K": p.num_classes, "n": p.n_per_class, "d": p.feature_dim,
        "lambda_W": float(p.lambda_W), "lambda_H": float(p.lambda_H), "lambda_b": float(p.lambda_b),
        "bias": bool(p.bias), "loss": p.loss, "alpha": float(p.alpha), "M": float(p.M),
        "regime": result.regime, "f_star": result.f_star,
        "inits": summary.num_runs, "converged": summary.num_converged, "certified": summary.num_certified,
        "certified_share": summary.certified_share, "counts": counts,
        "verdict": summary.verdict.name, "verdict_reasons": list(summary.reasons),
        "minimum_values": list(summary.minimum_values), "minimum_counts": list(summary.minimum_counts),
        "max_abs_gap": None if result.f_star is None or not np.any(converged)
        else float(np.max(np.abs(values[converged] - result.f_star))),
        "minimum_value_spread": float(np.ptp(values[minima])) if np.any(minima) else None,
        "median_nc1_descent_end": worst(result.descent_nc1, labels != RunClass.DIVERGED, np.median),
        "max_nc1": worst(rep.nc1, minima),
        "max_nc2_centered_means": worst(rep.nc2_means, minima) if (etf or result.f_star is None) else None,
        "max_nc3": worst(rep.nc3, minima) if (etf or result.f_star is None) else None,
        "max_gram_spectrum_error": worst(result.gram_spectrum_error, minima) if predicted else None,
        "max_self_duality_error": worst(result.self_duality_error, minima) if predicted else None,
        "max_grad_norm_refined": float(np.max(result.grad_norm[converged])) if np.any(converged) else None,
        "min_lambda_min_at_minima": worst(result.classification.lambda_min, minima, np.nanmin),
        "seconds": {k: round(v, 2) for k, v in result.seconds.items()},
        "runs": {
            "label": [RunClass(int(i)).name.lower() for i in labels],
            "value": values, "grad_norm": result.grad_norm,
            "descent_status": np.asarray(result.descent.status), "descent_value": np.asarray(result.descent.value),
            "descent_nc1": result.descent_nc1, "lambda_min": np.asarray(result.classification.lambda_min),
            "rayleigh_quotient": np.asarray(result.classification.rayleigh_quotient),
            "tau": np.asarray(result.classification.tau),
            "nc1": np.asarray(rep.nc1), "nc2": np.asarray(rep.nc2), "nc3": np.asarray(rep.nc3),
        },
    }
    problems, notes = [], []
    if summary.verdict.name in ("SPURIOUS", "MULTIPLE_LEVELS"):
        problems.append(f"{name}: " + "; ".join(summary.reasons) + " (kept in results.json)")
    if result.f_star is not None:
        certified = labels == RunClass.GLOBAL_MINIMUM
        if np.any(certified) and np.max(np.abs(values[certified] - result.f_star)) > value_atol:
            problems.append(f"{name}: certified global minima differ from f* by more than {value_atol}")
    if counts["inconclusive"]:
        notes.append(f"{name}: {counts['inconclusive']} certificate(s) undecided")
    return row, problems, notes, summary


_TABLE_COLUMNS = ("verdict", "inits", "certified", "global", "saddle", "spurious", "local", "degenerate", "not conv",
                  "diverged", "undecided", "max abs(f-f*)", "Gram err", "self-dual err", "NC1(GD end)", "NC2", "NC3")


def _table_line(row):
    c = row["counts"]

    def fmt(x):
        return "-" if x is None else f"{x:.1e}"

    return [row["verdict"], row["inits"], row["certified"], c["global_minimum"], c["strict_saddle"],
            c["spurious_local_minimum"] + c["below_closed_form"], c["local_minimum"], c["degenerate"],
            c["not_converged"],
            c["diverged"], c["inconclusive"], fmt(row["max_abs_gap"]), fmt(row["max_gram_spectrum_error"]),
            fmt(row["max_self_duality_error"]), fmt(row["median_nc1_descent_end"]),
            fmt(row["max_nc2_centered_means"]), fmt(row["max_nc3"])]


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


def _overall(problems, inconclusive) -> tuple[ExitCode, str]:
    """The exit code and the one-line verdict of a set of explorations."""
    if problems:
        return ExitCode.DISAGREEMENT, f"FAILED: {len(problems)} disagreement(s) with the theory or spurious minima"
    if inconclusive:
        return ExitCode.INCONCLUSIVE, (f"INCONCLUSIVE: {len(inconclusive)} configuration(s) without enough converged, "
                                       f"certified runs ({', '.join(inconclusive)})")
    return ExitCode.OK, "OK: no spurious local minimum and no disagreement with the theory, on converged, certified runs"


def run_verify(args: argparse.Namespace) -> int:
    _check_args(args)
    distributed.initialize_from_args(args)  # before any JAX computation
    if args.suite == "followups":
        from nc_jax._cli_followups import run_followups

        return run_followups(args)
    import jax

    jax.config.update("jax_enable_x64", True)  # verification in float64, set at the entry point

    from nc_jax import plotting, theory
    from nc_jax.landscape import default_learning_rate, explore, saddle_probe

    quick = args.quick
    num_inits = args.num_inits or (8 if quick else 32)
    num_steps = args.num_steps or (500 if quick else 2000)
    configs, probes, open_questions = _grid(quick)
    _check_memory([p for _, p in configs + open_questions], num_inits)
    primary = distributed.is_primary()  # the only process that writes (all explore, all hold the results)
    workdir = make_workdir(args.workdir, "verify") if primary else Path(args.workdir or "verify")
    print(f"nc-jax verify: writing to {workdir.resolve()}", flush=True)
    key = jax.random.key(args.seed)
    total = len(configs) + len(probes) + len(open_questions)
    step = 0
    rows, probe_rows, problems, notes, inconclusive = [], [], [], [], []
    t_start = time.perf_counter()

    def progress(label):
        nonlocal step
        step += 1
        print(f"[{step}/{total}] {label} ({time.perf_counter() - t_start:.0f} s)", flush=True)

    for i, (name, problem) in enumerate(list(configs) + list(open_questions)):
        progress(name)
        engine = "auto" if problem.loss in ("mse", "rescaled_mse") else "full"
        result = explore(problem, key=jax.random.fold_in(key, i), num_inits=num_inits, num_steps=num_steps,
                         learning_rate=args.learning_rate, engine=engine)
        row, bad, note, summary = _summarize(name, result, 1e-9, args.min_certified_share)
        row["open_question"] = i >= len(configs)
        rows.append(row)
        problems += bad
        notes += note
        if summary.verdict.name == "INCONCLUSIVE":
            inconclusive.append(name)
            notes += [f"{name}: INCONCLUSIVE: {r}" for r in summary.reasons]
        _print_row(row)

    for j, (name, problem, kept) in enumerate(probes):
        progress(f"saddle probe: {name}, {kept} kept direction(s)")
        r = saddle_probe(problem, kept, key=jax.random.fold_in(key, 1000 + j), num_steps=num_steps * 2,
                         learning_rate=args.learning_rate or default_learning_rate(problem))
        regime = theory.regime_name(theory.global_minimum(problem).regime)
        prow = dict(name=name, K=problem.num_classes, n=problem.n_per_class, d=problem.feature_dim,
                    lambda_W=float(problem.lambda_W), lambda_H=float(problem.lambda_H),
                    lambda_b=float(problem.lambda_b), bias=bool(problem.bias), regime=regime, **r._asdict())
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
    code, verdict = _overall(problems, inconclusive)
    results = {
        "command": "nc-jax verify" + (" --quick" if quick else "") + f" --seed {args.seed}",
        "quick": quick, "seed": args.seed, "num_inits": num_inits, "num_steps": num_steps,
        "learning_rate": args.learning_rate, "min_certified_share": args.min_certified_share,
        "seconds": round(seconds, 1), "verdict": code.name, "verdict_line": verdict, "exit_code": int(code),
        "configurations": rows, "saddle_probes": probe_rows, "inconclusive": inconclusive,
        "problems": problems, "notes": notes, "ok": code == ExitCode.OK,
        "jax_backend": jax.default_backend(), "devices": len(jax.devices()), "processes": jax.process_count(),
    }
    if primary:
        plotting.plot_verify_summary(rows, probe_rows, path=workdir / "verify.png",
                                     verdict=f"nc-jax verify: {verdict}", verdict_ok=code == ExitCode.OK)
        write_json_atomic(workdir / "results.json", results)
        _write_report(workdir / "report.md", results)
    print()
    print(_markdown_table(rows))
    print()
    return _print_outcome(notes, problems, f"nc-jax verify: {verdict} ({seconds:.0f} s); report: {workdir / 'report.md'}",
                          code)


_EVIDENCE_RULE = (
    "A configuration supports a verdict only when at least {share:.0%} of its runs converged (refined to "
    "gradient norm <= 1e-10) and were certified (a decided second-order certificate), and at least one run "
    "is a certified minimum; otherwise it is INCONCLUSIVE (exit status 3). One certified minimum at a value "
    "other than f* is a finding on its own (exit status 1)."
)

_COLUMNS_TEXT = (
    "Columns: verdict = what this configuration's runs support (BENIGN, SPURIOUS, INCONCLUSIVE; "
    "SINGLE_LEVEL / MULTIPLE_LEVELS where no closed form is known); certified = converged runs whose "
    "certificate decided; global = certified PSD Hessian and f = f* (closed form, Theorem 3.1); saddle = "
    "certified negative curvature; spurious = a certified minimum with f != f* (the theory says none exist); "
    "local = a strict minimum where no closed form is known; degenerate = PSD with |lambda_min| <= tau and no "
    "value to decide (every minimum of the UFM is degenerate along its rotations W -> W Q, so without a closed "
    "form its minima land here; with one, a degenerate point above f* would contradict the strict-saddle "
    "theorems); "
    "undecided = converged but the certificate could not decide; Gram err = worst distance between the "
    "normalised class-mean Gram spectrum and Theorem 3.1's prediction for THIS regime (an ETF, a shifted ETF, "
    "a rank-d projection or an orthogonal frame); self-dual err = ||Hbar - c W^T|| / ||W|| with "
    "c = sqrt(lambda_W / (lambda_H n)), which every regime predicts to vanish; NC1(GD end) = median NC1 at the "
    "gradient-descent endpoints (before refinement; NC1 is 0 at every refined critical point, whose features "
    "are ridge solutions per class); NC2 (centered class means) and NC3 measure the distance to a simplex ETF, "
    "so they are shown only in the ETF regimes and for losses without a closed form: elsewhere the theory "
    "predicts another geometry (a shifted ETF, a low-rank or orthogonal frame) and Gram err is the right "
    "measure. '-' in the zero regime, where W* = H* = 0 and there is no geometry to measure."
)


def _write_report(path: Path, results: dict) -> None:
    lines = [
        "# nc-jax verify",
        "",
        f"**Verdict: {results['verdict_line']}** (exit status {results['exit_code']})",
        "",
        f"Command: `{results['command']}`; seed {results['seed']}; {results['num_inits']} inits x "
        f"{results['num_steps']} GD steps (learning rate {results['learning_rate'] or '0.5/(1+lambda_b)'}) per configuration, "
        f"then trust-region Newton-CG to gradient norm <= 1e-10 and a Lanczos certificate per run; "
        f"float64; {results['seconds']} s on {results['jax_backend']}.",
        "",
        _EVIDENCE_RULE.format(share=results["min_certified_share"]),
        "",
        "## Multistart classification",
        "",
        _markdown_table([r for r in results["configurations"] if not r.get("open_question")]),
        "",
        _COLUMNS_TEXT,
        "",
        "## Open questions (evidence, not proof)",
        "",
        _markdown_table([r for r in results["configurations"] if r.get("open_question")]) or "(skipped in --quick)",
        "",
        "For losses without a closed form the minima are counted as 'degenerate' (second-order points; the "
        "rotation symmetry leaves zero curvature) and grouped by value: SINGLE_LEVEL means one value, "
        "MULTIPLE_LEVELS would mean more than one.",
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
    lines += ["", "## Verdict", "", results["verdict_line"], ""]
    lines += [f"- DISAGREEMENT: {p}" for p in results["problems"]]
    lines += [f"- note: {n}" for n in results["notes"]]
    lines += ["", "Figures: `verify.png`. Per-run numbers: `results.json`."]
    write_text_atomic(path, "\n".join(lines) + "\n")


def run_landscape(args: argparse.Namespace) -> int:
    _check_args(args)
    import jax

    jax.config.update("jax_enable_x64", True)
    from nc_jax.landscape import explore

    problem = ufm_problem_from_args(args)
    distributed.initialize_from_args(args)  # before any JAX computation
    _check_memory([problem], args.num_inits)
    primary = distributed.is_primary()  # the only process that writes (all explore, all hold the result)
    workdir = make_workdir(args.workdir, "landscape") if primary else Path(args.workdir or "landscape")
    print(f"nc-jax landscape: writing to {workdir.resolve()}", flush=True)
    result = explore(problem, key=jax.random.key(args.seed), num_inits=args.num_inits, num_steps=args.num_steps,
                     learning_rate=args.learning_rate, engine="auto" if args.loss in ("mse", "rescaled_mse") else "full",
                     progress=lambda message: print(message, flush=True))
    from nc_jax.landscape import write_report

    row, problems, notes, summary = _summarize("landscape", result, 1e-9, args.min_certified_share)
    _print_row(row)
    code, verdict = _overall(problems, ["landscape"] if summary.verdict.name == "INCONCLUSIVE" else [])
    if summary.verdict.name == "INCONCLUSIVE":
        notes += [f"INCONCLUSIVE: {r}" for r in summary.reasons]
    command = "nc-jax landscape " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in sorted(vars(args).items())
        if not k.startswith("_") and k != "command" and v is not None and v is not False
        and k not in distributed.FLAG_DESTS)  # how many processes ran it does not change the result
    if primary:
        write_report(result, workdir, name="nc-jax landscape", command=command,
                     min_certified_share=args.min_certified_share,
                     extra={"ufm": {k: v for k, v in row.items() if k != "runs"}, "exit_code": int(code),
                            "exit_status": code.name, "problems": problems, "notes": notes},
                     extra_markdown="| " + " | ".join(_TABLE_COLUMNS) + " |\n|" + "---|" * len(_TABLE_COLUMNS)
                     + "\n| " + " | ".join(str(x) for x in _table_line(row)) + " |\n\n" + _COLUMNS_TEXT + "\n")
    return _print_outcome(notes, problems, f"nc-jax landscape: {verdict}; results: {workdir / 'results.json'}", code)


def _print_outcome(notes, problems, last_line: str, code: ExitCode) -> int:
    """Notes, disagreements and the verdict line (printed last), and the exit status."""
    for line in notes:
        print(f"note: {line}")
    for line in problems:
        print(f"DISAGREEMENT: {line}")
    print(last_line)
    return int(code)
