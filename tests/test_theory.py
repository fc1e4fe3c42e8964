"""Theorem 3.1 and Lemma B.2 in closed form, checked against numerics.

Every expected value here is computed independently: the objective at the closed-form
minimizer, its gradient, L-BFGS from random starts, the dense jax.hessian, and finite
differences of the optimal value.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
from jax.flatten_util import ravel_pytree

from nc_jax import metrics, theory, ufm
from nc_jax.ufm import UFMProblem

# (K, n, d, lambda_W, lambda_H, lambda_b, bias, expected regime) covering every regime,
# with lambda_W lambda_H on both sides of 1/(NK) and lambda_b on both sides of t/(1-t).
PROBLEMS = [
    (4, 3, 2, 1e-2, 2e-2, 1e-3, True, "low_rank"),
    (5, 2, 2, 3e-3, 1e-2, 0.3, True, "low_rank"),
    (5, 2, 3, 3e-3, 1e-2, 3.0, True, "low_rank"),
    (6, 1, 1, 1e-2, 1e-2, 0.0, True, "low_rank"),
    (3, 4, 1, 1e-2, 1e-2, 0.1, True, "low_rank"),
    (4, 3, 3, 1e-2, 2e-2, 1e-3, True, "simplex_etf_d=K-1"),
    (4, 3, 3, 1e-2, 2e-2, 10.0, True, "simplex_etf_d=K-1"),
    (2, 5, 1, 1e-2, 1e-2, 0.5, True, "simplex_etf_d=K-1"),
    (4, 3, 4, 1e-2, 2e-2, 1e-2, True, "simplex_etf"),
    (3, 2, 5, 1e-2, 2e-2, 1e-3, True, "simplex_etf"),
    (4, 3, 4, 1e-2, 2e-2, 1.0, True, "shifted_etf"),
    (3, 2, 5, 1e-2, 2e-2, 10.0, True, "shifted_etf"),
    (8, 1, 9, 2e-3, 5e-3, 0.7, True, "shifted_etf"),
    (4, 3, 6, 0.1, 0.25, 0.5, True, "zero"),
    (3, 2, 1, 0.3, 0.3, 0.1, True, "zero"),
    (2, 6, 3, 0.3, 0.3, 2.0, True, "zero"),
    (4, 2, 2, 1e-2, 1e-2, 0.5, False, "no_bias_low_rank"),
    (5, 2, 4, 1e-2, 3e-3, 0.0, False, "no_bias_low_rank"),
    (4, 3, 4, 1e-2, 2e-2, 0.0, False, "no_bias_orthogonal"),
    (3, 2, 6, 2e-2, 1e-2, 0.0, False, "no_bias_orthogonal"),
    (3, 3, 6, 0.2, 0.2, 0.0, False, "zero"),
]


def _problem(case):
    K, n, d, lw, lh, lb, bias, _ = case
    return UFMProblem(K, n, d, lw, lh, lb, bias=bias)


def _ids(case):
    return "K{}n{}d{}-lw{}-lh{}-lb{}-{}".format(*case[:6], "bias" if case[6] else "nobias")


@pytest.mark.parametrize("case", PROBLEMS, ids=_ids)
def test_closed_form_minimizer(case):
    p = _problem(case)
    gm = theory.global_minimum(p)
    assert theory.regime_name(gm.regime) == case[-1]
    flat, unravel = ravel_pytree(gm.params)
    f = jax.jit(lambda x: ufm.objective(unravel(x), p))
    value = float(f(flat))
    np.testing.assert_allclose(value, float(gm.value), rtol=1e-12, atol=0)
    assert float(jnp.linalg.norm(jax.grad(f)(flat))) < 1e-10
    # b* 1 is the bias of the returned minimizer
    if p.bias:
        np.testing.assert_allclose(gm.params.b, float(gm.bias), rtol=0, atol=0)

    # L-BFGS from random starts of several scales: none ends below f*, the best hits it.
    fg = jax.jit(jax.value_and_grad(f))
    best = np.inf
    for seed, scale in enumerate((0.01, 0.3, 1.0)):
        x0 = ravel_pytree(ufm.init_params(jax.random.key(seed), p, scale))[0]
        res = scipy.optimize.minimize(
            lambda x: tuple(np.asarray(v) for v in fg(x)),
            np.asarray(x0),
            jac=True,
            method="L-BFGS-B",
            options=dict(maxiter=20000, maxcor=50, gtol=1e-13, ftol=1e-16),
        )
        assert res.fun >= float(gm.value) * (1 - 1e-12)
        best = min(best, res.fun)
    np.testing.assert_allclose(best, float(gm.value), rtol=1e-9)


def _lambda_grad_problem(lw, lh, lb):
    return UFMProblem(4, 3, 5, lw, lh, lb)


@pytest.mark.parametrize(
    "lambdas",
    [(1e-2, 2e-2, 1e-3), (1e-2, 2e-2, 1.0), (3e-2, 1e-2, 0.2)],
    ids=["simplex_etf", "shifted_etf", "simplex_etf-2"],
)
def test_envelope_theorem(lambdas):
    def value(lw, lh, lb):
        return theory.global_minimum(_lambda_grad_problem(lw, lh, lb)).value

    grads = jax.grad(value, argnums=(0, 1, 2))(*map(jnp.asarray, lambdas))
    gm = theory.global_minimum(_lambda_grad_problem(*lambdas))
    W, H, b = gm.params
    np.testing.assert_allclose(grads[0], 0.5 * jnp.sum(W**2), rtol=1e-10)
    np.testing.assert_allclose(grads[1], 0.5 * jnp.sum(H**2), rtol=1e-10)
    np.testing.assert_allclose(grads[2], 0.5 * jnp.sum(b**2), rtol=1e-10)
    # ... and jax.grad agrees with central finite differences of the value.
    for i in range(3):
        step = 1e-6 * lambdas[i]
        up = list(lambdas)
        down = list(lambdas)
        up[i] += step
        down[i] -= step
        fd = (float(value(*up)) - float(value(*down))) / (2 * step)
        np.testing.assert_allclose(grads[i], fd, rtol=1e-6)


def test_vmap_sweep_over_lambdas_compiles_once():
    @jax.jit
    @chex.assert_max_traces(n=1)
    def sweep(lw, lb):
        return jax.vmap(lambda a, c: theory.global_minimum(UFMProblem(4, 3, 5, a, 2e-2, c)).value)(lw, lb)

    lw = jnp.array([1e-3, 1e-2, 0.1])
    lb = jnp.array([1e-3, 1.0, 0.5])
    out = sweep(lw, lb)
    sweep(lw * 1.1, lb)  # new values, no retrace
    want = [float(theory.global_minimum(UFMProblem(4, 3, 5, float(a), 2e-2, float(c))).value) for a, c in zip(lw, lb)]
    np.testing.assert_allclose(out, want, rtol=1e-14)


def test_regime_thresholds_are_where_the_theory_puts_them():
    K, n, d = 4, 3, 5
    N = K * n
    lw = lh = 0.5 / np.sqrt(N * K)  # t = sqrt(K N lw lh) = 1/2, lambda_b threshold = 1
    eps = 1e-9
    below = theory.global_minimum(UFMProblem(K, n, d, lw, lh, 1 - eps))
    above = theory.global_minimum(UFMProblem(K, n, d, lw, lh, 1 + eps))
    assert theory.regime_name(below.regime) == "simplex_etf"
    assert theory.regime_name(above.regime) == "shifted_etf"
    np.testing.assert_allclose(below.lambda_b_threshold, 1.0, rtol=1e-12)
    # b* is continuous across the threshold: 1/(K(1+lb)) meets sqrt(n lw lh)/lb at lb = 1.
    np.testing.assert_allclose(below.bias, above.bias, rtol=1e-8)
    np.testing.assert_allclose(above.bias, np.sqrt(n * lw * lh) / (1 + eps), rtol=1e-12)
    zero_lw = 1.0 / (N * K) / lh
    assert theory.regime_name(theory.global_minimum(UFMProblem(K, n, d, zero_lw * (1 + 1e-9), lh, 0.1)).regime) == "zero"
    assert theory.regime_name(theory.global_minimum(UFMProblem(K, n, d, zero_lw * (1 - 1e-6), lh, 0.1)).regime) == "simplex_etf"


def test_zero_regime_value_in_closed_form():
    p = UFMProblem(4, 3, 6, 0.1, 0.25, 0.5)
    gm = theory.global_minimum(p)
    np.testing.assert_allclose(gm.value, 0.5 - 1 / (2 * 4 * 1.5), rtol=1e-14)
    assert float(jnp.abs(gm.params.W).max()) == 0.0


def test_regime_vocabulary():
    assert [int(r) for r in theory.Regime] == list(range(8))
    assert theory.REGIME_NAMES == ("zero", "low_rank", "simplex_etf_d=K-1", "simplex_etf", "shifted_etf",
                                   "no_bias_low_rank", "no_bias_orthogonal", "imbalanced_no_bias")
    assert theory.Regime.SIMPLEX_ETF_D_EQ_K_MINUS_1.label == "simplex_etf_d=K-1"
    assert theory.regime_name(jnp.asarray(4)) == "shifted_etf" == theory.Regime(4).label
    with pytest.raises(ValueError, match="8"):
        theory.regime_name(8)


def test_nc_predictions_refuses_a_minimum_of_another_problem():
    p = UFMProblem(4, 3, 4, 1e-2, 2e-2, 1e-2)
    with pytest.raises(TypeError, match="minimum must be a GlobalMinimum"):
        theory.nc_predictions(p, minimum=theory.global_minimum(p).params)
    with pytest.raises(ValueError, match=r"minimum must be global_minimum\(problem"):
        theory.nc_predictions(p, minimum=theory.global_minimum(UFMProblem(4, 3, 5, 1e-2, 2e-2, 1e-2)))


@pytest.mark.parametrize("case", [c for c in PROBLEMS if c[-1] != "zero"], ids=_ids)
def test_nc_predictions_hold_at_the_minimizer(case):
    p = _problem(case)
    gm = theory.global_minimum(p)
    pred = theory.nc_predictions(p)
    W, H, _ = gm.params
    means = metrics.class_means(H, ufm.labels(p), num_classes=p.num_classes)
    # NC1: every feature equals its class mean; NC3: self-duality with the constant.
    np.testing.assert_allclose(H, jnp.repeat(means, p.n_per_class, axis=1), atol=1e-13)
    np.testing.assert_allclose(means, pred.self_duality * W.T, atol=1e-13)
    gram = means.T @ means
    spectrum = np.sort(np.linalg.eigvalsh(gram / np.linalg.norm(gram)))[::-1]
    np.testing.assert_allclose(spectrum, pred.gram_spectrum, atol=1e-12)
    spec_err, dual_err = theory.prediction_errors(p, gm.params, pred)
    assert float(spec_err) < 1e-12 and float(dual_err) < 1e-12
    # a minimizer the caller holds is used as is: the same predictions, bit for bit
    chex.assert_trees_all_equal(theory.nc_predictions(p, minimum=gm), pred)
    K = p.num_classes
    name = case[-1]
    if name in ("simplex_etf", "simplex_etf_d=K-1"):
        etf = (np.eye(K) - 1 / K) / np.linalg.norm(np.eye(K) - 1 / K)
        np.testing.assert_allclose(pred.gram, etf, atol=1e-12)
        np.testing.assert_allclose(pred.gamma, 1 / K, rtol=1e-12)
    if name == "shifted_etf":
        lw, lh, lb = case[3:6]
        t = np.sqrt(K * p.num_samples * lw * lh)
        gamma = np.sqrt(p.n_per_class * lw * lh) / (lb * (1 - t))  # Theorem 3.1 eq. (5)
        np.testing.assert_allclose(pred.gamma, gamma, rtol=1e-10)
        assert gamma < 1 / K
    if name == "no_bias_orthogonal":
        np.testing.assert_allclose(pred.gram, np.eye(K) / np.sqrt(K), atol=1e-12)
    assert int(pred.rank) == min(p.feature_dim, K if (name in ("shifted_etf", "no_bias_orthogonal", "no_bias_low_rank")) else K - 1)


def test_global_minimum_rejects_unsupported_inputs():
    with pytest.raises(ValueError, match="loss='mse' only"):
        theory.global_minimum(UFMProblem(3, 2, 4, loss="ce"))
    with pytest.raises(ValueError, match="both > 0 or both 0"):
        theory.global_minimum(UFMProblem(3, 2, 4, lambda_W=0.0, lambda_H=0.1))


def _dense_hessian(problem, params):
    flat, unravel = ravel_pytree(params)
    f = lambda x: ufm.objective(unravel(x), problem)
    return np.asarray(jax.jit(jax.hessian(f))(flat)), float(jnp.linalg.norm(jax.grad(f)(flat))), unravel


@pytest.mark.parametrize(
    "K,n,d,lw,lh,kept",
    [(4, 2, 3, 1e-2, 3e-2, 1), (4, 2, 5, 1e-2, 3e-2, 2), (4, 2, 5, 1e-2, 3e-2, 0), (3, 3, 2, 1e-2, 1e-2, 1), (5, 1, 7, 2e-2, 1e-2, 3)],
)
def test_lemma_b2_saddles_have_the_closed_form_curvature(K, n, d, lw, lh, kept):
    p = UFMProblem(K, n, d, lw, lh, 0.0, bias=False)
    cp = theory.lemma_b2_critical_point(p, kept, class_rotation_key=jax.random.key(1), rotation_key=jax.random.key(2))
    hess, grad_norm, _ = _dense_hessian(p, cp.params)
    assert grad_norm < 1e-12
    eigs = np.linalg.eigvalsh(hess)
    np.testing.assert_allclose(float(cp.lambda_min), eigs[0], atol=1e-9)
    np.testing.assert_allclose(np.asarray(cp.spectrum), eigs, atol=1e-9)  # the whole spectrum
    N = K * n
    exact = 0.5 * ((lw + lh) - np.sqrt((lw - lh) ** 2 + 4 / (N * K)))
    np.testing.assert_allclose(float(cp.lambda_min), exact, rtol=1e-12)
    assert exact < 0
    # The returned direction attains it; the paper's direction only bounds it.
    y = ravel_pytree(cp.direction)[0]
    np.testing.assert_allclose(float(y @ hess @ y), exact, rtol=1e-10)
    assert exact <= float(cp.paper_bound) + 1e-15
    if lw != lh:  # equal only when the paper's direction is the eigenvector (lw = lh)
        assert exact < float(cp.paper_bound) * (1 + 1e-3)


def test_lemma_b2_full_rank_point_is_a_global_minimum():
    p = UFMProblem(4, 2, 6, 1e-2, 3e-2, 0.0, bias=False)
    cp = theory.lemma_b2_critical_point(p, 4, rotation_key=jax.random.key(0))
    np.testing.assert_allclose(ufm.objective(cp.params, p), theory.global_minimum(p).value, rtol=1e-13)
    hess, _, _ = _dense_hessian(p, cp.params)
    assert np.linalg.eigvalsh(hess)[0] > -1e-12
    assert abs(float(cp.lambda_min)) < 1e-12


@pytest.mark.slow
@pytest.mark.parametrize("kept", [(0, 2, 3), (1, 3), (3,), (0, 1, 2)])
def test_general_target_spectrum_including_swap_saddles(kept):
    """Distinct singular values: dropping a larger one for a smaller one is a saddle."""
    K, N, d, lw, lh = 4, 7, 3, 0.02, 0.05
    T = jax.random.normal(jax.random.key(5), (K, N))
    cp = theory.factorization_critical_point(T, lw, lh, d, kept, rotation_key=jax.random.key(3))

    def f(x):
        W, H = x[: K * d].reshape(K, d), x[K * d :].reshape(d, N)
        return 0.5 / N * jnp.sum((W @ H - T) ** 2) + lw / 2 * jnp.sum(W**2) + lh / 2 * jnp.sum(H**2)

    x = jnp.concatenate([cp.params.W.ravel(), cp.params.H.ravel()])
    assert float(jnp.linalg.norm(jax.grad(f)(x))) < 1e-12
    eigs = np.linalg.eigvalsh(np.asarray(jax.hessian(f)(x)))
    np.testing.assert_allclose(np.asarray(cp.spectrum), eigs, atol=1e-12)
    if kept == (0, 1, 2):
        assert eigs[0] > -1e-12  # the top-d directions: the global minimum
    else:
        assert eigs[0] < -1e-3


def test_critical_point_validation():
    T = jnp.eye(3, 5)
    with pytest.raises(ValueError, match="kept must be distinct indices"):
        theory.factorization_critical_point(T, 0.01, 0.01, 2, (0, 0))
    with pytest.raises(ValueError, match="at most min"):
        theory.factorization_critical_point(T, 0.01, 0.01, 2, (0, 1, 2))
    with pytest.raises(ValueError, match="have sigma <="):
        theory.factorization_critical_point(T, 1.0, 1.0, 2, (0,))
    with pytest.raises(ValueError, match="bias=False"):
        theory.lemma_b2_critical_point(UFMProblem(3, 2, 4), 1)


# ------------------------------------------------------------------ extreme lambdas
# An exact reference: regime decisions in rational arithmetic (fractions), b* and f* in
# 60-digit decimal arithmetic, from the float64 inputs as given.

import decimal  # noqa: E402
from fractions import Fraction  # noqa: E402

_TINY = np.finfo(np.float64).tiny


def _exact_reference(K, n, d, lw, lh, lb, bias):
    """(regime, b*, f*) of Theorem 3.1 computed exactly from the float inputs."""
    ctx = decimal.Context(prec=60)
    N = K * n
    Lw, Lh, Lb = Fraction(lw), Fraction(lh), Fraction(lb)
    dec = lambda q: ctx.divide(decimal.Decimal(q.numerator), decimal.Decimal(q.denominator))  # noqa: E731
    zero = Lw * Lh >= Fraction(1, N * K)  # t >= 1
    if not bias:
        regime = "zero" if zero else ("no_bias_low_rank" if d < K else "no_bias_orthogonal")
        beta = decimal.Decimal(0)
    elif d >= K:
        # lambda_b (1 - t) > t  <=>  lambda_b > t (1 + lambda_b)  <=>  lambda_b^2 > (1 + lambda_b)^2 t^2
        shifted = not zero and Lb * Lb > (1 + Lb) ** 2 * K * N * Lw * Lh
        regime = "zero" if zero else ("shifted_etf" if shifted else "simplex_etf")
        if shifted:
            beta = ctx.divide(ctx.sqrt(dec(n * Lw * Lh)), dec(Lb))
        else:
            beta = dec(1 / (K * (1 + Lb)))
    else:
        regime = "zero" if zero else ("simplex_etf_d=K-1" if d == K - 1 else "low_rank")
        beta = dec(1 / (K * (1 + Lb)))
    lt = N * ctx.sqrt(dec(Lw * Lh))
    root_n = ctx.sqrt(decimal.Decimal(n))
    sigma = [root_n] * (K - 1) + [root_n * abs(1 - K * beta)]
    r = min(d, K)
    g = lambda s: s * s / 2 if s <= lt else lt * s - lt * lt / 2  # noqa: E731
    value = (sum(g(s) for s in sigma[:r]) + sum(s * s / 2 for s in sigma[r:])) / N
    if bias:
        value += dec(Lb) * K * beta * beta / 2
    return regime, float(beta), float(value)


def _t(K, n, lw, lh):
    return float(decimal.Context(prec=60).sqrt(decimal.Decimal(K * K * n) * decimal.Decimal(lw) * decimal.Decimal(lh)))


_T_SMALL = _t(4, 3, 1e-250, 1e-250)  # t where lambda_W lambda_H = 1e-500 underflows
EXTREME = [
    # (K, n, d, lambda_W, lambda_H, lambda_b, bias): the example and its neighbours
    (10, 100, 12, 1e-200, 1e-200, 1e-300, True),  # t ~ 1e-198 > lambda_b: simplex_etf, b* = 1/(K(1+lb))
    (10, 100, 12, 1e-200, 1e-200, 1e-190, True),  # lambda_b > t: shifted_etf, b* = 1e-9
    (10, 100, 12, 1e-300, 1e-300, 1e-299, True),  # simplex_etf
    (10, 100, 12, 1e-300, 1e-300, 1e-297, True),  # shifted_etf, b* = 1e-2
    (10, 100, 12, 3e-308, 3e-308, 1e-307, True),  # smallest normal lambdas, simplex_etf
    (10, 100, 12, 3e-308, 3e-308, 1e-305, True),  # shifted_etf
    (4, 3, 5, 1e-250, 1e-250, _T_SMALL * (1 - 1e-12), True),  # knife edge below the threshold t/(1-t) = t
    (4, 3, 5, 1e-250, 1e-250, _T_SMALL * (1 + 1e-12), True),  # ... and above it
    (10, 100, 12, 1e300, 1e300, 1e300, True),  # lambda_W lambda_H overflows: zero regime
    (10, 100, 12, 1.7e308, 1.7e308, 1.7e308, True),  # t overflows too
    (3, 2, 4, 1e300, 1e-300, 0.1, True),  # product 1 >= 1/(NK): zero, with lambda_H/lambda_W = 1e-600
    (3, 2, 4, 1e-300, 1e290, 0.1, True),  # product 1e-10: simplex_etf, lambda_H/lambda_W = 1e590
    (3, 2, 4, 1e-300, 1e290, 1e308, True),  # 0.5 lambda_b K overflows; b* underflows (shifted)
    (10, 100, 12, 1e-3, 1e-3, 1.7e308, True),  # shifted, b* ~ 6e-311: below the normal range
    (10, 100, 12, 1e-200, 1e-200, 1.7e308, True),  # shifted, off the direct path, b* underflows
    (5, 3, 2, 1e-200, 1e-200, 1e-300, True),  # low_rank
    (5, 3, 4, 1e-200, 1e-200, 1e300, True),  # simplex_etf_d=K-1
    (5, 3, 7, 1e-200, 1e-200, 0.0, False),  # no_bias_orthogonal
    (5, 3, 2, 1e-250, 1e250, 0.0, False),  # no_bias_low_rank, extreme ratio
    (4, 3, 5, 1e-154, 1e-155, 0.0, True),  # product 1e-309 would be subnormal (flushed by XLA): simplex, lb = 0
    (4, 3, 5, 0.0, 0.0, 1e-300, True),  # unregularized W, H: shifted with b* = 0
]


@pytest.mark.parametrize("case", EXTREME, ids=lambda c: "K{}n{}d{}-lw{:.3g}-lh{:.3g}-lb{:.3g}-{}".format(*c[:6], "bias" if c[6] else "nobias"))
def test_extreme_lambdas_match_an_exact_reference(case):
    K, n, d, lw, lh, lb, bias = case
    regime, beta, value = _exact_reference(*case)
    gm = theory.global_minimum(UFMProblem(K, n, d, lw, lh, lb, bias=bias))
    assert theory.regime_name(gm.regime) == regime
    # b* to a few ulps where it is a normal float; below that XLA flushes it to 0
    np.testing.assert_allclose(float(gm.bias), beta, rtol=4e-16, atol=_TINY)
    np.testing.assert_allclose(float(gm.value), value, rtol=1e-14, atol=_TINY)
    for leaf in jax.tree.leaves(gm.params):
        assert np.all(np.isfinite(np.asarray(leaf)))
    pred = theory.nc_predictions(UFMProblem(K, n, d, lw, lh, lb, bias=bias))
    assert all(np.all(np.isfinite(np.asarray(x))) for x in pred)
    if regime != "zero":
        np.testing.assert_allclose(np.linalg.norm(pred.gram), 1.0, rtol=1e-14)


def test_underflowing_product_no_longer_flips_the_regime():
    """The issue's example: lambda_W lambda_H = 1e-400 underflows to 0 in float64, so t was 0
    and lambda_b = 1e-300 > 0 read as shifted_etf with b* = 0."""
    p = UFMProblem(10, 100, 512, 1e-200, 1e-200, 1e-300)
    gm = theory.global_minimum(p)
    assert theory.regime_name(gm.regime) == "simplex_etf"
    np.testing.assert_allclose(float(gm.bias), 1 / (10 * (1 + 1e-300)), rtol=1e-16)
    np.testing.assert_allclose(float(gm.lambda_b_threshold), 1e-200 * np.sqrt(10 * 1000), rtol=1e-15)


def test_extreme_lambdas_stay_differentiable_and_vmappable():
    def value(lw, lh, lb):
        return theory.global_minimum(UFMProblem(4, 3, 5, lw, lh, lb)).value

    lw = [1e-200, 1e-2, 1e300]
    lh = [1e-200, 2e-2, 1e300]
    lb = [1e-300, 1.0, 1e300]
    values, grads = jax.jit(jax.vmap(jax.value_and_grad(value, argnums=(0, 1, 2))))(
        *map(jnp.asarray, (lw, lh, lb))
    )
    want = [_exact_reference(4, 3, 5, a, b, c, True)[2] for a, b, c in zip(lw, lh, lb)]
    np.testing.assert_allclose(np.asarray(values), want, rtol=1e-14)
    assert all(np.all(np.isfinite(np.asarray(g))) for g in grads)
    # d f*/d lambda_b = ||b*||^2 / 2 (envelope theorem) at the extreme point too
    np.testing.assert_allclose(grads[2][0], 0.5 * 4 * (1 / (4 * (1 + 1e-300))) ** 2, rtol=1e-12)


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("lambda_W", 5e-324, r"lambda_W = 5e-324 is not 0 but below the smallest normal float64"),
        ("lambda_b", 1e-310, r"lambda_b = 1e-310 is not 0 but below the smallest normal float64"),
    ],
)
def test_subnormal_lambdas_are_refused(field, value, match):
    p = UFMProblem(3, 2, 4, 0.1, 0.1, 0.1).replace(**{field: value})
    with pytest.raises(ValueError, match=match):
        theory.global_minimum(p)


def test_lambdas_that_do_not_fit_float32_are_refused():
    with pytest.raises(ValueError, match="lambda_H = 1e-50 is not 0 but below the smallest normal float32"):
        theory.global_minimum(UFMProblem(3, 2, 4, 0.1, 1e-50, 0.1), dtype=jnp.float32)
    with pytest.raises(ValueError, match=r"lambda_b = 1e\+300 overflows float32"):
        theory.global_minimum(UFMProblem(3, 2, 4, 0.1, 0.1, 1e300), dtype=jnp.float32)


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    "call,exc,match",
    [
        (lambda p: theory.lemma_b2_critical_point(p, -1), ValueError, r"kept must be a count in \[0, 3\] .*got the count -1"),
        (lambda p: theory.lemma_b2_critical_point(p, 4), ValueError, r"kept must be a count in \[0, 3\] .*got the count 4"),
        (lambda p: theory.lemma_b2_critical_point(p, (0, 0)), ValueError, r"kept must be distinct indices in \[0, 3\)"),
        (lambda p: theory.lemma_b2_critical_point(p, (0, 3)), ValueError, r"kept must be distinct indices in \[0, 3\)"),
        (lambda p: theory.lemma_b2_critical_point(p, (-1,)), ValueError, r"kept must be distinct indices in \[0, 3\)"),
        (lambda p: theory.lemma_b2_critical_point(p, 1.0), ValueError, r"kept must be a count .*got 1.0 of type float"),
        (lambda p: theory.lemma_b2_critical_point(p, True), ValueError, r"kept must be a count .*got True of type bool"),
        (lambda p: theory.lemma_b2_critical_point(p, "01"), ValueError, r"kept must be a count .*got '01' of type str"),
        (lambda p: theory.lemma_b2_critical_point(p, None), ValueError, r"kept must be a count .*got None"),
        (lambda p: theory.lemma_b2_critical_point(p, (0, 1.5)), ValueError, r"got the entry 1.5 of type float"),
        (lambda p: theory.lemma_b2_critical_point(p, np.array([[0]])), ValueError, r"got an array of shape \(1, 1\)"),
        (lambda p: theory.ufm_critical_point(p.replace(bias=True), 3), ValueError, r"kept must be a count in \[0, 2\] .*K-1 = 2"),
        (lambda p: theory.ufm_critical_point(p.replace(bias=True), -1), ValueError, r"kept must be a count in \[0, 2\]"),
        (lambda p: theory.ufm_critical_point(p.replace(bias=True), (2,)), ValueError, r"kept must be distinct indices in \[0, 2\)"),
        (lambda p: theory.factorization_critical_point(jnp.eye(3, 5), 0.01, 0.01, 2, 1), ValueError, r"kept must be a sequence .*got the int 1"),
        (lambda p: theory.factorization_critical_point(jnp.eye(3, 5), 0.01, 0.01, 2.0, (0,)), TypeError, r"feature_dim must be an integer"),
        (lambda p: theory.factorization_critical_point(jnp.eye(3, 5), 0.0, 0.01, 2, (0,)), ValueError, r"lambda_W must be finite and > 0"),
        (lambda p: theory.factorization_critical_point(jnp.eye(3, 5), 0.01, "x", 2, (0,)), TypeError, r"lambda_H must be a real number"),
        (lambda p: theory.factorization_critical_point(jnp.ones(5), 0.01, 0.01, 2, (0,)), ValueError, r"target must be a K x N array"),
        (lambda p: theory.global_minimum("problem"), TypeError, r"global_minimum: problem must be a UFMProblem"),
        (lambda p: theory.memory_estimate(None), TypeError, r"memory_estimate: problem must be a UFMProblem"),
    ],
)
def test_index_and_argument_validation(call, exc, match):
    p = UFMProblem(3, 2, 4, 1e-2, 1e-2, 0.0, bias=False)
    with pytest.raises(exc, match=match):
        call(p)


def test_valid_kept_forms_are_equivalent():
    p = UFMProblem(3, 2, 4, 1e-2, 2e-2, 0.0, bias=False)
    ref = theory.lemma_b2_critical_point(p, 2).spectrum
    for kept in ((0, 1), [0, 1], np.array([0, 1]), jnp.array([0, 1]), (np.int64(0), np.int32(1)), (jnp.int32(0), jnp.asarray(1)), np.int64(2)):
        np.testing.assert_array_equal(theory.lemma_b2_critical_point(p, kept).spectrum, ref)
    assert float(jnp.abs(theory.lemma_b2_critical_point(p, 0).params.W).max()) == 0.0  # the origin, asked for


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16, jnp.int32, jnp.complex64])
def test_theory_dtypes_other_than_float32_float64_are_a_clear_type_error(dtype):
    p = UFMProblem(3, 2, 4, 1e-2, 1e-2, 0.1)
    name = jnp.dtype(dtype).name
    for fn in (theory.global_minimum, theory.nc_predictions):
        with pytest.raises(TypeError, match=f"{fn.__name__}: dtype must be float32 or float64.*got {name}"):
            fn(p, dtype=dtype)
    with pytest.raises(TypeError, match=f"dtype must be float32 or float64.*got {name}"):
        theory.lemma_b2_critical_point(p.replace(bias=False), 1, dtype=dtype)
    # half-precision lambdas (accepted by UFMProblem) are refused here, not a LAPACK KeyError
    if dtype in (jnp.float16, jnp.bfloat16):
        q = UFMProblem(3, 2, 4, jnp.asarray(0.01, dtype), jnp.asarray(0.01, dtype), jnp.asarray(0.001, dtype))
        with pytest.raises(TypeError, match=f"nc_predictions: dtype must be float32 or float64 .*LAPACK.*got {name}"):
            theory.nc_predictions(q)


# ------------------------------------------------------------------ memory


def test_memory_estimate_grows_with_every_size():
    base = theory.memory_estimate(UFMProblem(10, 100, 512))
    assert base > 8 * (10 * 512 + 512 * 1000)  # at least W and H in float64
    for bigger in (UFMProblem(20, 100, 512), UFMProblem(10, 200, 512), UFMProblem(10, 100, 1024)):
        assert theory.memory_estimate(bigger) > base
    assert theory.memory_estimate(UFMProblem(10, 100, 512), dtype=jnp.float32) < base
    assert theory.memory_estimate(UFMProblem(10, 100, 512), predictions=False) <= base
    huge = theory.memory_estimate(UFMProblem(1_000_000, 100, 512))
    assert huge > 2**50  # petabytes: Python ints, no overflow


def test_memory_estimate_bounds_the_measured_allocation():
    """The estimate covers the arrays global_minimum and nc_predictions return and hold."""
    p = UFMProblem(4, 3, 5, 1e-2, 2e-2, 1e-2)
    gm = theory.global_minimum(p)
    pred = theory.nc_predictions(p)
    held = sum(np.asarray(x).nbytes for x in jax.tree.leaves((gm, pred)))
    assert theory.memory_estimate(p) > 2 * held


def test_singular_basis_columns_are_those_of_the_full_basis():
    full = theory._global._singular_basis(7, jnp.float64)
    for r in (1, 3, 6, 7):
        np.testing.assert_array_equal(theory._global._singular_basis(7, jnp.float64, r), full[:, :r])
    np.testing.assert_array_equal(full[:, :6], ufm.orthonormal_complement_of_ones(7))
