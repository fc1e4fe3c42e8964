"""Other losses on the UFM: the global minimum per loss, its norms against the closed forms,
and the Hessian condition number there (issue 12, item 3).

Per loss (mse, label_smoothing eps = 0.1, focal gamma = 2, ce; balanced classes, bias,
lambda_W = lambda_H = lambda_b = lambda) and per lambda: trust-region Newton from
``--num-inits`` random inits to gradient norm 1e-10, the dense Hessian at every endpoint
(:func:`nc_jax.conditioning.conditioning`), and the lowest endpoint whose Hessian is PSD
modulo the rotation orbit taken as the minimum. Recorded there: value, ||W||_F, ||H||_F,
||b|| against the closed form (MSE: ``theory.global_minimum``, Theorem 3.1; the softmax
losses: the ETF scalar problem, ``conditioning.etf_minimum``, Zhu et al. 2021 / Zhou et al.
2022), the balance lambda_W ||W||^2 = lambda_H ||H||^2, the number of zero eigenvalues
against the orbit dimension, and kappa = lambda_max / lambda_min on the complement of the
orbit's tangent space.

Claim tested: label smoothing's minimum is better conditioned than CE's (the brief's reading
of Zhou et al., NeurIPS 2022): kappa(label_smoothing) < kappa(ce) at every lambda.

Writes ``followups_losses.json`` and ``followups_losses.png``.

Usage: python -m experiments.followups_losses [--quick] [--workdir DIR] [--seed 0]
"""

from __future__ import annotations

import argparse
import functools
import time

import jax
import numpy as np

from experiments import harness
from nc_jax import conditioning, solvers, theory, ufm
from nc_jax.ufm import UFMProblem

LOSSES = ("mse", "label_smoothing", "focal", "ce")
FULL = dict(sizes=((3, 2, 3), (4, 3, 4)), lam=(1e-3, 5e-3, 1e-2, 5e-2), num_inits=8)
QUICK = dict(sizes=((3, 2, 3),), lam=(5e-3,), num_inits=4)


@functools.partial(jax.jit, static_argnames=("num_inits",))
def _newton_from_random(key, problem, scale, *, num_inits):
    """Trust-region Newton on the full objective from ``num_inits`` N(0, scale^2) inits."""
    def one(k):
        p0 = ufm.init_params(k, problem, 1.0)
        p0 = jax.tree.map(lambda x: scale * x, p0)
        res = solvers.trust_region_newton(ufm.objective, p0, problem, grad_tol=1e-10, max_iters=500)
        return res.params, res.value, res.grad_norm

    return jax.lax.map(one, jax.random.split(key, num_inits))


def closed_form(problem: UFMProblem) -> dict:
    if problem.loss == "mse":
        gm = theory.global_minimum(problem)
        W, H, b = gm.params
        return {"source": "Theorem 3.1 (theory.global_minimum)", "value": float(gm.value),
                "W_norm": float(np.linalg.norm(W)), "H_norm": float(np.linalg.norm(H)),
                "b_norm": float(np.linalg.norm(b)), "params": gm.params}
    e = conditioning.etf_minimum(problem)
    return {"source": "ETF scalar problem (Zhu et al. 2021; Zhou et al. 2022)", "value": e.value, "t": e.t,
            "W_norm": e.W_norm, "H_norm": e.H_norm, "b_norm": 0.0, "params": e.params}


def run_case(K, n, d, lam, loss, key, num_inits) -> dict:
    problem = UFMProblem(K, n, d, lam, lam, lam, loss=loss)
    theory_min = closed_form(problem)
    params, values, gnorms = _newton_from_random(key, problem, 1.0, num_inits=num_inits)
    runs, best = [], None
    for i in range(num_inits):
        p = jax.tree.map(lambda x: x[i], params)
        c = conditioning.conditioning(ufm.objective, p, problem)
        converged = float(gnorms[i]) <= 1e-10
        # second-order modulo the orbit: no eigenvalue below -tol on the complement
        psd = c.lambda_min_perp > 1e-9 * c.lambda_max
        runs.append({"value": float(values[i]), "grad_norm": float(gnorms[i]), "converged": converged,
                     "psd_mod_orbit": bool(psd), "lambda_min_perp": c.lambda_min_perp,
                     "num_negative": int(np.sum(c.perp_eigenvalues < -1e-9 * c.lambda_max))})
        if converged and psd and (best is None or float(values[i]) < best[0]):
            best = (float(values[i]), p, c)
    out = {"K": K, "n": n, "d": d, "lambda": lam, "loss": loss, "runs": runs,
           "closed_form": {k: v for k, v in theory_min.items() if k != "params"}}
    c_theory = conditioning.conditioning(ufm.objective, theory_min["params"], problem)
    out["kappa_at_closed_form"] = c_theory.kappa
    if best is None:
        out["verdict"] = "INCONCLUSIVE"
        return out
    value, p, c = best
    W, H, b = p
    levels = sorted({round(r["value"], 9) for r in runs if r["converged"] and r["psd_mod_orbit"]})
    out.update(
        verdict="certified",
        value=value,
        value_minus_closed_form=value - theory_min["value"],
        W_norm=float(np.linalg.norm(W)), H_norm=float(np.linalg.norm(H)), b_norm=float(np.linalg.norm(b)),
        balance_gap=float(lam * np.sum(np.asarray(W) ** 2) - lam * np.sum(np.asarray(H) ** 2)),
        orbit_dim=c.orbit_dim, num_zero=c.num_zero, lambda_max=c.lambda_max, lambda_min_perp=c.lambda_min_perp,
        kappa=c.kappa, smallest_perp=c.perp_eigenvalues[:4].tolist(), second_order_levels=levels,
    )
    return out


