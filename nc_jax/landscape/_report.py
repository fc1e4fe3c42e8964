"""One exploration on disk: report.md, results.json and a picture, for any Model.

``nc-jax landscape`` and a user's own script (``experiments/my_objective.py``) write the
same three files through :func:`write_report`.
"""

from __future__ import annotations

import numpy as np

from nc_jax.landscape._classify import CLASS_NAMES
from nc_jax.landscape._summary import DEFAULT_MIN_CERTIFIED_SHARE, Summary, summarize

__all__ = ["exploration_row", "write_report"]


def exploration_row(result, name: str, summary: Summary | None = None) -> dict:
    """A JSON-ready record of one exploration: verdict, counts, levels and every run."""
    summary = summarize(result) if summary is None else summary
    labels = np.asarray(result.classification.label)
    row = {
        "name": name, "model": result.model.name, "f_star": result.f_star,
        "verdict": summary.verdict.name, "verdict_reasons": list(summary.reasons),
        "inits": summary.num_runs, "converged": summary.num_converged, "certified": summary.num_certified,
        "certified_share": summary.certified_share, "min_certified_share": summary.min_certified_share,
        "counts": summary.counts,
        "minimum_values": list(summary.minimum_values), "minimum_counts": list(summary.minimum_counts),
        "seconds": {k: round(v, 3) for k, v in result.seconds.items()},
        "runs": {
            "label": [CLASS_NAMES[int(i)] for i in labels],
            "value": np.asarray(result.value), "grad_norm": np.asarray(result.grad_norm),
            "descent_status": np.asarray(result.descent.status),
            "descent_value": np.asarray(result.descent.value),
            "lambda_min": np.asarray(result.classification.lambda_min),
            "rayleigh_quotient": np.asarray(result.classification.rayleigh_quotient),
            "tau": np.asarray(result.classification.tau),
        },
    }
    if result.invariants is not None:
        row["runs"]["invariant"] = np.asarray(result.invariants)
    return row


def write_report(result, workdir, *, name: str = "landscape", command: str | None = None,
                 min_certified_share: float = DEFAULT_MIN_CERTIFIED_SHARE, extra: dict | None = None,
                 extra_markdown: str = "") -> Summary:
    """Write ``report.md``, ``results.json`` and ``landscape.png`` for one exploration.

    Args:
      extra: more top-level fields for results.json (a model's own measurements, e.g. the
        UFM's distance to Theorem 3.1's prediction, or an exit status).
      extra_markdown: a section appended to report.md.

    Returns the :class:`Summary` whose verdict the files state.
    """
    from nc_jax import plotting
    from nc_jax.io import make_workdir, write_json_atomic, write_text_atomic

    workdir = make_workdir(workdir, "landscape")  # created if new; a UsageError if it cannot be
    summary = summarize(result, min_certified_share=min_certified_share)
    row = exploration_row(result, name, summary)
    ok = summary.verdict.name in ("BENIGN", "SINGLE_LEVEL")
    verdict_line = f"{summary.verdict.name}: " + "; ".join(summary.reasons)
    plotting.plot_verify_summary([row], [], path=workdir / "landscape.png", verdict=f"{name}: {verdict_line}",
                                 verdict_ok=ok if summary.verdict.name != "INCONCLUSIVE" else False)
    write_json_atomic(workdir / "results.json", {"command": command, "configuration": row,
                                                 "verdict": summary.verdict.name, "verdict_line": verdict_line,
                                                 **(extra or {})})
    counts = {k: v for k, v in summary.counts.items() if v}
    lines = [
        f"# {name}", "",
        f"**Verdict: {verdict_line}**", "",
        f"Command: `{command}`" if command else "",
        f"Model `{result.model.name}`; {summary.num_runs} runs; known optimum: "
        + (f"{result.f_star:.12g}" if result.f_star is not None else "none (levels, not verdicts)"), "",
        "| class | runs |", "|---|---|",
        *[f"| {k} | {v} |" for k, v in counts.items()], "",
        "Minimum levels (second-order points grouped by value):", "",
        "| value | runs |", "|---|---|",
        *[f"| {v:.12g} | {c} |" for v, c in zip(summary.minimum_values, summary.minimum_counts)], "",
        f"Evidence rule: a verdict needs at least {summary.min_certified_share:.0%} of the runs converged "
        "(gradient norm <= tolerance) and certified (a decided second-order certificate), and at least one "
        "certified second-order point; otherwise INCONCLUSIVE. A certificate proves a strict saddle (negative "
        "curvature beyond rounding) or a second-order point (PSD Hessian); a positive definite Hessian proves a "
        "strict local minimum, a degenerate one (|lambda_min| <= tau) proves nothing more, and no certificate "
        "speaks for points the descent never reached.", "",
        extra_markdown,
        "Per-run numbers: `results.json`; picture: `landscape.png`.",
    ]
    write_text_atomic(workdir / "report.md", "\n".join(lines) + "\n")
    return summary
