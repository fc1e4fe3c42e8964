"""Benchmark nc_jax.hessian on the UFM (float64). Prints figures and ratios measured in
this run (medians of repeats).

  (a) HVP time / gradient time at K=100, n=100, d=512: jvp-of-grad, linearize-cached
      operator, and an analytic UFM HVP (eq. (24) plus the bias terms).
  (b) lambda_min to 1e-8 relative at a Lemma B.2 strict saddle: nc_jax Lanczos vs
      scipy.sparse.linalg.eigsh(LinearOperator(hvp), k=1, which='SA'): wall time, HVPs.
  (c) --scale: increasing UFM sizes toward K=1000, n=50, d=2048 (104M parameters); the
      largest whose lambda_min is certified (converged residual) within --budget-s,
      with the memory of the Krylov basis.

Usage: python experiments/benchmarks/bench_hessian.py [--scale] [--budget-s 120]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402

from nc_jax import hessian as hs  # noqa: E402
from nc_jax import theory, ufm  # noqa: E402


def median_time(fn, repeats=5):
    fn()  # compile / warm up
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def analytic_hvp(params, v, problem):
    """UFM HVP from eq. (24) with bias: R = (W H + b 1^T - Y)/N, dZ = dW H + W dH + db 1^T."""
    W, H, b = params
    dW, dH, db = v
    N = problem.num_samples
    Y = ufm.one_hot_targets(problem, W.dtype)
    R = (W @ H + b[:, None] - Y) / N
    dZ = (dW @ H + W @ dH + db[:, None]) / N
    HW = dZ @ H.T + R @ dH.T + problem.lambda_W * dW
    HH = W.T @ dZ + dW.T @ R + problem.lambda_H * dH
    Hb = jnp.sum(dZ, axis=1) + problem.lambda_b * db
    return ufm.UFMParams(HW, HH, Hb)


def bench_a(K=100, n=100, d=512, chain=10):
    prob = ufm.UFMProblem(K, n, d, lambda_W=jnp.asarray(5e-4), lambda_H=jnp.asarray(5e-4),
                          lambda_b=jnp.asarray(5e-4))
    p = ufm.init_params(jax.random.key(0), prob, 0.1, dtype=jnp.float64)
    v = ufm.init_params(jax.random.key(1), prob, 1.0, dtype=jnp.float64)
    f = ufm.objective
    g = jax.grad(f)
    scale = lambda t: jax.tree.map(lambda a: a / jnp.sqrt(jnp.sum(a * a) + 1.0), t)

    # Chains of dependent evaluations inside one jit (as in a Lanczos loop).
    grads = jax.jit(lambda p, prob: jax.lax.fori_loop(
        0, chain, lambda _, q: jax.tree.map(lambda a, b: a - 1e-3 * b, q, g(q, prob)), p))
    jvp_hvps = jax.jit(lambda p, v, prob: jax.lax.fori_loop(
        0, chain, lambda _, u: scale(hs.hvp(f, p, u, prob)), v))

    def lin_chain(p, v, prob):
        op = hs.hvp_operator(f, p, prob)
        return jax.lax.fori_loop(0, chain, lambda _, u: scale(op(u)), v)

    lin_hvps = jax.jit(lin_chain)
    ana_hvps = jax.jit(lambda p, v, prob: jax.lax.fori_loop(
        0, chain, lambda _, u: scale(analytic_hvp(p, u, prob)), v))
    # Correctness of the analytic HVP against AD (printed).
    err = jax.jit(lambda p, v, prob: jnp.linalg.norm(
        ravel_pytree(analytic_hvp(p, v, prob))[0] - ravel_pytree(hs.hvp(f, p, v, prob))[0])
        / jnp.linalg.norm(ravel_pytree(hs.hvp(f, p, v, prob))[0]))(p, v, prob)
    block = lambda t: jax.block_until_ready(t)
    tg = median_time(lambda: block(grads(p, prob)))
    tj = median_time(lambda: block(jvp_hvps(p, v, prob)))
    tl = median_time(lambda: block(lin_hvps(p, v, prob)))
    ta = median_time(lambda: block(ana_hvps(p, v, prob)))
    dim = K * d + d * K * n + K
    print(f"(a) UFM K={K} n={n} d={d} (dim={dim:,}), chains of {chain} evaluations, median of 5")
    print(f"    gradient               {1e3 * tg / chain:8.2f} ms")
    print(f"    HVP jvp-of-grad        {1e3 * tj / chain:8.2f} ms   ratio {tj / tg:.2f}")
    print(f"    HVP linearize-cached   {1e3 * tl / chain:8.2f} ms   ratio {tl / tg:.2f}  (includes one linearize)")
    print(f"    HVP analytic eq.(24)   {1e3 * ta / chain:8.2f} ms   ratio {ta / tg:.2f}  (rel. diff to AD {float(err):.1e})")


def bench_b(K=20, n=50, d=64, rtol=1e-8, point="saddle"):
    import scipy.sparse.linalg as sla

    prob = ufm.UFMProblem(K, n, d, lambda_W=jnp.asarray(5e-3), lambda_H=jnp.asarray(5e-3),
                          lambda_b=jnp.asarray(0.0), bias=False)
    if point == "saddle":
        cp = theory.lemma_b2_critical_point(prob, K // 2, rotation_key=jax.random.key(2),
                                            class_rotation_key=jax.random.key(3), dtype=jnp.float64)
        params, exact = cp.params, float(cp.lambda_min)
    else:  # a generic point (random init): reference from a tight nc_jax run
        params = ufm.init_params(jax.random.key(2), prob, 0.3, dtype=jnp.float64)
        exact = None
    flat, unravel = ravel_pytree(params)
    dim = flat.shape[0]
    f = ufm.objective

    @jax.jit
    def flat_hvp(x, v, prob):
        return ravel_pytree(hs.hvp(f, unravel(x), unravel(v), prob))[0]

    counter = [0]

    def mv(v):
        counter[0] += 1
        return np.asarray(flat_hvp(flat, jnp.asarray(v.ravel()), prob))

    op = sla.LinearOperator((dim, dim), matvec=mv, dtype=np.float64)
    v0 = np.asarray(jax.random.normal(jax.random.key(4), (dim,), jnp.float64))
    mv(v0)  # compile
    t_sp, evs = [], None
    for _ in range(3):
        counter[0] = 0
        t = time.perf_counter()
        evs = sla.eigsh(op, k=1, which="SA", tol=rtol, v0=v0, maxiter=5000)[0]
        t_sp.append(time.perf_counter() - t)
    n_sp = counter[0]
    lam_sp = float(evs[0])

    run = hs.lanczos_extremes(30, which="smallest", restarts=100, rtol=rtol, check_every=5)

    @jax.jit
    def ours(x, v0, prob, key):
        op = hs.flat_hvp_operator(f, unravel(x), prob)
        return run(op.matvec, v0, key=key)

    key = jax.random.key(5)
    if exact is None:
        tight = hs.lanczos_extremes(60, which="smallest", restarts=200, rtol=1e-13)
        op = hs.flat_hvp_operator(f, params, prob)
        exact = float(jax.jit(lambda v: tight(op.matvec, v, key=key).lambda_min)(jnp.asarray(v0)))
    r = jax.block_until_ready(ours(flat, jnp.asarray(v0), prob, key))
    t_ours = []
    for _ in range(3):
        t = time.perf_counter()
        r = jax.block_until_ready(ours(flat, jnp.asarray(v0), prob, key))
        t_ours.append(time.perf_counter() - t)
    ts, to = statistics.median(t_sp), statistics.median(t_ours)
    where = "a Lemma B.2 saddle (closed form)" if point == "saddle" else "a random point (tight reference)"
    print(f"(b) lambda_min at {where}, UFM K={K} n={n} d={d} (dim={dim:,}), tol {rtol:g}; "
          f"reference {exact:.12e}")
    print(f"    scipy eigsh SA   {ts:7.3f} s  {n_sp:5d} HVPs  rel.err {abs(lam_sp - exact) / abs(exact):.1e}")
    print(f"    nc_jax Lanczos   {to:7.3f} s  {int(r.num_matvecs):5d} HVPs  rel.err "
          f"{abs(float(r.lambda_min) - exact) / abs(exact):.1e}  converged={bool(r.converged_min)}")
    print(f"    speed-up {ts / to:.1f}x, HVP ratio nc_jax/scipy {int(r.num_matvecs) / n_sp:.2f}")


def bench_c(budget_s, num_matvecs=20):
    sizes = [(100, 100, 512), (200, 50, 1024), (500, 50, 2048), (1000, 50, 2048)]
    try:
        avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        avail = None
    run = hs.lanczos_extremes(num_matvecs, which="smallest", restarts=200, rtol=1e-8, check_every=2)
    f = ufm.objective

    @jax.jit
    def go(p, prob, key):
        op = hs.flat_hvp_operator(f, p, prob)
        k0, k1 = jax.random.split(key)
        return run(op.matvec, jax.random.normal(k0, (op.dim,), op.dtype), key=k1)

    best = None
    print(f"(c) scale: certify lambda_min (residual <= 1e-8 ||H||) within {budget_s:.0f} s, "
          f"basis of {num_matvecs + 1} vectors (float64)")
    for K, n, d in sizes:
        dim = K * d + d * K * n + K
        mem = (num_matvecs + 1) * dim * 8
        if avail is not None and 3 * mem > avail:
            print(f"    K={K} n={n} d={d}: dim={dim:,} basis {mem / 2**30:.1f} GiB: skipped "
                  f"(needs ~3x that, {avail / 2**30:.1f} GiB available)")
            continue
        prob = ufm.UFMProblem(K, n, d, lambda_W=jnp.asarray(5e-4), lambda_H=jnp.asarray(5e-4),
                              lambda_b=jnp.asarray(5e-4))
        p = ufm.init_params(jax.random.key(0), prob, 0.1, dtype=jnp.float64)
        t = time.perf_counter()
        r = jax.block_until_ready(go(p, prob, jax.random.key(1)))
        el = time.perf_counter() - t
        ok = bool(r.converged_min) and el <= budget_s
        print(f"    K={K} n={n} d={d}: dim={dim:,} basis {mem / 2**30:.2f} GiB, {el:.1f} s (incl. compile), "
              f"{int(r.num_matvecs)} HVPs, lambda_min={float(r.lambda_min):.6e}, certified={ok}")
        if ok:
            best = (K, n, d, dim)
        if el > budget_s:
            break
    print(f"    largest certified within budget: {best}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", action="store_true", help="run (c) the scale sweep")
    ap.add_argument("--budget-s", type=float, default=120.0)
    ap.add_argument("--skip-a", action="store_true")
    a = ap.parse_args()
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, float64")
    if not a.skip_a:
        bench_a()
    bench_b(point="saddle")
    bench_b(point="random")
    if a.scale:
        bench_c(a.budget_s)


if __name__ == "__main__":
    main()
