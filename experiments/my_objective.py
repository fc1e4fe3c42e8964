"""Is MY landscape benign? An objective nc_jax does not ship, explored and reported.

The model: symmetric matrix sensing with a Burer-Monteiro factor (Ge, Jin, Zheng 2017):
recover a rank-r PSD matrix M* = U* U*^T (n x n) from m random symmetric measurements
y_i = <A_i, M*> by minimising

    f(U) = 1/(2m) sum_i (<A_i, U U^T> - y_i)^2,        U in R^{n x r}.

With enough Gaussian measurements (restricted isometry) every local minimum is global
(f* = 0) and every other critical point is a strict saddle; with very few measurements the
guarantee fails. The script writes the same report.md / results.json / landscape.png as
`nc-jax landscape`, and exits 0 (benign on the evidence), 1 (spurious minimum found) or
3 (inconclusive).

    python -m experiments.my_objective                       # m = 10 n r measurements
    python -m experiments.my_objective --measurements 4      # too few: watch what it finds
    python -m experiments.my_objective --quick

This example uses only the public ``nc_jax`` API (not ``experiments.harness``) so it can be
copied as it is; for the same reason ``python experiments/my_objective.py`` runs it too.
"""

from __future__ import annotations

import argparse
import sys

import jax
import jax.numpy as jnp

from nc_jax import landscape
from nc_jax.io import ExitCode, UsageError, make_workdir


def sensing_loss(U, A, y):
    """f(U) = 1/(2m) sum_i (<A_i, U U^T> - y_i)^2; A: m x n x n symmetric, y: m."""
    residual = jnp.einsum("mij,ij->m", A, U @ U.T) - y
    return 0.5 * jnp.mean(residual**2)


def sensing_init(key, scale, A, y):
    n = A.shape[1]
    return scale * jax.random.normal(key, (n, RANK), dtype=jnp.result_type(scale))


RANK = 2
MODEL = landscape.Model(objective=sensing_loss, init=sensing_init, global_value=0.0, name="matrix-sensing")


def make_data(key, n, m, dtype):
    k_star, k_a = jax.random.split(key)
    U_star = jax.random.normal(k_star, (n, RANK), dtype=dtype)
    G = jax.random.normal(k_a, (m, n, n), dtype=dtype)
    A = 0.5 * (G + jnp.swapaxes(G, 1, 2))
    return A, jnp.einsum("mij,ij->m", A, U_star @ U_star.T)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--n", type=int, default=6, help="matrix size (>= 2)")
    parser.add_argument("--measurements", type=int, default=None, help="m (>= 1; default 10 n r)")
    parser.add_argument("--num-inits", type=int, default=32, help="random inits (>= 1)")
    parser.add_argument("--seed", type=int, default=0, help="the key everything is split from")
    parser.add_argument("--workdir", default=None, help="output folder (default: a new runs/my_objective-<time>)")
    parser.add_argument("--quick", action="store_true", help="n = 4, 8 inits (seconds)")
    args = parser.parse_args(argv)
    jax.config.update("jax_enable_x64", True)  # certificates at gradient norm 1e-10 need float64
    n = 4 if args.quick else args.n
    num_inits = 8 if args.quick else args.num_inits
    m = args.measurements or 10 * n * RANK
    try:
        if n < 2 or m < 1 or num_inits < 1:
            raise UsageError(f"need --n >= 2, --measurements >= 1, --num-inits >= 1; got {n}, {m}, {num_inits}")
        workdir = make_workdir(args.workdir, "my_objective")
    except UsageError as err:
        print(f"my_objective.py: error: {err}", file=sys.stderr)
        return int(ExitCode.USAGE)
    print(f"workdir: {workdir.resolve()}", flush=True)
    key_data, key_explore = jax.random.split(jax.random.key(args.seed))
    A, y = make_data(key_data, n, m, jnp.float64)
    result = landscape.explore(MODEL, A, y, key=key_explore, num_inits=num_inits, scales=(0.01, 1.0),
                               num_steps=3000, learning_rate=0.05 / n)
    summary = landscape.write_report(result, workdir, name=f"matrix sensing n={n} r={RANK} m={m}",
                                     command="python -m experiments.my_objective " + " ".join(argv or sys.argv[1:]))
    print(f"counts: { {k: v for k, v in summary.counts.items() if v} }")
    print(f"minimum levels: {[f'{v:.3g}' for v in summary.minimum_values]}")
    print(f"verdict: {summary.verdict.name}: {'; '.join(summary.reasons)}")
    print(f"report: {workdir / 'report.md'}")
    codes = {"BENIGN": ExitCode.OK, "SINGLE_LEVEL": ExitCode.OK, "INCONCLUSIVE": ExitCode.INCONCLUSIVE}
    return int(codes.get(summary.verdict.name, ExitCode.DISAGREEMENT))


if __name__ == "__main__":
    sys.exit(main())