def draw(result: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = result["config"]["sizes"]
    fig, axes = plt.subplots(1, len(sizes), figsize=(4.2 * len(sizes), 3.3), squeeze=False)
    for ax, (K, n, d) in zip(axes[0], sizes):
        for loss in LOSSES:
            rows = [r for r in result["cases"] if (r["K"], r["n"], r["d"]) == (K, n, d) and r["loss"] == loss
                    and r.get("kappa") is not None]
            if rows:
                ax.loglog([r["lambda"] for r in rows], [r["kappa"] for r in rows], "o-", label=loss, ms=4)
        ax.set_xlabel("lambda = lambda_W = lambda_H = lambda_b", fontsize=8)
        ax.set_ylabel("kappa mod rotations", fontsize=8)
        ax.set_title(f"K={K}, n={n}, d={d}", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    harness.save_png(fig, path, dpi=80)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    harness.add_quick_arg(parser, "K=3, one lambda, 4 inits (< 1 min)")
    harness.add_workdir_arg(parser, "followups_losses")
    harness.add_seed_arg(parser)
    args = parser.parse_args(argv)
    harness.require_x64()
    cfg = dict(QUICK if args.quick else FULL)
    workdir = harness.make_workdir(args.workdir, "followups_losses")
    key = jax.random.key(args.seed)
    t0 = time.perf_counter()
    cases = []
    for si, (K, n, d) in enumerate(cfg["sizes"]):
        for li, lam in enumerate(cfg["lam"]):
            for oi, loss in enumerate(LOSSES):
                case = run_case(K, n, d, lam, loss, jax.random.fold_in(key, 1000 * si + 10 * li + oi),
                                cfg["num_inits"])
                cases.append(case)
                harness.progress(f"K={K} n={n} d={d} lambda={lam:g} {loss}: {case['verdict']} "
                                 f"f-f*={case.get('value_minus_closed_form', float('nan')):.1e} "
                                 f"kappa={case.get('kappa', float('nan')):.4g} "
                                 f"zeros {case.get('num_zero')}/{case.get('orbit_dim')} "
                                 f"({time.perf_counter() - t0:.0f} s)")
    comparisons = []
    for (K, n, d) in cfg["sizes"]:
        for lam in cfg["lam"]:
            k = {c["loss"]: c.get("kappa") for c in cases if (c["K"], c["n"], c["d"], c["lambda"]) == (K, n, d, lam)}
            if k.get("label_smoothing") is not None and k.get("ce") is not None:
                comparisons.append({"K": K, "n": n, "d": d, "lambda": lam, "kappa_ls": k["label_smoothing"],
                                    "kappa_ce": k["ce"], "ls_better": k["label_smoothing"] < k["ce"]})
    certified = [c for c in cases if c["verdict"] == "certified"]
    summary = {
        "claim_ls_better_conditioned_than_ce": (
            "INCONCLUSIVE" if len(comparisons) < len(cfg["sizes"]) * len(cfg["lam"])
            else "confirmed" if all(c["ls_better"] for c in comparisons)
            else "refuted" if not any(c["ls_better"] for c in comparisons) else "mixed"),
        "comparisons": comparisons,
        "max_abs_value_minus_closed_form": max(abs(c["value_minus_closed_form"]) for c in certified),
        "all_morse_bott": all(c["num_zero"] == c["orbit_dim"] for c in certified),
        "max_abs_balance_gap": max(abs(c["balance_gap"]) for c in certified),
        "num_inconclusive": len(cases) - len(certified),
        "seconds": time.perf_counter() - t0,
    }
    result = {"config": cfg, "seed": args.seed, "quick": args.quick, "load": harness.load_info(),
              "summary": summary, "cases": cases}
    return harness.finish(workdir, "followups_losses", result, lambda p: draw(result, p), f"summary: {summary}")


if __name__ == "__main__":
    harness.run(main, x64=True)
