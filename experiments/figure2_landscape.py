"""Figure 2: the loss over (s, theta) for vanilla MSE, CE and rescaled MSE (Appendix C.1).

Also verifies Proposition C.1 numerically: for a unit-row simplex ETF ``W`` and the
feature ``h`` of eq. (28), ``||h|| = s``, ``angle(h, w^k) = theta``, ``W h`` equals eq. (29)
and the direct losses equal eqs. (31)-(32). Records the errata measurements (unscaled ETF,
eq. (30) as printed) and, per loss, how often the landscape is steeper in theta than in s
in the region ``s > 1, theta < 1.5`` the paper discusses.

    python -m experiments.figure2_landscape [--workdir DIR] [--K 10] [--tiny]

Writes ``WORKDIR/figure2.png`` and ``WORKDIR/figure2.json``.
"""

from __future__ import annotations

import argparse

import numpy as np

from experiments import harness
from nc_jax import plotting, theory

TOLERANCE = 1e-10  # Proposition C.1 identities, float64


def polar_grid_parser(stem: str, doc: str, *, K_help: str, configs: str, configs_help: str, points: int,
                      points_help: str) -> argparse.ArgumentParser:
    """The parser of Figures 2 and 8 with their (s, theta) grid options.

    --workdir (``stem``), --K, --configs (default ``configs``), --n-s and --n-theta (default
    ``points``; ``points_help`` is formatted with ``axis``) and --s-max.
    """
    p = argparse.ArgumentParser(description=doc.split("\n")[0])
    pairs = harness.parse_alpha_m_pairs
    harness.add_workdir_arg(p, stem)
    p.add_argument("--K", type=int, default=10, help=K_help)
    p.add_argument("--configs", type=pairs, default=pairs(configs), help=configs_help)
    p.add_argument("--n-s", type=int, default=points, help=points_help.format(axis="s"))
    p.add_argument("--n-theta", type=int, default=points, help=points_help.format(axis="theta"))
    p.add_argument("--s-max", type=float, default=None,
                   help="largest s (default: 1.5 * max(M, 2))")
    p.add_argument("--dpi", type=int, default=120, help="PNG resolution (dots per inch)")
    return p


def polar_grid(args) -> tuple[float, np.ndarray, np.ndarray]:
    """``(s_max, s, theta)``: the grid of :func:`polar_grid_parser`'s options."""
    s_max = args.s_max if args.s_max else 1.5 * max(max(m for _, m in args.configs), 2.0)
    return s_max, np.linspace(0.0, s_max, args.n_s), np.linspace(0.0, np.pi, args.n_theta)


def build_parser() -> argparse.ArgumentParser:
    p = polar_grid_parser("figure2", __doc__, K_help="number of classes (>= 3)", configs="1,1;1,5;5,1;5,5",
                          configs_help="rescaled-MSE (alpha,M) pairs separated by ';' (1,1 = vanilla)",
                          points=121, points_help="grid points in {axis}")
    p.add_argument("--n-check", type=int, default=2000,
                   help="random (s, theta) points for the Proposition C.1 check")
    harness.add_seed_arg(p)
    p.add_argument("--tiny", action="store_true", help="tiny grid (for tests)")
    return p


