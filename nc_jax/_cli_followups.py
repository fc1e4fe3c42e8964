"""`nc-jax verify --suite followups`: the follow-up models' claims checked in one run.

Owns the default grid of follow-up checks (class-imbalanced UFM, deep linear UFM, label
smoothing and focal losses: explorations summarized against their expectations; the
merged-minority saddles of the imbalanced UFM with bias: dense Hessians; the deep ReLU
UFM against its DNC level: a search for lower values), and the
exit status: 1 when a claim is refuted (a minimum off the closed-form levels or below f*, or
an unexpected verdict), 3 when a check is inconclusive.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Callable, NamedTuple

from nc_jax.io import ExitCode, make_workdir, write_json_atomic, write_text_atomic


class Check(NamedTuple):
    """One follow-up claim: the model explored and what its summary must show."""

    name: str
    claim: str
    source: str
    explore: Callable  # key -> ExplorationResult
    expected: tuple  # the Verdict names that confirm the claim
    levels: tuple | None = None  # closed-form critical levels every certified minimum must be on
    # a check decided without the explorer: key -> dict(our_verdict, problem, reasons)
    custom: Callable | None = None


_NO_EXPLORATION = "n/a (no exploration)"  # a check decided without the explorer (report columns)


def _merged_minority_saddles(key) -> dict:
    """Imbalanced UFM (R, R, 1, 1), d = 4, lambda = 0.05 (R_c = 9), MSE with bias and CE: the
    merged-minority critical point is a strict saddle at R = 0.7 R_c and second order at
    1.3 R_c, its escape curvature the closed form (dense Hessian of the exact class-mean UFM)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.flatten_util import ravel_pytree

    from nc_jax import class_mean_ufm as cm
    from nc_jax import conditioning

    lam, R_c = 0.05, 9.0
    reasons, wrong, unconverged = [], [], False
    for loss in ("mse", "ce"):
        for R in (0.7 * R_c, 1.3 * R_c):
            p = cm.ClassMeanUFM(jnp.asarray([R, R, 1.0, 1.0]), 4, lam, lam, lam, bias=True, loss=loss)
            x, _ = cm.merged_critical_point(p, key)
            grad = float(jnp.linalg.norm(ravel_pytree(jax.grad(cm.objective)(x, p))[0]))
            H = np.asarray(conditioning.dense_hessian(cm.objective)(x, p))
            eig = np.linalg.eigvalsh(0.5 * (H + H.T))
            s = 1.0 / (2 * R + 2)
            _, vecs = np.linalg.eigh(np.array([[lam, -s], [-s, lam]]))
            D = np.asarray(ravel_pytree(cm.merge_escape_direction(x, p, *vecs[:, 0]))[0])
            rq, pred = float(D @ H @ D / (D @ D)), cm.merge_escape_curvature(p)
            saddle = eig[0] < -1e-8
            reasons.append(f"{loss} R={R:.3g}: gradient {grad:.1e}, lambda_min {eig[0]:.4g}, escape curvature "
                           f"{rq:.6g} (closed form {pred:.6g})")
            unconverged |= grad > 1e-10
            if grad <= 1e-10 and (saddle != (R < R_c) or abs(rq - pred) > 1e-10):
                wrong.append(reasons[-1])
    ours = "refuted" if wrong else "inconclusive" if unconverged else "confirmed"
    return {"our_verdict": ours, "problem": f"merged minority: {'; '.join(wrong)}" if wrong else None,
            "reasons": reasons}


def _deep_relu_dnc(key) -> dict:
    """Deep ReLU UFM, lambda = 0.02, widths K + 2, n = 1 (deep_ufm.search_below_dnc): with two
    classes the search reaches f_DNC and goes no lower (Sukenik et al. 2023, evidence); with
    K = 4 and L = 4 it finds a point below f_DNC (Sukenik et al. 2024: DNC is not optimal)."""
    import jax

    from nc_jax import deep_ufm

    reasons, verdicts, wrong = [], [], []
    for K, expect_below in ((2, False), (4, True)):
        p = deep_ufm.DeepUFMProblem(K, 1, (K + 2,) * 4, lambda_W=0.02, lambda_H=0.02, activation="relu")
        found = deep_ufm.search_below_dnc(p, key=jax.random.fold_in(key, K), num_inits=16)
        reasons.append(f"K={K} L=4: best {found.best_value:.8g} vs f_DNC {found.f_dnc:.8g} "
                       f"({100 * (found.best_value - found.f_dnc) / found.f_dnc:+.3f}%)")
        if expect_below:
            verdicts.append("confirmed" if found.below else "inconclusive")
        elif found.below:
            wrong.append(f"two classes: a point below f_DNC, {reasons[-1]}")
        else:
            verdicts.append("evidence only" if found.reached else "inconclusive")
    ours = "refuted" if wrong else "inconclusive" if "inconclusive" in verdicts else "confirmed"
    return {"our_verdict": ours, "problem": "; ".join(wrong) or None, "reasons": reasons}


