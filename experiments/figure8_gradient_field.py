"""Figure 8: gradient vector fields over (s, theta) (Appendix C.2, eqs. 33-35).

Panels: the K -> infinity rescaled-MSE field (34) for several (alpha, M); the exact CE
gradient of (32) at finite K; the correct K -> infinity CE field (-cos(theta),
s sin(theta)); and eq. (35) as printed, labelled as such. Arrows point along descent
directions, length proportional to the gradient norm.

Checks recorded in the JSON (see docs/errata_appendix_c.md):

* eq. (34) against ``jax.grad`` and central differences of (33);
* the exact CE gradient against ``jax.grad`` of the CE loss built directly from a simplex
  ETF ``W`` and the feature ``h(s, theta)`` of eq. (28) (no polar formulas);
* convergence of the finite-K CE and MSE gradients to their K -> infinity limits;
* eq. (35) as printed against the true limit, and against the two-logit CE gradient
  (equal at s = 1 only).

    python -m experiments.figure8_gradient_field [--workdir DIR] [--K 10] [--tiny]

Writes ``WORKDIR/figure8.png`` and ``WORKDIR/figure8.json``.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from experiments import harness
from experiments.figure2_landscape import polar_grid, polar_grid_parser
from nc_jax import plotting, theory


def build_parser() -> argparse.ArgumentParser:
    p = polar_grid_parser("figure8", __doc__, K_help="classes for the finite-K CE panel (>= 3)",
                          configs="1,1;1,5;5,1", configs_help="(alpha,M) pairs for the MSE panels, ';'-separated",
                          points=17, points_help="arrows along {axis}")
    harness.add_seed_arg(p)
    p.add_argument("--tiny", action="store_true", help="tiny grid (for tests)")
    return p


def _direct_ce_loss(params, W, k, kp):
    """CE of ``W h`` with ``h`` from eq. (28), straight from the ETF (jnp)."""
    s, theta = params
    K = W.shape[0]
    r = jnp.sqrt(jnp.asarray(K * K - 2 * K, dtype=W.dtype))
    h = s * (jnp.sin(theta) / r + jnp.cos(theta)) * W[k] + s * (K - 1) * jnp.sin(theta) / r * W[kp]
    z = W @ h
    return jax.nn.logsumexp(z) - z[k]


def _mse_limit_loss(params, alpha, M):
    """Eq. (33) in jnp."""
    s, theta = params
    return 0.5 * alpha * (s * jnp.cos(theta) - M) ** 2 + 0.5 * s**2 * jnp.sin(theta) ** 2


def gradient_checks(s_pts, t_pts, configs, K_list, seed) -> dict:
    """All numerical checks; float64 inside a local x64 context."""
    out = {}
    with jax.enable_x64(True):
        pts = jnp.stack([jnp.asarray(s_pts), jnp.asarray(t_pts)], axis=1)
        # (34) vs jax.grad and central differences of (33)
        err_grad, err_fd = 0.0, 0.0
        h = 1e-6
        for alpha, M in configs:
            g = jax.vmap(jax.grad(lambda p: _mse_limit_loss(p, alpha, M)))(pts)
            g_s, g_t = theory.polar_mse_grad_limit(s_pts, t_pts, alpha, M)
            err_grad = max(err_grad, float(np.max(np.abs(np.asarray(g) - np.stack([g_s, g_t], 1)))))
            fd_s = (theory.polar_mse_loss_limit(s_pts + h, t_pts, alpha, M)
                    - theory.polar_mse_loss_limit(s_pts - h, t_pts, alpha, M)) / (2 * h)
            fd_t = (theory.polar_mse_loss_limit(s_pts, t_pts + h, alpha, M)
                    - theory.polar_mse_loss_limit(s_pts, t_pts - h, alpha, M)) / (2 * h)
            err_fd = max(err_fd, float(np.max(np.abs(np.stack([fd_s - g_s, fd_t - g_t])))))
        out["eq34_vs_jax_grad_of_eq33"] = err_grad
        out["eq34_vs_central_differences_of_eq33"] = err_fd
        # exact CE gradient vs jax.grad of the direct construction
        direct = {}
        for K in K_list:
            W = jnp.asarray(theory.simplex_etf_classifier(K, K, seed=seed))
            g = jax.vmap(jax.grad(lambda p, W=W: _direct_ce_loss(p, W, 0, 1)))(pts)
            g_s, g_t = theory.polar_ce_grad(s_pts, t_pts, K)
            direct[str(K)] = float(np.max(np.abs(np.asarray(g) - np.stack([g_s, g_t], 1))))
        out["ce_exact_grad_vs_jax_grad_direct"] = direct
    # convergence to the limits
    lim_s, lim_t = theory.polar_ce_grad_limit(s_pts, t_pts)
    conv_ce, conv_mse = {}, {}
    for K in (10, 100, 1000, 10**4, 10**6):
        g_s, g_t = theory.polar_ce_grad(s_pts, t_pts, K)
        conv_ce[str(K)] = float(np.max(np.hypot(g_s - lim_s, g_t - lim_t)))
        alpha, M = configs[-1]
        m_s, m_t = theory.polar_mse_grad(s_pts, t_pts, K, alpha, M)
        l_s, l_t = theory.polar_mse_grad_limit(s_pts, t_pts, alpha, M)
        conv_mse[str(K)] = float(np.max(np.hypot(m_s - l_s, m_t - l_t)))
    out["ce_grad_minus_true_limit_by_K"] = conv_ce
    out["mse_grad_minus_eq34_by_K"] = conv_mse
    p_s, p_t = theory.polar_ce_grad_paper_eq35(s_pts, t_pts)
    out["eq35_printed_minus_true_limit"] = float(np.max(np.hypot(p_s - lim_s, p_t - lim_t)))
    K_big = 10**6
    b_s, b_t = theory.polar_ce_grad(s_pts, t_pts, K_big)
    out["eq35_printed_minus_ce_grad_K1e6"] = float(np.max(np.hypot(p_s - b_s, p_t - b_t)))
    two_s, two_t = theory.polar_ce_grad_two_class(s_pts, t_pts)
    out["eq35_printed_minus_two_class_grad"] = float(np.max(np.hypot(p_s - two_s, p_t - two_t)))
    ones = np.ones_like(s_pts)
    p1_s, p1_t = theory.polar_ce_grad_paper_eq35(ones, t_pts)
    t1_s, t1_t = theory.polar_ce_grad_two_class(ones, t_pts)
    out["eq35_printed_minus_two_class_grad_at_s1"] = float(np.max(np.hypot(p1_s - t1_s,
                                                                            p1_t - t1_t)))
    return out


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.K < 3:
        raise SystemExit(f"--K must be >= 3; got {args.K}")
    if args.tiny:
        args.n_s, args.n_theta = 5, 6
    workdir = harness.make_workdir(args.workdir, "figure8")

    s_max, s, theta = polar_grid(args)

    rng = np.random.default_rng(args.seed)
    n_pts = 20 if args.tiny else 400
    s_pts = rng.uniform(0.05, s_max, n_pts)
    t_pts = rng.uniform(0.0, np.pi, n_pts)
    K_list = sorted({3, 10, args.K} if args.tiny else {3, 10, 100, args.K})
    checks = gradient_checks(s_pts, t_pts, args.configs, K_list, args.seed)
    print(f"eq. (34) vs jax.grad of (33): {checks['eq34_vs_jax_grad_of_eq33']:.2e}; "
          f"vs central differences: {checks['eq34_vs_central_differences_of_eq33']:.2e}")
    print(f"exact CE gradient vs jax.grad of CE(W h(s, theta)): "
          f"{max(checks['ce_exact_grad_vs_jax_grad_direct'].values()):.2e}")
    print("CE gradient minus true K->inf limit (-cos, s sin):",
          {k: f"{v:.1e}" for k, v in checks["ce_grad_minus_true_limit_by_K"].items()})
    print(f"eq. (35) as printed minus the true limit: {checks['eq35_printed_minus_true_limit']:.3f}"
          f"; minus two-logit CE gradient: {checks['eq35_printed_minus_two_class_grad']:.3f}"
          f" (at s=1: {checks['eq35_printed_minus_two_class_grad_at_s1']:.1e})")

    fig = plotting.plot_gradient_fields(s, theta,
                                        theory.figure8_panels(s, theta, K=args.K, mse_configs=args.configs))
    harness.save_png(fig, workdir / "figure8.png", dpi=args.dpi)
    S, T = np.meshgrid(s, theta, indexing="ij")
    fields = {f"mse_limit alpha={a:g} M={m:g}": theory.polar_mse_grad_limit(S, T, a, m)
              for a, m in args.configs}
    fields[f"ce K={args.K}"] = theory.polar_ce_grad(S, T, args.K)
    fields["ce_limit"] = theory.polar_ce_grad_limit(S, T)
    fields["ce_eq35_printed"] = theory.polar_ce_grad_paper_eq35(S, T)
    ok = (checks["eq34_vs_jax_grad_of_eq33"] < 1e-10
          and max(checks["ce_exact_grad_vs_jax_grad_direct"].values()) < 1e-10)
    result = {
        "K": args.K,
        "configs": [list(c) for c in args.configs],
        "s": s.tolist(),
        "theta": theta.tolist(),
        "gradients": {k: {"d_ds": np.asarray(g[0]).tolist(), "d_dtheta": np.asarray(g[1]).tolist()}
                      for k, g in fields.items()},
        "checks": checks,
        "checks_ok": bool(ok),
        "png": str(workdir / "figure8.png"),
    }
    harness.write_json(workdir / "figure8.json", result)
    print(f"wrote {workdir / 'figure8.png'} and {workdir / 'figure8.json'}")
    return 0 if ok else 1


if __name__ == "__main__":
    harness.run(main)
