"""Benchmark multistart descent (float64). Prints figures and ratios measured in this run
and writes them to ``WORKDIR/bench_multistart.json`` (or ``--out``).

Part 1, the generic engine on a user objective (``--only-generic``): the UFM written as a
plain function of a dict of arrays (no Model hooks, no gram trick), explored through
``landscape.descend`` (the explorer's descent phase: checks every ``check_every`` steps,
chunking from :func:`nc_jax.landscape.default_batch_size`), against the best of naive
``jit(vmap)``, a Python loop of per-init ``jit(fori_loop)`` and ``lax.map`` chunks of the
same GD (each drawing its inits from the same keys inside the timed call, as the library
does), at K=4 n=10 d=8, K=10 n=100 d=64, K=100 n=20 d=256 (``--quick``: the first). On a
multi-core CPU the library calls parts of the runs concurrently, one thread per core
(``nc_jax/landscape/_dispatch.py``); the same per-init calls from such threads are timed
too, as a reference for the library's overhead (not counted among the baselines).
The library also measures the gradient at each endpoint (its status: N steps take N + 1
gradients), which bare GD skips; each baseline is timed both bare and doing that same work
(`` + endpoint gradient``), and the library's ratio is printed against the best of each.
Times are the minimum of ``--repeats`` calls after a warm-up (noisy shared machines: the
minimum is the least disturbed); every variant is checked to compute the same iterates.
Then ``explore`` of that user model with 16 inits at K=4 n=10 d=8 and K=10 n=100 d=64, first
and second call, with the seconds of each phase.

Part 2, the built-in UFM engines (below).

Default sizes: K=10, n=100, d=64 (N=1000), 256 inits x 2000 steps of plain GD, lr 0.5.
Effective GFLOP/s count the nominal full-gradient cost 6 K d N flops per init-step,
against this machine's float64 GEMM rate (jitted 1024x1024 @ 1024x1024, median):

  (i)   naive ``jax.jit(jax.vmap(run))`` of a full-parameter GD scan over all inits;
  (ii)  a Python loop over inits of one jitted per-init scan (compiled once);
  (iii) the library's full engine (``multistart_descent(engine="full")``), lax.map
        chunks of batch_size 1, 4, 16;
  (iv)  the library's gram engine (``engine="gram"``, sufficient statistics).

Compile time is excluded: every compiled function is warmed up by a short run (the step
count is a traced argument everywhere, so the warm-up compiles the timed program). The
full-parameter variants are timed on fewer steps (``--baseline-steps``) and scaled per
init-step (their cost per step is constant); the gram engine runs the full 2000 steps.
All engines are checked to compute the same iterates (max |W_a - W_b| after the same
steps from the same inits). End to end: ``explore`` with 256 inits, refined to gradient
norm 1e-10 and classified with certificates, called twice (compile + run, then run).

Usage: python -m experiments.benchmarks.bench_multistart [--quick] [--workdir DIR | --out FILE]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from experiments import harness
from experiments.harness import class_counts, load_info, write_json
from nc_jax import landscape, solvers, ufm
from nc_jax.landscape import _dispatch
from nc_jax.ufm import UFMProblem


def median_time(fn, repeats):
    ts = harness.timings(fn, repeats, warmup=0)
    return statistics.median(ts), ts


def gemm_rate(size=1024, repeats=10):
    """float64 GEMM GFLOP/s: jitted size x size matmul, median of repeats."""
    a = jax.random.normal(jax.random.key(1), (size, size), jnp.float64)
    b = jax.random.normal(jax.random.key(2), (size, size), jnp.float64)
    dot = jax.jit(jnp.dot)
    jax.block_until_ready(dot(a, b))
    t, _ = median_time(lambda: dot(a, b), repeats)
    return 2 * size**3 / t / 1e9, t


# ----------------------------------------------------------------------------- part 1


def user_objective(params, problem):
    """The UFM objective as a user would write it: a function of a dict of arrays."""
    return ufm.objective(ufm.UFMParams(params["W"], params["H"], params["b"]), problem)


def user_init(key, scale, problem):
    p = ufm.init_params(key, problem, scale)
    return {"W": p.W, "H": p.H, "b": p.b}


USER_MODEL = landscape.Model(user_objective, user_init, name="UFM as a plain function")
SAME_WORK = " + endpoint gradient"  # suffix of the baselines that also measure the endpoint's gradient
GRID = ((4, 10, 8, 64, 400), (10, 100, 64, 16, 48), (100, 20, 256, 4, 24))  # K, n, d, inits, steps


def min_time(fn, repeats):
    ts = harness.timings(fn, repeats)
    return min(ts), statistics.median(ts)


def generic_size(K, n, d, num_inits, num_steps, rate, repeats, lr=0.1):
    """Every variant at one size: seconds (min, median), x GEMM, and agreement of iterates."""
    problem = UFMProblem(K, n, d, lambda_W=5e-4, lambda_H=5e-4, lambda_b=5e-4)
    key = jax.random.key(0)
    k_descent, _ = jax.random.split(key)  # as landscape.descend splits it
    scales = (0.1, 1.0)
    per_init = jnp.asarray(np.resize(scales, num_inits), jnp.float64)
    keys = jax.random.split(k_descent, num_inits)
    inits = jax.vmap(user_init, in_axes=(0, 0, None))(keys, per_init, problem)
    grad = jax.grad(user_objective)

    def gd(key_scale, steps):  # every variant draws its init and runs the same GD iterates
        q = user_init(key_scale[0], key_scale[1], problem)
        return jax.lax.fori_loop(0, steps, lambda _, q: jax.tree.map(lambda x, g: x - lr * g, q, grad(q, problem)), q)

    def gd_checked(key_scale, steps):  # the same, and the endpoint's gradient norm (the library's work)
        q = gd(key_scale, steps)
        return {**q, "grad_norm": jnp.sqrt(solvers.tree_sq_norm(grad(q, problem)))}

    both = (keys, per_init)
    per = [(keys[i], per_init[i]) for i in range(num_inits)]
    variants, per_init_programs = {}, {}
    for suffix, run in (("", gd), (SAME_WORK, gd_checked)):
        variants["naive jit(vmap)" + suffix] = functools.partial(jax.jit(jax.vmap(run, in_axes=(0, None))), both,
                                                                 num_steps)
        one = per_init_programs[suffix] = jax.jit(run)
        variants["python loop of jit(fori)" + suffix] = (
            lambda one=one: jax.tree.map(lambda *xs: jnp.stack(xs), *[one(p, num_steps) for p in per]))
        for bs in (1, 4, 16, 64):
            if bs <= num_inits:
                chunked = jax.jit(lambda ps, s, bs=bs, run=run: jax.lax.map(lambda p: run(p, s), ps, batch_size=bs))
                variants[f"lax.map chunks of {bs}" + suffix] = functools.partial(chunked, both, num_steps)
    workers = _dispatch.host_workers()
    pool = concurrent.futures.ThreadPoolExecutor(workers)
    # not one of the baselines: the same per-init calls from one thread per core, the
    # idea the library's dispatch builds on (reference for its overhead)
    threaded = f"threads ({workers}): jit(fori) per init"
    one = per_init_programs[""]
    variants[threaded] = lambda: jax.tree.map(
        lambda *xs: jnp.stack(xs), *pool.map(lambda p: jax.block_until_ready(one(p, num_steps)), per))
    variants["library descend"] = lambda: landscape.descend(
        USER_MODEL, problem, key=key, num_inits=num_inits, scales=scales, num_steps=num_steps, learning_rate=lr,
        grad_tol=1e-300).params  # never met: every variant takes all steps
    flops = 6 * K * d * K * n * num_inits * num_steps
    rows, finals = {}, {}
    for name, fn in variants.items():
        t_min, t_med = min_time(fn, repeats)
        finals[name] = fn()
        rows[name] = {"seconds_min": t_min, "seconds_median": t_med, "fraction_of_gemm": flops / t_min / 1e9 / rate}
    ref = finals["naive jit(vmap)"]["W"]
    for name in rows:
        rows[name]["max_abs_W_diff_vs_naive"] = float(jnp.max(jnp.abs(finals[name]["W"] - ref)))
    baselines = [k for k in rows if k not in ("library descend", threaded)]
    best = min((k for k in baselines if not k.endswith(SAME_WORK)), key=lambda k: rows[k]["seconds_min"])
    best_same = min((k for k in baselines if k.endswith(SAME_WORK)), key=lambda k: rows[k]["seconds_min"])
    lib = rows["library descend"]
    summary = {"best_baseline": best, "library_speedup_vs_best": rows[best]["seconds_min"] / lib["seconds_min"],
               "best_baseline_same_work": best_same,
               "library_speedup_vs_best_same_work": rows[best_same]["seconds_min"] / lib["seconds_min"],
               "library_speedup_vs_threaded_loop": rows[threaded]["seconds_min"] / lib["seconds_min"],
               "library_fraction_of_gemm": lib["fraction_of_gemm"],
               "library_batch_size": landscape.default_batch_size(num_inits, sum(
                   int(np.prod(x.shape[1:])) for x in jax.tree.leaves(inits)))}
    print(f"K={K} n={n} d={d}: {num_inits} inits x {num_steps} steps")
    for name, r in rows.items():
        print(f"  {name:44s} {r['seconds_min'] * 1e3:9.1f} ms (median {r['seconds_median'] * 1e3:9.1f})"
              f" {r['fraction_of_gemm']:6.3f} x GEMM  |dW| {r['max_abs_W_diff_vs_naive']:.1e}", flush=True)
    print(f"  library / best baseline ({best}): {summary['library_speedup_vs_best']:.2f}x faster; "
          f"{lib['fraction_of_gemm']:.3f} x GEMM; chunk {summary['library_batch_size']}; "
          f"/ threaded loop {summary['library_speedup_vs_threaded_loop']:.2f}x", flush=True)
    print(f"  library / best baseline doing the same work ({best_same}): "
          f"{summary['library_speedup_vs_best_same_work']:.2f}x faster", flush=True)
    pool.shutdown()
    return {"sizes": {"K": K, "n": n, "d": d, "num_inits": num_inits, "num_steps": num_steps, "learning_rate": lr},
            "variants": rows, "summary": summary}


def generic_explore_calls(num_inits=16, sizes=((4, 10, 8),)):
    """First (compile + run) and second call of explore on the user model, with each phase's
    seconds (descent, refinement, certificates, measurements)."""
    out = []
    for K, n, d in sizes:
        problem = UFMProblem(K, n, d, lambda_W=5e-4, lambda_H=5e-4, lambda_b=5e-4)
        calls = []
        for i in range(2):
            t0 = time.perf_counter()
            res = landscape.explore(USER_MODEL, problem, key=jax.random.key(i), num_inits=num_inits,
                                    num_steps=2000, learning_rate=0.5)
            calls.append({"wall_seconds": time.perf_counter() - t0, "seconds": res.seconds,
                          "counts": dict(landscape.summarize(res).counts)})
            phases = ", ".join(f"{k} {v:.2f}" for k, v in res.seconds.items())
            print(f"explore (user model, K={K} n={n} d={d}, {num_inits} inits), call {i + 1}: "
                  f"{calls[-1]['wall_seconds']:.1f} s ({phases}); "
                  f"{ {k: v for k, v in calls[-1]['counts'].items() if v} }", flush=True)
        out.append({"sizes": {"K": K, "n": n, "d": d}, "num_inits": num_inits, "calls": calls,
                    "second_over_first": calls[1]["wall_seconds"] / calls[0]["wall_seconds"]})
    return out


# ----------------------------------------------------------------------------- part 2


def full_gd(problem, params, num_steps, learning_rate):
    """Plain GD on the full parameters for ``num_steps`` (traced) steps: the baseline run."""
    grad = jax.grad(ufm.objective)

    def body(_, p):
        g = grad(p, problem)
        return jax.tree.map(lambda x, y: x - learning_rate * y, p, g)

    return jax.lax.fori_loop(0, num_steps, body, params)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    harness.add_quick_arg(parser, help="small sizes, < 1 min")
    harness.add_workdir_arg(parser, "bench_multistart",
                            help="folder for bench_multistart.json (default: ./runs/bench_multistart-<timestamp>)")
    parser.add_argument("--out", default=None, help="JSON file instead of WORKDIR/bench_multistart.json")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline-steps", type=int, default=None,
                        help="steps timed for the full-parameter variants (default 40; quick 20)")
    parser.add_argument("--skip-explore", action="store_true")
    parser.add_argument("--only-generic", action="store_true", help="part 1 only")
    args = parser.parse_args(argv)
    harness.require_x64()
    out = {"load_start": load_info()}
    rate, t_gemm = gemm_rate()
    out["gemm_gflops"] = rate
    print(f"float64 GEMM 1024^3: {t_gemm * 1e3:.1f} ms -> {rate:.1f} GFLOP/s (median of 10); "
          f"load {out['load_start']['loadavg']} on {out['load_start']['cpu_count']} cores", flush=True)
    out["generic"] = [generic_size(*size, rate, args.repeats) for size in (GRID[:1] if args.quick else GRID)]
    if not args.skip_explore:
        out["generic_explore"] = generic_explore_calls(sizes=((4, 10, 8),) if args.quick else ((4, 10, 8), (10, 100, 64)))
    if args.only_generic:
        _write(args, out)
        return out

    if args.quick:
        K, n, d, num_inits, num_steps, explore_inits = 4, 10, 8, 16, 2000, 16
    else:
        K, n, d, num_inits, num_steps, explore_inits = 10, 100, 64, 256, 2000, 256
    base_steps = args.baseline_steps or (20 if args.quick else 40)
    lr = 0.5
    N = K * n
    flops_per_init_step = 6 * K * d * N
    problem = UFMProblem(K, n, d, lambda_W=5e-4, lambda_H=5e-4, lambda_b=5e-4)
    scales = landscape.default_scales(problem)
    key = jax.random.key(0)
    out.update({"sizes": {"K": K, "n": n, "d": d, "N": N, "num_inits": num_inits, "num_steps": num_steps,
                          "baseline_steps": base_steps, "learning_rate": lr, "scales": list(scales)},
                "flops_per_init_step": flops_per_init_step, "repeats": args.repeats})
    print(f"UFM engines: K={K} n={n} d={d} N={N}, {num_inits} inits x {num_steps} steps, float64", flush=True)

    inits = landscape.init_batch(key, problem, scales, num_inits)
    lr_arr = jnp.asarray(lr, jnp.float64)
    variants = {}

    def record(name, seconds, inits_run, steps_run, note=""):
        per = seconds / (inits_run * steps_run)
        eff = flops_per_init_step / per / 1e9
        variants[name] = {"seconds": seconds, "inits": inits_run, "steps": steps_run,
                          "us_per_init_step": per * 1e6, "effective_gflops": eff,
                          "fraction_of_gemm": eff / rate,
                          "projected_seconds_full": per * num_inits * num_steps, "note": note}
        print(f"  {name:28s} {per * 1e6:10.2f} us/init-step  {eff:8.2f} GFLOP/s eff  "
              f"{eff / rate:7.3f} x GEMM  (projected {num_inits}x{num_steps}: "
              f"{per * num_inits * num_steps:8.1f} s) {note}", flush=True)

    # (i) naive jit(vmap) over all inits
    naive = jax.jit(jax.vmap(full_gd, in_axes=(None, 0, None, None)))
    jax.block_until_ready(naive(problem, inits, 1, lr_arr))
    t, _ = median_time(lambda: naive(problem, inits, base_steps, lr_arr), args.repeats)
    record("naive jit(vmap)", t, num_inits, base_steps, f"timed on {base_steps} steps")
    W_naive = naive(problem, inits, base_steps, lr_arr).W

    # (ii) Python loop of per-init jitted scans (one compiled function)
    one = jax.jit(full_gd)
    per_init = [jax.tree.map(lambda x, i=i: x[i], inits) for i in range(num_inits)]
    jax.block_until_ready(one(problem, per_init[0], 1, lr_arr))

    def loop():
        return [one(problem, p, base_steps, lr_arr) for p in per_init]

    t, _ = median_time(loop, args.repeats)
    record("python loop of jit(scan)", t, num_inits, base_steps, f"timed on {base_steps} steps")
    W_loop = jnp.stack([r.W for r in loop()])

    # (iii) library full engine, lax.map chunks
    common = dict(key=key, num_inits=num_inits, scales=scales, learning_rate=lr, grad_tol=0.0)
    W_lib = {}
    for bs in (1, 4, 16):
        run = functools.partial(landscape.multistart_descent, problem, engine="full", batch_size=bs, **common)
        jax.block_until_ready(run(num_steps=1))
        t, _ = median_time(lambda run=run: run(num_steps=base_steps), args.repeats)
        record(f"library full, batch {bs}", t, num_inits, base_steps, f"timed on {base_steps} steps")
        W_lib[bs] = run(num_steps=base_steps).W

    # (iv) library gram engine (default chunking), full step budget
    gram = functools.partial(landscape.multistart_descent, problem, engine="gram", **common)
    jax.block_until_ready(gram(num_steps=1))
    t, _ = median_time(lambda: gram(num_steps=num_steps), args.repeats)
    record("library gram", t, num_inits, num_steps, f"all {num_steps} steps")
    gram_bs = {}
    sweep_steps = min(num_steps, 200)
    for bs in sorted({1, 4, 16, num_inits}):
        run = functools.partial(landscape.multistart_descent, problem, engine="gram", batch_size=bs, **common)
        jax.block_until_ready(run(num_steps=1))
        tb, _ = median_time(lambda run=run: run(num_steps=sweep_steps), 1)
        gram_bs[bs] = tb / (num_inits * sweep_steps) * 1e6
    out["gram_us_per_init_step_by_batch_size"] = gram_bs
    print(f"  gram engine by batch_size (us/init-step, {sweep_steps} steps, 1 run): "
          + ", ".join(f"{b}: {s:.1f}" for b, s in gram_bs.items()), flush=True)
    final = gram(num_steps=num_steps)
    out["gram_final_status"] = class_counts(landscape.DESCENT_STATUS_NAMES[int(s)] for s in np.asarray(final.status))
    out["variants"] = variants

    # agreement after the same number of steps from the same inits
    W_gram = gram(num_steps=base_steps).W
    ref = W_lib[4]
    agree = {
        "gram_vs_full": float(jnp.max(jnp.abs(W_gram - ref))),
        "naive_vs_full": float(jnp.max(jnp.abs(W_naive - ref))),
        "loop_vs_full": float(jnp.max(jnp.abs(W_loop - ref))),
        "full_batch1_vs_batch16": float(jnp.max(jnp.abs(W_lib[1] - W_lib[16]))),
        "max_abs_W": float(jnp.max(jnp.abs(ref))),
        "steps": base_steps,
    }
    out["agreement"] = agree
    print(f"agreement after {base_steps} steps (max |W_a - W_b|, max |W| = {agree['max_abs_W']:.3g}): "
          f"gram-full {agree['gram_vs_full']:.2e}, naive-full {agree['naive_vs_full']:.2e}, "
          f"loop-full {agree['loop_vs_full']:.2e}, full bs1-bs16 {agree['full_batch1_vs_batch16']:.2e}")

    best_full = min((v for k, v in variants.items() if k.startswith("library full")),
                    key=lambda v: v["us_per_init_step"])
    ratios = {}
    for name in ("library gram",) + tuple(k for k in variants if k.startswith("library full")):
        v = variants[name]
        ratios[name] = {
            "fraction_of_gemm": v["fraction_of_gemm"],
            "speedup_vs_naive_vmap": variants["naive jit(vmap)"]["us_per_init_step"] / v["us_per_init_step"],
            "speedup_vs_python_loop": variants["python loop of jit(scan)"]["us_per_init_step"] / v["us_per_init_step"],
        }
    out["ratios"] = ratios
    out["best_full_us_per_init_step"] = best_full["us_per_init_step"]
    print("ratios (goal: >= 0.5 x GEMM, >= 5x over naive jit(vmap)):")
    for name, r in ratios.items():
        print(f"  {name:28s} {r['fraction_of_gemm']:8.3f} x GEMM  {r['speedup_vs_naive_vmap']:9.1f} x naive vmap"
              f"  {r['speedup_vs_python_loop']:9.1f} x python loop")

    path = _write(args, out)  # written again at the end; kept if explore is interrupted
    if not args.skip_explore:
        runs = []
        for call in ("first (compile + run)", "second (run)"):
            t0 = time.perf_counter()
            res = landscape.explore(problem, key=jax.random.key(1), num_inits=explore_inits, num_steps=num_steps,
                                    learning_rate=lr, grad_tol=1e-10)
            wall = time.perf_counter() - t0
            names = landscape.class_names(res.classification.label)
            counts = class_counts(names)
            gaps = np.abs(res.value - res.f_star)
            runs.append({"call": call, "wall_seconds": wall, "seconds": res.seconds, "counts": counts,
                         "max_abs_f_minus_fstar": float(gaps.max()), "max_grad_norm": float(res.grad_norm.max()),
                         "regime": res.regime, "median_refine_iters": float(np.median(res.refine_iters))})
            print(f"explore {explore_inits} inits, {call}: {wall:.1f} s "
                  f"({', '.join(f'{k} {v:.1f}' for k, v in res.seconds.items())}); {counts}; "
                  f"max |f-f*| {gaps.max():.1e}, max grad {res.grad_norm.max():.1e}", flush=True)
        out["explore"] = {"num_inits": explore_inits, "runs": runs,
                          "compile_seconds_estimate": runs[0]["wall_seconds"] - runs[1]["wall_seconds"]}
    _write(args, out, path)
    return out


def _write(args, out, path=None):
    out["load_end"] = load_info()
    if path is None and args.out:
        path = Path(args.out)
        path.parent.mkdir(parents=True, exist_ok=True)
    elif path is None:
        path = harness.make_workdir(args.workdir, "bench_multistart") / "bench_multistart.json"
    write_json(path, out)
    print(f"load at end: {out['load_end']['loadavg']}; wrote {path.absolute()}")
    return path


if __name__ == "__main__":
    harness.run(main, x64=True)
