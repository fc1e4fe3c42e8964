"""Benchmark nc_jax.hessian on the UFM (float64). Prints figures and ratios measured in
this run (medians of repeats).

  (a) HVP time / gradient time at K=100, n=100, d=512: jvp-of-grad, linearize-cached
      operator, and the analytic UFM HVP (``nc_jax.ufm.analytic_hvp``: eq. (24) plus the bias).
  (b) lambda_min to 1e-8 relative: nc_jax Lanczos vs scipy.sparse.linalg.eigsh(
      LinearOperator(hvp), k=1, which='SA'), wall time and HVPs, at a Lemma B.2 strict saddle,
      a random point and the global minimizer (easy spectra, K=20 n=50 d=64) and at a
      GD-converged minimum of K=4 n=5 d=6 (a hard spectrum: small clustered eigenvalues).
  (c) --scale: increasing UFM sizes toward K=1000, n=50, d=2048 (104M parameters); the
      largest whose lambda_min is certified (converged residual) within --budget-s,
      with the memory of the Krylov basis.
  (e) hessian_extremes / certify_saddle called without jax.jit: first call (compiles),
      second call on another point and other lambdas of the same shapes (must reuse the
      compiled program), and the call of a user-jitted wrapper; medians and ratios.
  (f) Lanczos from 3 starts at one point (K=10 n=100 d=64, random point): the starts
      vmapped against one after another (lax.map, as certify_saddle runs them), ms per HVP;
      certify_saddle itself alongside.

Usage: python -m experiments.benchmarks.bench_hessian [--scale] [--budget-s 120]
       python -m experiments.benchmarks.bench_hessian --only-calls | --only-eigsh | --only-starts
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from experiments import harness
from nc_jax import hessian as hs
from nc_jax import theory, ufm


def median_time(fn, repeats=5):
    return statistics.median(harness.timings(fn, repeats))


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
    def ana_chain(p, v, prob):
        op = ufm.analytic_hvp(p, prob)  # eq. (24): residual once, three fused products per HVP
        return jax.lax.fori_loop(0, chain, lambda _, u: scale(op(u)), v)

    ana_hvps = jax.jit(ana_chain)
    # Correctness of the analytic HVP against AD (printed).
    err = jax.jit(lambda p, v, prob: jnp.linalg.norm(
        ravel_pytree(ufm.analytic_hvp(p, prob)(v))[0] - ravel_pytree(hs.hvp(f, p, v, prob))[0])
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


def _gd_minimum(prob, steps=20000, lr=0.5):
    """A minimum reached by plain GD: eigenvalues clustered near zero (a hard spectrum)."""
    grad = jax.grad(ufm.objective)
    p0 = ufm.init_params(jax.random.key(7), prob, 0.1, dtype=jnp.float64)
    run = jax.jit(lambda p: jax.lax.fori_loop(0, steps, lambda _, q: jax.tree.map(
        lambda x, g: x - lr * g, q, grad(q, prob)), p))
    return run(p0)


def bench_b(K=20, n=50, d=64, rtol=1e-8, point="saddle"):
    import scipy.sparse.linalg as sla

    if point == "gd_minimum":
        K, n, d = 4, 5, 6
    prob = ufm.UFMProblem(K, n, d, lambda_W=jnp.asarray(5e-3), lambda_H=jnp.asarray(5e-3),
                          lambda_b=jnp.asarray(0.0), bias=False)
    exact = None  # reference from a tight nc_jax run unless known in closed form
    if point == "saddle":
        cp = theory.lemma_b2_critical_point(prob, K // 2, rotation_key=jax.random.key(2),
                                            class_rotation_key=jax.random.key(3), dtype=jnp.float64)
        params, exact = cp.params, float(cp.lambda_min)
    elif point == "minimum":  # the closed-form global minimizer
        params = theory.global_minimum(prob, dtype=jnp.float64).params
    elif point == "gd_minimum":
        params = _gd_minimum(prob)
    else:  # a generic point (random init)
        params = ufm.init_params(jax.random.key(2), prob, 0.3, dtype=jnp.float64)
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
    where = {"saddle": "a Lemma B.2 saddle (closed form)", "random": "a random point (tight reference)",
             "minimum": "the closed-form global minimizer (tight reference)",
             "gd_minimum": "a GD-converged minimum, clustered small eigenvalues (tight reference)"}[point]
    print(f"(b) lambda_min at {where}, UFM K={K} n={n} d={d} (dim={dim:,}), tol {rtol:g}; "
          f"reference {exact:.12e}")
    # error relative to max(|lambda_min|, 1e-3): at minimizers lambda_min is 0 (symmetries)
    scale = max(abs(exact), 1e-3)
    print(f"    scipy eigsh SA   {ts:7.3f} s  {n_sp:5d} HVPs  err/max(|ref|,1e-3) {abs(lam_sp - exact) / scale:.1e}")
    print(f"    nc_jax Lanczos   {to:7.3f} s  {int(r.num_matvecs):5d} HVPs  err/max(|ref|,1e-3) "
          f"{abs(float(r.lambda_min) - exact) / scale:.1e}  converged={bool(r.converged_min)}")
    print(f"    speed-up {ts / to:.1f}x, HVP ratio nc_jax/scipy {int(r.num_matvecs) / n_sp:.2f}")
    return {"point": point, "K": K, "n": n, "d": d, "scipy_seconds": ts, "scipy_hvps": n_sp,
            "nc_jax_seconds": to, "nc_jax_hvps": int(r.num_matvecs), "speedup": ts / to}


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


def bench_d(budget_s, num_matvecs=40, sizes=None):
    """(d) scale at critical points through the exact invariant-subspace split.

    At a collapsed point (every critical point with lambda_H > 0) the Hessian splits into
    a within-class block with known eigenvalues (W^T W / N + lambda_H) and a class-mean
    block of dimension 2Kd + K (ufm.collapsed_hessian): Lanczos on the latter certifies
    the smallest eigenvalue of the full Hessian, exactly, whatever n.
    """
    sizes = sizes or [(100, 50, 512), (300, 50, 1024), (1000, 50, 2048)]
    run = hs.lanczos_extremes(num_matvecs, which="both", restarts=100, rtol=1e-8)
    print(f"(d) scale at critical points (collapsed split): certify lambda_min of the FULL Hessian "
          f"(residual <= 1e-8 ||H|| on the class-mean block), basis of {num_matvecs + 1} vectors (float64)")
    best = None
    for K, n, d in sizes:
        # weight decay 1e-5 keeps lambda_W lambda_H far below 1/(NK) (with 5e-4 these
        # ImageNet-shaped problems are in the zero regime: W* = H* = 0)
        prob = ufm.UFMProblem(K, n, d, lambda_W=1e-5, lambda_H=1e-5, lambda_b=1e-5)
        full_dim = K * d + d * K * n + K
        for point in ("global minimum", "strict saddle"):
            t = time.perf_counter()
            if point == "global minimum":
                params = theory.global_minimum(prob).params
                expected = 0.0
            else:
                cp = theory.ufm_critical_point(prob, K // 2)
                params, expected = cp.params, float(cp.lambda_min)
            ch = ufm.collapsed_hessian(params, prob)
            x0, unravel = ravel_pytree(ufm.UFMParams(params.W, jnp.zeros((d, K)), params.b))
            del params

            @jax.jit
            def go(x0, key):
                mv = lambda x: ravel_pytree(ch.matvec(unravel(x)))[0]
                k0, k1 = jax.random.split(key)
                return run(mv, jax.random.normal(k0, x0.shape, x0.dtype), key=k1)

            r = jax.block_until_ready(go(x0, jax.random.key(2)))
            el = time.perf_counter() - t
            within_min = float(ch.within_eigenvalues[0])
            lam = min(float(r.lambda_min), within_min)
            ok = bool(r.converged_min) and el <= budget_s
            print(f"    K={K} n={n} d={d} ({full_dim:,} parameters; block {x0.size:,}) at the {point}: "
                  f"lambda_min={lam:.6e} (block {float(r.lambda_min):.3e} res {float(r.residual_min):.1e}, "
                  f"within {within_min:.3e}; bound/closed form {expected:.6e}), lambda_max={float(r.lambda_max):.4e}, "
                  f"{int(r.num_matvecs)} HVPs, {el:.1f} s incl. setup and compile, certified={ok}")
            if ok:
                best = (K, n, d, full_dim)
    print(f"    largest certified within budget: {best}")


def bench_e(K=4, n=5, d=6, repeats=3):
    """(e) un-jitted calls: compiled once per objective object, not once per call."""
    prob = ufm.UFMProblem(K, n, d, lambda_W=jnp.asarray(1e-2), lambda_H=jnp.asarray(1e-2),
                          lambda_b=jnp.asarray(1e-2))
    points = [ufm.init_params(jax.random.key(i), prob, 0.3, dtype=jnp.float64) for i in range(2 * repeats)]
    probs = [prob.replace(lambda_W=jnp.asarray(1e-2 * (1 + i))) for i in range(2 * repeats)]
    key = jax.random.key(9)
    print(f"(e) calls without jax.jit, UFM K={K} n={n} d={d}, median of {repeats} "
          "(first call: a fresh objective object each repeat, so it compiles)")
    for name, entry in (("hessian_extremes", hs.hessian_extremes), ("certify_saddle", hs.certify_saddle)):
        first, second = [], []
        for r in range(repeats):
            def objective(params, problem):  # a new object: a new cache key, a true first call
                return ufm.objective(params, problem)

            t = time.perf_counter()
            jax.block_until_ready(entry(objective, points[2 * r], probs[2 * r], key=key))
            first.append(time.perf_counter() - t)
            t = time.perf_counter()
            jax.block_until_ready(entry(objective, points[2 * r + 1], probs[2 * r + 1], key=key))
            second.append(time.perf_counter() - t)
        jitted = jax.jit(lambda p, pr, k, entry=entry: entry(ufm.objective, p, pr, key=k))
        jax.block_until_ready(jitted(points[0], probs[0], key))  # compile
        tj = []
        for r in range(repeats):
            t = time.perf_counter()
            jax.block_until_ready(jitted(points[r + 1], probs[r + 1], key))
            tj.append(time.perf_counter() - t)
        t1, t2, t3 = (statistics.median(x) for x in (first, second, tj))
        print(f"    {name:17s} first {t1:7.3f} s   second {t2:7.3f} s   jitted {t3:7.3f} s   "
              f"second/jitted {t2 / t3:5.2f}   first/second {t1 / t2:6.1f}")


def bench_f(K=10, n=100, d=64, num_starts=3, repeats=5):
    """(f) several Lanczos starts at one point: vmapped vs one after another."""
    prob = ufm.UFMProblem(K, n, d, lambda_W=jnp.asarray(5e-4), lambda_H=jnp.asarray(5e-4),
                          lambda_b=jnp.asarray(5e-4))
    params = ufm.init_params(jax.random.key(2), prob, 0.3, dtype=jnp.float64)
    key = jax.random.key(5)
    run = hs.lanczos_extremes(40, which="smallest", restarts=20)

    def starts(p, prob, key, *, batched):
        op = hs.flat_hvp_operator(ufm.objective, p, prob)
        v0s = jax.random.normal(key, (num_starts, op.dim), jnp.float64)
        one = lambda v: run(op.matvec, v)
        res = jax.vmap(one)(v0s) if batched else jax.lax.map(one, v0s)
        return res.lambda_min, jnp.sum(res.num_matvecs)

    variants = {"vmapped starts": jax.jit(lambda p, pr, k: starts(p, pr, k, batched=True)),
                "starts one after another": jax.jit(lambda p, pr, k: starts(p, pr, k, batched=False))}
    dim = K * d + d * K * n + K
    print(f"(f) Lanczos (m=40) from {num_starts} starts at a random point, UFM K={K} n={n} d={d} (dim={dim:,}), "
          f"median of {repeats}")
    per_hvp = {}
    for name, fn in variants.items():
        lam, count = jax.block_until_ready(fn(params, prob, key))
        t = statistics.median(harness.timings(lambda: jax.block_until_ready(fn(params, prob, key)), repeats))
        per_hvp[name] = t / int(count)
        print(f"    {name:26s} {t:7.3f} s  {int(count):4d} HVPs  {1e3 * per_hvp[name]:6.2f} ms/HVP  "
              f"lambda_min {float(jnp.min(lam)):.10e}")
    cert = lambda: jax.block_until_ready(hs.certify_saddle(ufm.objective, params, prob, key=key))
    c = cert()
    t = statistics.median(harness.timings(cert, repeats))
    print(f"    {'certify_saddle':26s} {t:7.3f} s  {int(c.num_hvps):4d} HVPs  {1e3 * t / int(c.num_hvps):6.2f} ms/HVP")
    print(f"    vmapped / one after another, per HVP: "
          f"{per_hvp['vmapped starts'] / per_hvp['starts one after another']:.2f}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", action="store_true", help="run (c) the scale sweep")
    ap.add_argument("--budget-s", type=float, default=120.0)
    ap.add_argument("--skip-a", action="store_true")
    ap.add_argument("--only-calls", action="store_true", help="run only (e), the un-jitted call timings")
    ap.add_argument("--only-eigsh", action="store_true",
                    help="run only (b): lambda_min vs scipy eigsh at a saddle, a random point, the global "
                         "minimizer (K=20 n=50 d=64) and a GD-converged minimum (K=4 n=5 d=6)")
    ap.add_argument("--only-starts", action="store_true", help="run only (f), Lanczos starts vmapped or not")
    ap.add_argument("--scale-critical", action="store_true",
                    help="run (d): certify lambda_min at critical points up to K=1000, d=2048, n=50")
    a = ap.parse_args()
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, float64")
    if a.only_starts:
        return bench_f()
    if not a.only_eigsh:
        bench_e()
    if a.only_calls:
        return
    if not (a.skip_a or a.only_eigsh):
        bench_a()
    for point in ("saddle", "random", "minimum", "gd_minimum"):
        bench_b(point=point)
    if a.only_eigsh:
        return
    bench_f()
    if a.scale:
        bench_c(a.budget_s)
    if a.scale_critical:
        bench_d(max(a.budget_s, 900.0))


if __name__ == "__main__":
    harness.run(main, x64=True)
