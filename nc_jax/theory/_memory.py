"""Memory budget of the closed forms: the bytes :func:`global_minimum` and
:func:`nc_predictions` allocate, from the problem's sizes alone (nothing is allocated).
"""

from __future__ import annotations

import jax.numpy as jnp

from nc_jax.theory._global import _check_problem
from nc_jax.ufm import UFMProblem, _check_float_dtype


def memory_estimate(problem: UFMProblem, *, dtype=None, predictions: bool = True) -> int:
    """Bytes that :func:`global_minimum` (and :func:`nc_predictions`) allocate, from the sizes alone.

    Nothing is allocated: this is for refusing impossible sizes before any work (``nc-jax
    theory`` checks it with :func:`nc_jax.io.check_memory`). With K classes, n samples per
    class, N = K n, d features and r = min(d, K), ``global_minimum`` holds the targets
    Y - b 1^T (K x N, twice while it is formed), V (N x r, with two temporaries), the
    minimizer W (K x d) and H (d x N, twice while it is scaled) and the first r columns of
    the singular basis (K x r, three copies); ``nc_predictions`` adds the K x K Gram matrix
    and what its eigvalsh needs (about eight K x K arrays in all) while a first minimizer is still
    held. The estimate is the peak of these phases plus the outputs kept by a caller that
    holds one minimizer (as the CLI summary does), in bytes of ``dtype`` (default: the
    lambdas' float dtype, float64 with x64 enabled). An estimate, not an exact account;
    JAX's own baseline (a few hundred MB) is not included.

    Raises:
      TypeError: ``problem`` not a UFMProblem; ``dtype`` not float32 or float64.
    """
    _check_problem(problem, "memory_estimate")
    if dtype is None:
        dtype = jnp.result_type(*(getattr(problem, f) for f in ("lambda_W", "lambda_H", "lambda_b")))
        if not jnp.issubdtype(dtype, jnp.floating):
            dtype = jnp.result_type(float)
    itemsize = _check_float_dtype(dtype, "memory_estimate").itemsize
    K, N, d = problem.num_classes, problem.num_samples, problem.feature_dim
    r = min(d, K)
    outputs = K * d + d * N + 3 * K  # W, H, b and the singular values of one minimizer
    work_minimum = 2 * K * N + 3 * N * r + 2 * d * N + 3 * K * r + 2 * K * d
    work_predictions = outputs + 8 * K * K if predictions else 0
    host = 8 * K * r  # the Helmert columns, built in float64 numpy
    return int(itemsize * (outputs + max(work_minimum, work_predictions)) + host)
