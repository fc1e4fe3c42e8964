"""The class-imbalanced UFM without bias in closed form: global minimum and minority collapse.

Owns :func:`imbalanced_global_minimum` (value, one minimizer, which classifier rows vanish)
for ``UFMProblem(n_per_class=(n_1, ..., n_K), bias=False, loss="mse")``.

Derivation. With lambda_H > 0 every critical point has the features of a class equal
(the H-gradient is W^T (W h_i - y_i)/N + lambda_H h_i, the same equation for every i of a
class, whose solution is unique). Write H = Hbar E^T with E the N x K class indicator and
D = diag(n_k) = E^T E; then with G = Hbar D^(1/2),

    f = 1/(2N) ||W G - D^(1/2)||_F^2 + lambda_W/2 ||W||^2 + lambda_H/2 ||G||^2,

a factorization of the diagonal target D^(1/2), singular values sqrt(n_k). As for the
balanced case, min over W G = Z of the penalty is sqrt(lambda_W lambda_H) ||Z||_*, so
Z* is the singular value thresholding of D^(1/2) at lt = N sqrt(lambda_W lambda_H),
keeping the min(d, K) largest classes:

    z_k = [sqrt(n_k) - lt]_+   (k among the d largest n_k; else 0),
    f*  = sum_k [ sqrt(lambda_W lambda_H n_k) - N lambda_W lambda_H / 2   if z_k > 0
                  n_k / (2N)                                              otherwise ].

Minority collapse: row k of W* (and the class-k features) vanish exactly when
n_k <= N^2 lambda_W lambda_H (or class k is not among the d largest): the classifier
never predicts class k. The class means form an orthogonal frame with class-dependent
lengths ||hbar_k|| = (lambda_W/lambda_H)^(1/4) sqrt(z_k / n_k) and
||w_k|| = (lambda_H/lambda_W)^(1/4) sqrt(z_k), not a simplex ETF. Checked against L-BFGS
in tests/test_imbalanced.py.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from nc_jax.ufm import UFMParams, UFMProblem, _check_float_dtype, repeat_class_columns


def _kept_classes(class_sizes, feature_dim: int) -> np.ndarray:
    """Boolean mask of the min(d, K) largest classes (ties: the lower index first)."""
    order = np.argsort(-np.asarray(class_sizes), kind="stable")
    kept = np.zeros(len(class_sizes), bool)
    kept[order[: min(feature_dim, len(class_sizes))]] = True
    return kept


def minority_collapse_threshold(problem: UFMProblem):
    """N^2 lambda_W lambda_H: classes with n_k at or below it collapse (their W rows vanish)."""
    N = problem.num_samples
    return (N * N) * (jnp.asarray(problem.lambda_W) * jnp.asarray(problem.lambda_H))


def imbalanced_global_minimum(problem: UFMProblem, *, dtype=None):
    """Value, one minimizer and the surviving classes of the imbalanced no-bias MSE UFM.

    Returns ``(value, params, alive, z)``: ``alive[k]`` says whether class k's classifier
    row is nonzero at the minimum (False: minority collapse), ``z`` the K thresholded
    singular values (class order). Works for balanced sizes too (then it agrees with
    :func:`global_minimum`).
    """
    if problem.bias or problem.loss != "mse":
        raise ValueError("imbalanced_global_minimum is the closed form for bias=False, loss='mse'; got "
                         f"bias={problem.bias}, loss={problem.loss!r}")
    dtype = _check_float_dtype(jnp.result_type(float) if dtype is None else dtype, "imbalanced_global_minimum")
    d, N = problem.feature_dim, problem.num_samples
    sizes = np.asarray(problem.class_sizes)
    lw, lh = (jnp.asarray(x, dtype) for x in (problem.lambda_W, problem.lambda_H))
    s = jnp.sqrt(lw * lh)
    lt = N * s
    root_n = jnp.asarray(np.sqrt(sizes), dtype)
    kept = _kept_classes(sizes, d)  # static: from the sizes alone
    z = jnp.where(kept, jnp.maximum(root_n - lt, 0.0), 0.0)
    alive = z > 0
    per_class = jnp.where(alive, s * root_n - 0.5 * N * s * s, jnp.asarray(sizes, dtype) / (2.0 * N))
    value = jnp.sum(per_class)
    params = _minimizer(problem, z, root_n, kept, lw, lh, dtype)
    return value, params, alive, z


def _minimizer(problem: UFMProblem, z, root_n, kept, lw, lh, dtype) -> UFMParams:
    """W* = c [diag(sqrt z)]_kept P^T, Hbar_k = sqrt(z_k)/(c sqrt(n_k)) p_k, c = (lambda_H/lambda_W)^(1/4)."""
    K, d = problem.num_classes, problem.feature_dim
    both = (lw > 0) & (lh > 0)
    c = jnp.where(both, (jnp.where(both, lh, 1.0) / jnp.where(both, lw, 1.0)) ** 0.25, 1.0)
    # column k of the frame: the j-th basis vector of R^d for the j-th kept class (class order)
    frame = np.zeros((d, K))
    frame[np.cumsum(kept)[kept] - 1, np.flatnonzero(kept)] = 1.0
    frame = jnp.asarray(frame, dtype)
    W = (c * jnp.sqrt(z))[:, None] * frame.T  # K x d
    means = frame * (jnp.sqrt(z) / (c * root_n))[None, :]  # d x K
    H = repeat_class_columns(means, problem)
    return UFMParams(W, H, None)