def _checks(quick: bool) -> list[Check]:
    import math

    from nc_jax import deep_ufm, landscape
    from nc_jax.ufm import UFMProblem

    inits = 6 if quick else 16
    lam = math.sqrt(3.5) / 43  # N^2 lambda^2 = 3.5: between the minority size 3 and the majority 20

    def ufm(problem, **kw):
        return lambda key: landscape.explore(problem, key=key, num_inits=inits, **kw)

    deep = deep_ufm.DeepUFMProblem(3, 2, (3, 3), lambda_W=0.01, lambda_H=0.01)
    return [
        Check("imbalanced (6,3,1), no bias", "every certified minimum is the closed-form global one",
              "Theorem 3.2 extended; Dang et al. 2023",
              ufm(UFMProblem(3, (6, 3, 1), 4, 5e-3, 5e-3, 0.0, bias=False), num_steps=1500), ("BENIGN",)),
        Check("imbalanced (20,20,3), minority collapse", "benign at an f* whose minority class has collapsed (closed form)",
              "Fang et al. 2021 (minority collapse)",
              ufm(UFMProblem(3, (20, 20, 3), 4, lam, lam, 0.0, bias=False), num_steps=1500), ("BENIGN",)),
        Check("deep linear UFM, 3 factors", "NOT benign: switching singular values off gives local minima",
              "Sukenik et al. 2023; Dang et al. 2023",
              lambda key: landscape.explore(deep_ufm.model(deep), deep, key=key, num_inits=max(inits, 12),
                                            scales=(0.01, 0.03, 0.1), num_steps=2000, learning_rate=0.1),
              ("SPURIOUS",), tuple(float(v) for v in deep_ufm.local_minimum_values(deep).values)),
        Check("label smoothing eps=0.1", "one collapsed minimum level", "Zhou et al., NeurIPS 2022",
              ufm(UFMProblem(3, 2, 4, 5e-3, 5e-3, 5e-3, loss="label_smoothing"), num_steps=3000,
                  learning_rate=0.5), ("SINGLE_LEVEL", "BENIGN")),
        Check("focal gamma=2", "collapsed minima (benign only locally)", "Zhou et al., NeurIPS 2022",
              ufm(UFMProblem(3, 2, 4, 5e-3, 5e-3, 5e-3, loss="focal"), num_steps=3000, learning_rate=0.5),
              ("SINGLE_LEVEL", "BENIGN")),
        Check("deep ReLU UFM, L = 4: DNC vs lower rank", "two classes: DNC optimal (none below f_DNC); K = 4: "
              "a lower-rank point beats DNC", "Sukenik et al. 2023; Sukenik, Lampert, Mondelli 2024", None, (),
              custom=_deep_relu_dnc),
        Check("imbalanced (R,R,1,1) with bias, merged minority", "strict saddle iff n_min > N^2 lambda_W lambda_H "
              "(MSE and CE)", "ours (docs/followups.md); Fang et al. 2021", None, (), custom=_merged_minority_saddles),
    ]


def _judge(check: Check, summary) -> tuple[str, str | None]:
    """(our verdict on the claim, a disagreement with a closed form or None)."""
    import numpy as np

    found = np.asarray(summary.minimum_values, float)
    if check.levels is not None and found.size:
        off = [v for v in found if np.min(np.abs(np.asarray(check.levels) - v)) > 1e-8]
        if off:
            return "refuted", f"{check.name}: certified minima at {off}, not on the closed-form levels {check.levels}"
    if summary.counts.get("below_closed_form", 0):
        return "refuted", f"{check.name}: a certified point below the closed-form optimum {summary}"
    if summary.verdict.name == "INCONCLUSIVE":
        return "inconclusive", None
    if summary.verdict.name not in check.expected:
        return "refuted", f"{check.name}: expected {'/'.join(check.expected)}, found {summary.verdict.name}: " \
                          f"{'; '.join(summary.reasons)}"
    return "confirmed", None


