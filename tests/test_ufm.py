"""UFM objectives against a plain numpy implementation; validation; transforms."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nc_jax import metrics, ufm
from nc_jax.ufm import UFMProblem


def numpy_objective(W, H, b, K, n, lw, lh, lb, loss, alpha=1.0, M=1.0):
    W, H = np.asarray(W, np.float64), np.asarray(H, np.float64)
    N = K * n
    Z = W @ H
    if b is not None:
        Z = Z + np.asarray(b, np.float64)[:, None]
    total = 0.0
    for i in range(N):
        k = i // n  # class-major columns
        z = Z[:, i]
        if loss == "mse":
            y = np.eye(K)[k]
            total += 0.5 * np.sum((z - y) ** 2)
        elif loss == "rescaled_mse":
            for j in range(K):
                target, weight = (M, alpha) if j == k else (0.0, 1.0)
                total += 0.5 * weight * (z[j] - target) ** 2
        else:
            total += np.log(np.sum(np.exp(z - z.max()))) + z.max() - z[k]
    reg = 0.5 * lw * np.sum(W**2) + 0.5 * lh * np.sum(H**2)
    if b is not None:
        reg += 0.5 * lb * np.sum(np.asarray(b, np.float64) ** 2)
    return total / N + reg


@pytest.mark.parametrize("loss", ["mse", "rescaled_mse", "ce"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_objective_matches_numpy(loss, bias, dtype):
    K, n, d = 4, 3, 5
    p = UFMProblem(K, n, d, 0.03, 0.02, 0.05, bias=bias, loss=loss, alpha=2.5, M=3.0)
    params = ufm.init_params(jax.random.key(1), p, 0.7, dtype=dtype)
    got = ufm.objective(params, p)
    assert got.dtype == dtype
    want = numpy_objective(*params, K, n, 0.03, 0.02, 0.05, loss, 2.5, 3.0)
    rtol = 1e-13 if dtype == jnp.float64 else 2e-6
    np.testing.assert_allclose(float(got), want, rtol=rtol, atol=0)


def test_rescaled_mse_with_unit_scaling_is_vanilla_mse():
    p = UFMProblem(3, 2, 4, 0.1, 0.2, 0.3)
    q = p.replace(loss="rescaled_mse", alpha=1.0, M=1.0)
    params = ufm.init_params(jax.random.key(2), p, 1.0)
    np.testing.assert_allclose(ufm.objective(params, q), ufm.objective(params, p), rtol=1e-15)


def test_vmap_over_params_equals_per_item_calls():
    p = UFMProblem(3, 2, 4, 0.1, 0.2, 0.3, loss="ce")
    keys = jax.random.split(jax.random.key(3), 5)
    batch = jax.vmap(lambda k: ufm.init_params(k, p, 1.0))(keys)
    batched = jax.vmap(ufm.objective, in_axes=(0, None))(batch, p)
    single = [ufm.objective(jax.tree.map(lambda x: x[i], batch), p) for i in range(5)]
    np.testing.assert_allclose(batched, np.array(single), rtol=1e-14)


def test_jit_does_not_retrace_for_new_lambdas():
    @jax.jit
    @chex.assert_max_traces(n=1)
    def f(params, problem):
        return ufm.objective(params, problem)

    p = UFMProblem(3, 2, 4, jnp.asarray(0.1), jnp.asarray(0.2), jnp.asarray(0.3))
    params = ufm.init_params(jax.random.key(4), p, 1.0)
    a = f(params, p)
    b = f(params, p.replace(lambda_W=jnp.asarray(0.5)))
    assert float(b) > float(a)  # lambda_W grew, ||W|| > 0


def test_targets_labels_and_class_means():
    p = UFMProblem(3, 2, 4)
    Y = ufm.one_hot_targets(p)
    np.testing.assert_array_equal(Y, np.repeat(np.eye(3), 2, axis=1))
    np.testing.assert_array_equal(ufm.labels(p), [0, 0, 1, 1, 2, 2])
    H = jnp.arange(24.0).reshape(4, 6)
    means = metrics.class_means(H, ufm.labels(p), num_classes=3)  # the class-major layout
    np.testing.assert_allclose(means, (H[:, ::2] + H[:, 1::2]) / 2)


@pytest.mark.parametrize("K,d", [(2, 1), (3, 2), (4, 3), (4, 4), (5, 9)])
def test_simplex_etf_definition(K, d):
    M = ufm.simplex_etf(K, d, key=jax.random.key(0) if d > K else None)
    assert M.shape == (d, K)
    gram = M.T @ M
    want = K / (K - 1) * (np.eye(K) - 1.0 / K)  # unit columns, cosines -1/(K-1)
    np.testing.assert_allclose(gram, want, atol=1e-14)
    np.testing.assert_allclose(M.sum(axis=1), 0, atol=1e-14)


def test_simplex_etf_rejects_small_dim():
    with pytest.raises(ValueError, match="dim must be >= num_classes - 1"):
        ufm.simplex_etf(5, 3)


def test_orthonormal_complement():
    B = ufm.orthonormal_complement_of_ones(6)
    np.testing.assert_allclose(B.T @ B, np.eye(5), atol=1e-15)
    np.testing.assert_allclose(B.T @ np.ones(6), 0, atol=1e-15)


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(num_classes=1), ValueError, "num_classes must be an integer >= 2"),
        (dict(num_classes=2.0), TypeError, "num_classes must be an integer >= 2 .*got 2.0 of type float"),
        (dict(num_classes=4.0), TypeError, "num_classes must be an integer >= 2 .*got 4.0"),
        (dict(num_classes=True), TypeError, "num_classes must be an integer >= 2 .*got True of type bool"),
        (dict(num_classes="3"), TypeError, "num_classes must be an integer >= 2 .*got '3' of type str"),
        (dict(n_per_class=None), TypeError, "n_per_class must be an integer >= 1 .*got None"),
        (dict(n_per_class=0), ValueError, "n_per_class must be an integer >= 1"),
        (dict(feature_dim=0), ValueError, "feature_dim must be an integer >= 1"),
        (dict(feature_dim=np.bool_(True)), TypeError, "feature_dim must be an integer"),
        (dict(lambda_W=-1e-3), ValueError, r"lambda_W must be finite and >= 0 \(accepted range \[0, inf\)\); got -0.001"),
        (dict(lambda_H=float("nan")), ValueError, r"lambda_H must be finite and >= 0"),
        (dict(lambda_b=float("inf")), ValueError, r"lambda_b must be finite and >= 0"),
        (dict(lambda_b="0.1"), TypeError, r"lambda_b must be a real number .*got '0.1' of type str"),
        (dict(lambda_W=None), TypeError, r"lambda_W must be a real number .*got None"),
        (dict(lambda_H=True), TypeError, r"lambda_H must be a real number .*got True of type bool"),
        (dict(lambda_b=1j), TypeError, r"lambda_b must be a real number"),
        (dict(lambda_b=np.array(["a"])), TypeError, r"lambda_b must be a real number .*dtype <U1"),
        (dict(lambda_W=jnp.asarray(-1.0)), ValueError, r"lambda_W must be finite and >= 0"),
        (dict(lambda_H=10**400), ValueError, r"lambda_H must be finite and >= 0"),
        (dict(alpha=0.0), ValueError, r"alpha must be finite and > 0"),
        (dict(alpha="2"), TypeError, r"alpha must be a real number"),
        (dict(M=-2.0), ValueError, r"M must be finite and > 0"),
        (dict(M=np.inf), ValueError, r"M must be finite and > 0"),
        (dict(loss="hinge"), ValueError, r"loss must be one of \('mse', 'rescaled_mse', 'ce', 'label_smoothing', 'focal'\)"),
        (dict(loss=None), TypeError, r"loss must be one of"),
        (dict(bias="yes"), TypeError, "bias must be True or False"),
    ],
)
def test_validation_errors(kwargs, exc, match):
    base = dict(num_classes=3, n_per_class=2, feature_dim=4)
    base.update(kwargs)
    with pytest.raises(exc, match=match):
        UFMProblem(**base)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(num_classes=np.int64(3), n_per_class=np.int32(2), feature_dim=np.uint8(4)),
        dict(lambda_W=np.float32(0.1), lambda_H=np.float64(0.2), lambda_b=np.int64(0)),
        dict(lambda_W=jnp.asarray(0.1), lambda_H=jnp.asarray(0.2, jnp.float32), lambda_b=jnp.asarray(1)),
        dict(lambda_W=np.float16(0.1), alpha=jnp.asarray(2.0, jnp.bfloat16), M=np.asarray(3.0)),
        dict(lambda_b=jnp.array([0.1, 0.2])),  # a batch of values, for vmap over the problem
        dict(lambda_W=0, lambda_H=1, lambda_b=2),
    ],
)
def test_numpy_and_jax_numbers_are_accepted(kwargs):
    base = dict(num_classes=3, n_per_class=2, feature_dim=4)
    base.update(kwargs)
    p = UFMProblem(**base)
    assert type(p.num_classes) is int and type(p.n_per_class) is int and type(p.feature_dim) is int
    assert p.num_samples == 6


def test_traced_lambdas_are_accepted_under_jit_vmap_grad():
    def value(lw):
        p = UFMProblem(3, 2, 4, lw, 0.2, 0.3)  # lw is a tracer: not checked, not refused
        return ufm.objective(ufm.init_params(jax.random.key(0), p, 0.5), p)

    g = jax.jit(jax.grad(value))(0.1)
    v = jax.vmap(value)(jnp.array([0.1, 0.2]))
    assert np.isfinite(float(g)) and v.shape == (2,)


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_half_precision_init_and_objective_are_supported(dtype):
    p = UFMProblem(3, 2, 4, 0.03, 0.02, 0.05)
    params = ufm.init_params(jax.random.key(1), p, 0.7, dtype=dtype)
    got = ufm.objective(params, p)
    assert got.dtype == dtype
    want = numpy_objective(*params, 3, 2, 0.03, 0.02, 0.05, "mse")
    np.testing.assert_allclose(float(got), want, rtol=3e-2)


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16, jnp.int32, "float8"])
def test_unsupported_dtypes_are_a_clear_type_error(dtype, key):
    p = UFMProblem(3, 2, 4)
    name = jnp.dtype(dtype).name if dtype != "float8" else "float8"
    if dtype in (jnp.float16, jnp.bfloat16):
        with pytest.raises(TypeError, match=f"collapsed_hessian: dtype must be float32 or float64 .*got {name}"):
            ufm.collapsed_hessian(ufm.init_params(key, p, dtype=dtype), p)
        with pytest.raises(TypeError, match=f"simplex_etf with a key: dtype must be float32 or float64 .*got {name}"):
            ufm.simplex_etf(3, 4, key=key, dtype=dtype)
    else:
        with pytest.raises(TypeError, match="init_params: dtype must be"):
            ufm.init_params(key, p, dtype=dtype)


def test_init_params_scale_is_validated(key):
    p = UFMProblem(3, 2, 4)
    with pytest.raises(TypeError, match="scale must be a real number .*got '1'"):
        ufm.init_params(key, p, "1")
    with pytest.raises(ValueError, match="scale must be finite and >= 0"):
        ufm.init_params(key, p, -1.0)


def test_one_hot_targets_never_builds_a_K_by_K_matrix():
    p = UFMProblem(5, 3, 2)
    np.testing.assert_array_equal(ufm.one_hot_targets(p), np.repeat(np.eye(5), 3, axis=1))
    jaxpr = str(jax.make_jaxpr(lambda: ufm.one_hot_targets(p))())
    assert "5,5" not in jaxpr.replace(" ", "")


def test_shape_errors_name_the_argument():
    p = UFMProblem(3, 2, 4)
    good = ufm.init_params(jax.random.key(0), p)
    with pytest.raises(ValueError, match=r"params.W must have shape \(K, d\)"):
        ufm.objective(good._replace(W=good.W.T), p)
    with pytest.raises(ValueError, match="params.b must be None"):
        ufm.objective(good, p.replace(bias=False))
    with pytest.raises(ValueError, match=r"params.b must have shape"):
        ufm.objective(good._replace(b=None), p)


def test_problem_is_a_pytree_with_static_sizes():
    p = UFMProblem(3, 2, 4, 0.1, 0.2, 0.3)
    leaves, treedef = jax.tree.flatten(p)
    assert len(leaves) == 7  # lambda_W, lambda_H, lambda_b, alpha, M, label_smoothing, focal_gamma
    q = jax.tree.unflatten(treedef, [x * 2 for x in leaves])
    assert (q.num_classes, q.lambda_W, q.alpha, q.focal_gamma) == (3, 0.2, 2.0, 4.0)


@pytest.mark.parametrize("loss", ["mse", "rescaled_mse"])
@pytest.mark.parametrize("bias", [True, False])
def test_analytic_hvp_equals_autodiff(loss, bias):
    from nc_jax.hessian import hvp

    p = UFMProblem(4, 3, 5, 0.03, 0.02, 0.05, bias=bias, loss=loss, alpha=2.5, M=3.0)
    params = ufm.init_params(jax.random.key(5), p, 0.7)
    v = ufm.init_params(jax.random.key(6), p, 1.0)
    got = ufm.analytic_hvp(params, p)(v)
    want = hvp(ufm.objective, params, v, p)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-14)


def test_analytic_hvp_rejects_ce():
    p = UFMProblem(3, 2, 4, loss="ce")
    with pytest.raises(ValueError, match=r"analytic_hvp is eq\. \(24\)"):
        ufm.analytic_hvp(ufm.init_params(jax.random.key(0), p), p)


@pytest.mark.slow
@pytest.mark.parametrize("bias", [True, False])
def test_collapsed_hessian_reproduces_the_full_spectrum(bias):
    """At a collapsed point the full spectrum is the union of the two invariant blocks."""
    from jax.flatten_util import ravel_pytree

    K, n, d = 3, 3, 4
    p = UFMProblem(K, n, d, 0.03, 0.02, 0.05 if bias else 0.0, bias=bias)
    rand = ufm.init_params(jax.random.key(8), p, 0.8)
    means = metrics.class_means(rand.H, ufm.labels(p), num_classes=K)
    collapsed = rand._replace(H=jnp.repeat(means, n, axis=1))  # not critical
    flat, unravel = ravel_pytree(collapsed)
    full = np.linalg.eigvalsh(np.asarray(jax.hessian(lambda x: ufm.objective(unravel(x), p))(flat)))
    ch = ufm.collapsed_hessian(collapsed, p)
    basis_point = ufm.UFMParams(collapsed.W, jnp.zeros((d, K)), collapsed.b)
    x0, unravel_mean = ravel_pytree(basis_point)
    mean_block = np.asarray(jax.jacfwd(lambda x: ravel_pytree(ch.matvec(unravel_mean(x)))[0])(x0))
    np.testing.assert_allclose(mean_block, mean_block.T, atol=1e-13)  # symmetric: an orthonormal split
    union = np.sort(np.concatenate([np.linalg.eigvalsh(mean_block), np.repeat(np.asarray(ch.within_eigenvalues), ch.num_within)]))
    np.testing.assert_allclose(union, full, atol=1e-12)