def steepness_summary(s, theta, K, configs) -> dict:
    """Fraction of the region s > 1, theta < 1.5 where |dL/dtheta| / s > |dL/ds|.

    ``|dL/dtheta| / s`` is the rate of change per unit arc length, comparable with
    ``dL/ds`` (per unit radial length); the raw coordinate ratio is reported too.
    """
    S, T = np.meshgrid(s, theta, indexing="ij")
    region = (S > 1.0) & (T < 1.5)
    grads = {f"mse alpha={a:g} M={m:g}": theory.polar_mse_grad(S, T, K, a, m) for a, m in configs}
    grads["ce"] = theory.polar_ce_grad(S, T, K)
    out = {}
    for name, (g_s, g_t) in grads.items():
        if not region.any():
            out[name] = None
            continue
        out[name] = {
            "frac_theta_steeper_arclength": float(np.mean(np.abs(g_t[region]) / S[region]
                                                          > np.abs(g_s[region]))),
            "frac_theta_steeper_coordinates": float(np.mean(np.abs(g_t[region])
                                                            > np.abs(g_s[region]))),
        }
    return out


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.K < 3:
        raise SystemExit(f"--K must be >= 3 (Proposition C.1 needs K - 1 > 1); got {args.K}")
    if args.tiny:
        args.n_s, args.n_theta, args.n_check = 9, 11, 50
    workdir = harness.make_workdir(args.workdir, "figure2")

    s_max, s, theta = polar_grid(args)

    # Proposition C.1, directly: K in {3, 4, args.K}, d = K - 1 and d = K + 2.
    rng = np.random.default_rng(args.seed)
    s_chk = rng.uniform(0.0, s_max, args.n_check)
    t_chk = rng.uniform(0.0, np.pi, args.n_check)
    checks = {}
    for K in sorted({3, 4, args.K}):
        for d in (K - 1, K + 2):
            alpha, M = args.configs[-1]
            checks[f"K={K},d={d}"] = theory.proposition_c1_check(
                K, s_chk, t_chk, d=d, alpha=alpha, M=M, seed=args.seed)
    identity_keys = ("norm_h_minus_s", "angle_minus_theta", "out_k", "out_kp", "out_other",
                     "mse_eq31_vs_direct", "ce_eq32_vs_direct")
    worst = max(c[k] for c in checks.values() for k in identity_keys)
    print(f"Proposition C.1 / eqs. (28)-(32): max discrepancy {worst:.3e} "
          f"({'OK' if worst < TOLERANCE else 'FAILED'}, tolerance {TOLERANCE:g})")
    print(f"  with the unscaled ETF (I - 11^T/K)P^T, eq. (29) is off by a relative "
          f"{checks[f'K={args.K},d={args.K + 2}']['unscaled_etf_out_k_rel_error']:.3f} (= 1/K)")
    print(f"  eq. (30) as printed (off-class target 1) differs from eq. (31) by up to "
          f"{checks[f'K={args.K},d={args.K + 2}']['eq30_printed_minus_eq31']:.3f}")

    fig = plotting.plot_landscapes(s, theta, theory.figure2_panels(s, theta, args.K, mse_configs=args.configs))
    harness.save_png(fig, workdir / "figure2.png", dpi=args.dpi)
    S, T = np.meshgrid(s, theta, indexing="ij")
    losses = {f"mse alpha={a:g} M={m:g}": theory.polar_mse_loss(S, T, args.K, a, m)
              for a, m in args.configs}
    losses["ce"] = theory.polar_ce_loss(S, T, args.K)
    minima = {}
    for name, L in losses.items():
        i, j = np.unravel_index(np.argmin(L), L.shape)
        minima[name] = {"loss": float(L[i, j]), "s": float(s[i]), "theta": float(theta[j])}
    steep = steepness_summary(s, theta, args.K, args.configs)
    for name, v in steep.items():
        if v is not None:
            print(f"  {name}: |dL/dtheta|/s > |dL/ds| on {100 * v['frac_theta_steeper_arclength']:.0f}%"
                  f" of s>1, theta<1.5")
    result = {
        "K": args.K,
        "configs": [list(c) for c in args.configs],
        "s": s.tolist(),
        "theta": theta.tolist(),
        "losses": {k: v.tolist() for k, v in losses.items()},
        "grid_minima": minima,
        "steepness_s_gt_1_theta_lt_1p5": steep,
        "proposition_c1_checks": checks,
        "proposition_c1_max_discrepancy": worst,
        "proposition_c1_ok": bool(worst < TOLERANCE),
        "png": str(workdir / "figure2.png"),
    }
    harness.write_json(workdir / "figure2.json", result)
    print(f"wrote {workdir / 'figure2.png'} and {workdir / 'figure2.json'}")
    return 0 if worst < TOLERANCE else 1


if __name__ == "__main__":
    harness.run(main)