def run_followups(args: argparse.Namespace) -> int:
    import jax

    jax.config.update("jax_enable_x64", True)  # entry point: certificates in float64
    from nc_jax import distributed, landscape

    # with several processes all explore and hold the results; only process 0 writes
    primary = distributed.is_primary()
    workdir = make_workdir(args.workdir, "followups") if primary else Path(args.workdir or "followups")
    print(f"nc-jax verify --suite followups: writing to {workdir}", flush=True)
    rows, problems, t0 = [], [], time.perf_counter()
    checks = _checks(args.quick)
    for i, check in enumerate(checks):
        print(f"[{i + 1}/{len(checks)}] {check.name} ({time.perf_counter() - t0:.0f} s)", flush=True)
        if check.custom is not None:
            out = check.custom(jax.random.fold_in(jax.random.key(args.seed), i))
            problems += [out["problem"]] if out["problem"] else []
            rows.append({"name": check.name, "claim": check.claim, "source": check.source,
                         "our_verdict": out["our_verdict"], "explorer_verdict": _NO_EXPLORATION,
                         "reasons": out["reasons"], "minimum_values": [], "counts": {}, "f_star": None,
                         "closed_form_levels": None})
            continue
        result = check.explore(jax.random.fold_in(jax.random.key(args.seed), i))
        summary = landscape.summarize(result, min_certified_share=args.min_certified_share)
        ours, problem = _judge(check, summary)
        problems += [problem] if problem else []
        rows.append({"name": check.name, "claim": check.claim, "source": check.source, "our_verdict": ours,
                     "explorer_verdict": summary.verdict.name, "reasons": list(summary.reasons),
                     "minimum_values": list(summary.minimum_values), "counts": dict(summary.counts),
                     "f_star": result.f_star, "closed_form_levels": check.levels})
    code = ExitCode.DISAGREEMENT if problems else (
        ExitCode.INCONCLUSIVE if any(r["our_verdict"] == "inconclusive" for r in rows) else ExitCode.OK)
    write_json = write_json_atomic if primary else (lambda *a, **k: None)
    write_text = write_text_atomic if primary else (lambda *a, **k: None)
    write_json(workdir / "results.json", {"suite": "followups", "quick": args.quick, "rows": rows,
                                                 "problems": problems, "exit_code": int(code),
                                                 "seconds": time.perf_counter() - t0})
    lines = _table(rows)
    write_text(workdir / "report.md", f"# nc-jax verify --suite followups: {code.name}\n\n"
                      + "\n".join(lines) + "\n" + "".join(f"\nDISAGREEMENT: {p}\n" for p in problems)
                      + _evidence(rows))
    print("\n".join(lines))
    for p in problems:
        print(f"DISAGREEMENT: {p}")
    print(f"nc-jax verify --suite followups: {code.name} ({time.perf_counter() - t0:.0f} s); "
          f"report: {workdir / 'report.md'}")
    return int(code)


def _table(rows) -> list[str]:
    """The report's table; checks decided without the explorer have no minimum levels."""
    lines = ["| check | claim | source | our verdict | explorer | minimum levels |", "|---|---|---|---|---|---|"]
    for r in rows:
        levels = (_NO_EXPLORATION if r["explorer_verdict"] == _NO_EXPLORATION
                  else ", ".join(f"{v:.6g}" for v in r["minimum_values"]))
        lines.append(f"| {r['name']} | {r['claim']} | {r['source']} | {r['our_verdict']} | "
                     f"{r['explorer_verdict']} | {levels} |")
    return lines


def _evidence(rows) -> str:
    """What each check measured (the explorer's reasons, or a custom check's own figures)."""
    out = ["\n## Evidence\n"]
    for r in rows:
        out.append(f"\n### {r['name']}\n\n" + "".join(f"- {reason}\n" for reason in r["reasons"]))
    return "".join(out)
