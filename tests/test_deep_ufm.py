"""Deep UFM: the linear closed form vs gradients, L-BFGS, dense Hessians and the explorer;
ReLU: the DNC level, its constructed points, and a point below it.

The derivation is in ``nc_jax/deep_ufm.py`` (module docstring) and docs/followups.md.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
from jax.flatten_util import ravel_pytree

from nc_jax import deep_ufm, landscape, theory
from nc_jax.deep_ufm import DeepUFMParams, DeepUFMProblem
from nc_jax.landscape import RunClass, Verdict
from nc_jax.ufm import UFMProblem

K, n = 3, 2
CASES = [  # (widths, lambda_W, lambda_H): L = 1, 2, 3 weight matrices
    ((3,), 0.01, 0.02),
    ((3, 3), 0.01, 0.02),
    ((4, 3, 3), (0.01, 0.02, 0.015), 0.01),
]
IDS = ["L1", "L2", "L3"]


def _flat(problem, params):
    flat, unravel = ravel_pytree(params)
    return flat, lambda z: deep_ufm.objective(unravel(z), problem)


@pytest.mark.parametrize("widths,lw,lh", CASES + [((2, 3), 0.01, 0.01)], ids=IDS + ["narrow"])
def test_closed_form_minimizer_is_critical_with_the_closed_form_value(widths, lw, lh):
    problem = DeepUFMProblem(K, n, widths, lambda_W=lw, lambda_H=lh)
    g = deep_ufm.global_minimum(problem)
    value, grad = jax.value_and_grad(deep_ufm.objective)(g.params, problem)
    assert float(jnp.linalg.norm(ravel_pytree(grad)[0])) < 1e-10
    np.testing.assert_allclose(float(value), g.value, rtol=1e-12, atol=0)
    assert g.num_on == problem.max_rank and g.on.sum() == g.num_on
    # phi(p) = (p - s)^2/(2N) + (m/2) lambda_bar p^(2/m): the brute-force scalar minimum agrees
    br, m, N = g.branch, problem.num_factors, problem.num_samples
    p = np.linspace(1e-6, 2 * br.s, 200001)
    phi = (p - br.s) ** 2 / (2 * N) + 0.5 * m * br.lambda_bar * p ** (2.0 / m)
    assert abs(phi.min() - br.value_on) < 1e-9 and abs(p[phi.argmin()] - br.p) < 1e-4
    # and the balanced factors realise it: sum_i lambda_i a_i^2 / 2 = (m/2) lambda_bar p^(2/m)
    decays = np.asarray([lh, *np.broadcast_to(lw, (problem.depth,))])
    np.testing.assert_allclose(0.5 * np.sum(decays * br.magnitudes**2), 0.5 * m * br.lambda_bar * br.p ** (2 / m),
                               rtol=1e-13)
    np.testing.assert_allclose(np.prod(br.magnitudes), br.p, rtol=1e-13)


def test_one_layer_agrees_with_the_ufm_theorem():
    for lw, lh in ((0.01, 0.02), (0.05, 0.1), (0.2, 0.3)):  # the last: above 1/(N K), all off
        deep = deep_ufm.global_minimum(DeepUFMProblem(K, n, (3,), lambda_W=lw, lambda_H=lh))
        ufm = theory.global_minimum(UFMProblem(K, n, 3, lambda_W=lw, lambda_H=lh, bias=False))
        np.testing.assert_allclose(deep.value, float(ufm.value), rtol=1e-12)
        # L = 1 is benign: one local-minimum level
        levels = deep_ufm.local_minimum_values(DeepUFMProblem(K, n, (3,), lambda_W=lw, lambda_H=lh))
        np.testing.assert_allclose(levels.values, [deep.value], rtol=1e-12)


def test_levels_are_r_on_plus_rest_off():
    problem = DeepUFMProblem(K, n, (3, 3), lambda_W=0.01, lambda_H=0.02)
    lv = deep_ufm.local_minimum_values(problem)
    br = deep_ufm.scalar_branch(problem)
    np.testing.assert_array_equal(np.sort(lv.num_on), np.arange(4))
    np.testing.assert_allclose(lv.values, np.sort([r * br.value_on + (K - r) / (2 * K) for r in range(4)]),
                               rtol=1e-14)
    np.testing.assert_array_equal(lv.multiplicity, [math.comb(K, int(r)) for r in lv.num_on])
    assert lv.patterns.sum(axis=1).tolist() == lv.num_on.tolist()
    for r, v in zip(lv.num_on, lv.values):  # each level is the value of a constructed critical point
        x = deep_ufm.critical_point(problem, int(r))
        val, grad = jax.value_and_grad(deep_ufm.objective)(x, problem)
        np.testing.assert_allclose(float(val), v, rtol=1e-12)
        assert float(jnp.linalg.norm(ravel_pytree(grad)[0])) < 1e-10
    # large weight decay: the on branch exists but is above off, the global minimum is the origin
    big = DeepUFMProblem(K, n, (3, 3), lambda_W=0.11, lambda_H=0.11)
    bb = deep_ufm.scalar_branch(big)
    assert bb.exists and bb.value_on > bb.value_off
    g = deep_ufm.global_minimum(big)
    assert g.num_on == 0 and g.value == pytest.approx(0.5, rel=1e-15)
    assert deep_ufm.local_minimum_values(big).values[0] == g.value


@pytest.mark.parametrize("widths,lw,lh", CASES + [((4, 3, 3, 3), (0.01, 0.005, 0.01, 0.02), 0.01)],
                         ids=IDS + ["L4"])
def test_lbfgs_never_beats_the_closed_form_and_reaches_it(widths, lw, lh):
    problem = DeepUFMProblem(K, n, widths, lambda_W=lw, lambda_H=lh)
    f_star = deep_ufm.global_minimum(problem).value
    x0, f = _flat(problem, deep_ufm.init_params(jax.random.key(0), problem))
    fg = jax.jit(jax.value_and_grad(f))

    def fun(z):
        v, g = fg(jnp.asarray(z))
        return float(v), np.asarray(g, dtype=np.float64)

    finals = []
    for i, scale in enumerate((0.5, 1.0, 1.5, 0.8, 1.2)):
        z0, _ = ravel_pytree(deep_ufm.init_params(jax.random.key(i + 1), problem, scale))
        res = scipy.optimize.minimize(fun, np.asarray(z0), jac=True, method="L-BFGS-B",
                                      options=dict(maxiter=5000, gtol=1e-13, ftol=1e-16, maxcor=30))
        finals.append(res.fun)
    finals = np.asarray(finals)
    assert np.all(finals >= f_star - 1e-10), (finals, f_star)
    assert np.min(np.abs(finals - f_star)) < 1e-9, (finals, f_star)


def _orbit_tangents(problem, params):
    """Generators of the symmetry orbit at ``params`` (flattened): rotations of every
    hidden space (A_{j-1} -> Q A_{j-1}, A_j -> A_j Q^T) and, Y having K equal singular
    values, of Y's singular pairs (W_L -> R W_L, H -> H S^T with Y S = R Y)."""
    factors = [params.H, *params.Ws]
    dims = [problem.num_samples, *problem.widths, problem.num_classes]
    V = np.asarray(deep_ufm.one_hot_targets(problem)).T / math.sqrt(n)  # N x K right singular vectors

    def skews(d):
        for a in range(d):
            for b in range(a + 1, d):
                A = np.zeros((d, d))
                A[a, b], A[b, a] = 1.0, -1.0
                yield A

    out = []
    for j in range(1, len(dims) - 1):  # hidden space j sits between factor j-1 and factor j
        for A in skews(dims[j]):
            t = [np.zeros_like(np.asarray(x)) for x in factors]
            t[j - 1] = A @ np.asarray(factors[j - 1])
            t[j] = -np.asarray(factors[j]) @ A
            out.append(t)
    for B in skews(problem.num_classes):
        t = [np.zeros_like(np.asarray(x)) for x in factors]
        t[-1] = B @ np.asarray(factors[-1])
        t[0] = -np.asarray(factors[0]) @ (V @ B @ V.T)
        out.append(t)
    return np.stack([ravel_pytree(DeepUFMParams(jnp.asarray(t[0]), tuple(map(jnp.asarray, t[1:]))))[0]
                     for t in out])


@pytest.mark.parametrize("widths,lw,lh", CASES[1:], ids=IDS[1:])
def test_switched_off_points_are_local_minima_for_three_or_more_factors(widths, lw, lh):
    problem = DeepUFMProblem(K, n, widths, lambda_W=lw, lambda_H=lh)
    decays = np.asarray([lh, *np.broadcast_to(lw, (problem.depth,))])
    _, f = _flat(problem, deep_ufm.critical_point(problem, 0))
    hess = jax.jit(jax.hessian(f))  # one compilation for every r
    for r in range(problem.max_rank):  # r on, K - r >= 1 off
        x = deep_ufm.critical_point(problem, r)
        ev, vecs = np.linalg.eigh(np.asarray(hess(ravel_pytree(x)[0])))
        if r == 0:  # the origin: the Hessian is exactly diag(lambda_H, lambda_W_1, ..., lambda_W_L)
            np.testing.assert_allclose(ev[0], decays.min(), rtol=1e-12)
            continue
        assert ev[0] > -1e-10  # PSD
        # its kernel is exactly the tangent space of the symmetry orbit (a local minimum
        # modulo symmetry: positive definite on the complement)
        T = _orbit_tangents(problem, x)
        rank = np.linalg.matrix_rank(T, tol=1e-9)
        zero = np.abs(ev) < 1e-9
        assert zero.sum() == rank, (zero.sum(), rank)
        kernel = vecs[:, zero]
        Q = np.linalg.svd(T.T, full_matrices=False)[0][:, :rank]  # orthonormal basis of the tangents
        np.testing.assert_allclose(np.linalg.norm(kernel - Q @ (Q.T @ kernel)), 0.0, atol=1e-8)
        # off the orbit: the smallest curvature is the smallest weight decay (an unused
        # unit's entries that no second-order term reaches are eigenvectors with eigenvalue
        # lambda_i; nothing is flatter, checked here)
        np.testing.assert_allclose(ev[~zero][0], decays.min(), rtol=1e-8)


def test_one_layer_switched_off_point_is_a_strict_saddle():
    lw, lh = 0.01, 0.02
    problem = DeepUFMProblem(K, n, (3,), lambda_W=lw, lambda_H=lh)
    N, s = problem.num_samples, math.sqrt(n)
    # off direction j with unit j unused: Hessian block [[lambda_W, -s/N], [-s/N, lambda_H]]
    predicted = 0.5 * (lw + lh) - math.sqrt(0.25 * (lw - lh) ** 2 + s**2 / N**2)
    assert predicted < 0
    _, f = _flat(problem, deep_ufm.critical_point(problem, 0))
    hess = jax.jit(jax.hessian(f))
    for r in range(3):
        ev = np.linalg.eigvalsh(np.asarray(hess(ravel_pytree(deep_ufm.critical_point(problem, r))[0])))
        np.testing.assert_allclose(ev[0], predicted, rtol=1e-10)


@pytest.mark.slow
def test_explorer_finds_certified_spurious_minima(key):
    problem = DeepUFMProblem(K, n, (3, 3), lambda_W=0.01, lambda_H=0.01)
    levels = deep_ufm.local_minimum_values(problem).values
    res = landscape.explore(deep_ufm.model(problem), problem, key=key, num_inits=16, scales=(0.01, 0.03, 0.1),
                            num_steps=2000, learning_rate=0.1)
    s = landscape.summarize(res)
    assert s.verdict == Verdict.SPURIOUS, s.reasons
    np.testing.assert_allclose(res.f_star, levels[0], rtol=1e-12)
    for v in s.minimum_values:  # every level found is a predicted one
        assert np.min(np.abs(levels - v)) < 1e-8, (v, levels)
    assert len(s.minimum_values) >= 3
    labels = np.asarray(res.classification.label)
    spurious = labels == RunClass.SPURIOUS_LOCAL_MINIMUM
    assert spurious.any() and s.counts["global_minimum"] >= 1
    # the strict ones are the origin (f_0 = 1/2), Hessian lambda I
    np.testing.assert_allclose(res.value[spurious], 0.5, rtol=1e-9)
    np.testing.assert_allclose(np.asarray(res.classification.lambda_min)[spurious], 0.01, rtol=1e-6)


def test_problem_validation():
    p = DeepUFMProblem(K, n, (4, 3), lambda_W=0.1, lambda_H=0.2)
    assert p.lambda_W == (0.1, 0.1) and p.num_factors == 3 and p.max_rank == 3
    leaves, tree = jax.tree.flatten(p)
    assert len(leaves) == 4 and jax.tree.unflatten(tree, leaves) == p
    with pytest.raises(ValueError, match=r"lambda_W must be one value or a tuple of len\(widths\) = 2"):
        DeepUFMProblem(K, n, (4, 3), lambda_W=(0.1,))
    with pytest.raises(ValueError, match=r"lambda_W\[1\] must be finite and > 0.*-0.1"):
        DeepUFMProblem(K, n, (4, 3), lambda_W=(0.1, -0.1))
    with pytest.raises(ValueError, match=r"lambda_H must be finite and > 0"):
        DeepUFMProblem(K, n, (4, 3), lambda_H=0.0)
    with pytest.raises(ValueError, match=r"widths\[1\] must be an integer >= 1; got 0"):
        DeepUFMProblem(K, n, (4, 0))
    with pytest.raises(ValueError, match="activation must be one of"):
        DeepUFMProblem(K, n, (4,), activation="tanh")
    with pytest.raises(ValueError, match=r"num_on must be in \[0, r_max"):
        deep_ufm.critical_point(p, 4)
    with pytest.raises(ValueError, match="params.Ws"):
        deep_ufm.objective(DeepUFMParams(jnp.zeros((4, 6)), (jnp.zeros((3, 4)),)), p)
    # the lambdas are leaves: grad reaches them, sweeps do not retrace
    x = deep_ufm.init_params(jax.random.key(1), p, 0.5)
    g = jax.grad(lambda q: deep_ufm.objective(x, q))(p)
    np.testing.assert_allclose(float(g.lambda_H), 0.5 * float(jnp.sum(x.H**2)), rtol=1e-12)


# ---- ReLU: the DNC level (module docstring, item 6) -----------------------------------------


def _forward_numpy(params, problem):
    Z = np.asarray(params.H)
    for i, W in enumerate(params.Ws):
        Z = np.asarray(W) @ Z
        if i < problem.depth - 1:
            Z = np.maximum(Z, 0.0)
    Y = np.asarray(deep_ufm.one_hot_targets(problem))
    lams = [float(problem.lambda_H)] + [float(v) for v in problem.lambda_W]
    mats = [params.H, *params.Ws]
    return 0.5 * np.sum((Z - Y) ** 2) / problem.num_samples + sum(0.5 * l * np.sum(np.asarray(A) ** 2)
                                                                   for l, A in zip(lams, mats))


def test_relu_objective_rectifies_the_hidden_layers_only():
    p = DeepUFMProblem(K, n, (4, 3, 5), lambda_W=(0.01, 0.02, 0.03), lambda_H=0.02, activation="relu")
    x = deep_ufm.init_params(jax.random.key(3), p, 1.0)
    np.testing.assert_allclose(float(deep_ufm.objective(x, p)), _forward_numpy(x, p), rtol=1e-13)
    # the forward pass by hand: each layer multiplies the rectified output of the one before
    pre = deep_ufm.pre_activations(x, p)
    Z = np.asarray(x.H)
    for W, got in zip(x.Ws, pre):
        Z = np.asarray(W) @ Z
        np.testing.assert_allclose(np.asarray(got), Z, rtol=1e-13, atol=1e-14)
        Z = np.maximum(Z, 0.0)
    assert float(deep_ufm.objective(x, p)) != pytest.approx(float(deep_ufm.objective(x, p.replace(activation="linear"))))
    one = DeepUFMProblem(K, n, (4,), lambda_W=0.01, lambda_H=0.02)  # L = 1: nothing to rectify
    y = deep_ufm.init_params(jax.random.key(4), one, 1.0)
    assert float(deep_ufm.objective(y, one.replace(activation="relu"))) == float(deep_ufm.objective(y, one))


@pytest.mark.parametrize("Kc,widths", [(3, (2, 3)), (4, (4, 5, 4)), (2, (1, 3, 3, 3))])
def test_dnc_points_reach_the_dnc_value(Kc, widths):
    p = DeepUFMProblem(Kc, 2, widths, lambda_W=0.01, lambda_H=0.02, activation="relu")
    f_dnc = deep_ufm.dnc_value(p)
    # the level is the deep linear f_K (all directions on)
    br = deep_ufm.scalar_branch(p)
    np.testing.assert_allclose(f_dnc, Kc * br.value_on, rtol=1e-15)
    firsts = ["simplex"] + (["orthogonal"] if widths[0] >= Kc else [])
    for fl in firsts:
        x = deep_ufm.dnc_point(p, first_layer=fl)
        np.testing.assert_allclose(float(deep_ufm.objective(x, p)), f_dnc, rtol=1e-12)
        np.testing.assert_allclose(_forward_numpy(x, p), f_dnc, rtol=1e-12)
    if widths[0] >= Kc:  # linear twin: the orthogonal DNC point is the linear minimizer with all on
        lin = p.replace(activation="linear")
        gm = deep_ufm.global_minimum(lin)
        assert gm.num_on == Kc
        np.testing.assert_allclose(gm.value, f_dnc, rtol=1e-13)


def test_two_layer_simplex_dnc_is_a_smooth_second_order_point():
    """L = 2 with an ETF first layer: every pre-activation is +beta or -beta/(K-1), away from the
    kink, so gradient and Hessian are the classical ones: zero gradient, PSD Hessian."""
    p = DeepUFMProblem(4, 2, (3, 5), lambda_W=0.01, lambda_H=0.02, activation="relu")
    x = deep_ufm.dnc_point(p, first_layer="simplex")
    pre = np.asarray(x.Ws[0] @ x.H)[:4]
    beta = pre.max()
    np.testing.assert_allclose(np.sort(np.unique(np.round(pre / beta, 12))), [-1 / 3, 1.0], atol=1e-12)
    assert np.all(np.abs(np.asarray(x.Ws[0] @ x.H)[4:]) == 0.0)  # unused units: zero rows of W_1
    flat, fun = _flat(p, x)
    assert float(jnp.linalg.norm(jax.grad(fun)(flat))) < 1e-12
    eig = np.linalg.eigvalsh(np.asarray(jax.hessian(fun)(flat)))
    assert eig[0] > -1e-12, eig[:3]


def test_saved_relu_points_are_below_dnc():
    """Sukenik, Lampert, Mondelli 2024: beyond two layers and two classes DNC is not optimal.
    The points ``experiments/followups_deep_relu.py`` found (saved in docs/followups/), evaluated
    here by an independent numpy forward pass, lie below the closed-form DNC level, and some
    rectified layer of each has class means of numerical rank below K (the low-rank bias)."""
    import json
    from pathlib import Path

    points = json.loads((Path(__file__).parents[1] / "docs/followups/deep_relu_counterexamples.json").read_text())
    assert len(points) >= 2 and all(c["K"] >= 3 and c["L"] >= 3 for c in points)
    low_rank = 0
    for c in points:
        p = DeepUFMProblem(c["K"], c["n"], tuple(c["widths"]), lambda_W=c["lambda"], lambda_H=c["lambda"],
                           activation="relu")
        H, Ws = c["counterexample_params"]
        x = DeepUFMParams(np.asarray(H), tuple(np.asarray(W) for W in Ws))
        f_dnc = deep_ufm.dnc_value(p)
        np.testing.assert_allclose(f_dnc, c["f_dnc"], rtol=1e-13)
        value = _forward_numpy(x, p)
        np.testing.assert_allclose(value, c["counterexample_value"], rtol=1e-12)
        assert value < f_dnc * (1 - 1e-2), (c["K"], c["L"], value, f_dnc)
        Z = x.H
        for W in x.Ws[:-1]:
            Z = np.maximum(W @ Z, 0.0)
            s = np.linalg.svd(Z.reshape(Z.shape[0], c["K"], c["n"]).mean(axis=2), compute_uv=False)
            low_rank += int(s[-1] < 0.05 * s[0]) if len(s) >= c["K"] else 1
    assert low_rank >= 1


def test_relu_kinks_count_pre_activations_at_zero():
    p = DeepUFMProblem(3, 2, (4, 4), lambda_W=0.01, lambda_H=0.01, activation="relu")
    # orthogonal DNC at L = 2: the K(K-1) off-class pre-activations of the K used units are 0,
    # per sample (n = 2); the simplex one has none (they are -beta/(K-1))
    assert int(deep_ufm.relu_kinks(deep_ufm.dnc_point(p), p)["kinks"]) == 3 * 2 * 2
    assert int(deep_ufm.relu_kinks(deep_ufm.dnc_point(p, first_layer="simplex"), p)["kinks"]) == 0
    lin = p.replace(activation="linear")
    assert int(deep_ufm.relu_kinks(deep_ufm.dnc_point(lin), lin)["kinks"]) == 0
    x = deep_ufm.init_params(jax.random.key(0), p)
    assert int(jax.jit(deep_ufm.relu_kinks)(x, p)["kinks"]) == 0  # generic point


@pytest.mark.slow
def test_explorer_on_relu_finds_dnc_and_smooth_second_order_points_above_it(key):
    """K = 3, L = 2 (three factors): the explorer's levels are the deep linear levels f_r (the
    lowest f_DNC = f_3), and some endpoint at f_2 > f_DNC is kink-free with a PSD Hessian:
    a second-order point above DNC where the objective is smooth (the landscape is not benign)."""
    p = DeepUFMProblem(3, 1, (4, 4), lambda_W=0.01, lambda_H=0.01, activation="relu")
    res = landscape.explore(deep_ufm.model(p), p, key=jax.random.key(0), num_inits=8, scales=(0.5, 1.0),
                            num_steps=3000, learning_rate=0.05)
    s = landscape.summarize(res)
    assert s.verdict == Verdict.MULTIPLE_LEVELS, s.reasons
    levels = deep_ufm.local_minimum_values(p.replace(activation="linear")).values
    np.testing.assert_allclose(s.minimum_values[0], deep_ufm.dnc_value(p), rtol=1e-9)
    for v in s.minimum_values:
        assert np.min(np.abs(levels - v)) < 1e-8, (v, levels)
    names = np.asarray(landscape.class_names(res.classification.label))
    kinks = np.asarray(res.measurements["kinks"])
    smooth_above = (names == "degenerate") & (kinks == 0) & (np.asarray(res.value) > deep_ufm.dnc_value(p) + 1e-3)
    assert smooth_above.any(), (names, kinks, res.value)
    assert np.all(np.asarray(res.classification.lambda_min)[smooth_above] > -1e-10)


@pytest.mark.parametrize("activation", ["linear", "relu"])
def test_bias_shifts_the_output_and_is_stationary_at_the_mean_residual(activation):
    """With a bias: f adds b to every output column and lambda_b/2 ||b||^2; at an L-BFGS
    minimum with lambda_b = 0 the residual has zero mean over samples (df/db = 0), and the
    optimum is no higher than without the bias (it can only help)."""
    p = DeepUFMProblem(3, 2, (3, 3), lambda_W=0.01, lambda_H=0.01, activation=activation, bias=True,
                       lambda_b=0.0)
    x = deep_ufm.init_params(jax.random.key(5), p, 1.0)
    no_b = p.replace(bias=False)
    x0 = DeepUFMParams(x.H, x.Ws)
    # the output shift, by hand: f(b) - f(0) = (2 <b, sum_i r_i> + N ||b||^2) / (2N)
    Z = np.asarray(x.H)
    for i, W in enumerate(x.Ws):
        Z = np.asarray(W) @ Z
        Z = np.maximum(Z, 0.0) if (activation == "relu" and i < 1) else Z
    r = Z - np.asarray(deep_ufm.one_hot_targets(p))
    b, N = np.asarray(x.b), p.num_samples
    np.testing.assert_allclose(float(deep_ufm.objective(x, p)) - float(deep_ufm.objective(x0, no_b)),
                               (2 * b @ r.sum(axis=1) + N * b @ b) / (2 * N), rtol=1e-12)
    lam_b = p.replace(lambda_b=0.3)
    np.testing.assert_allclose(float(deep_ufm.objective(x, lam_b)) - float(deep_ufm.objective(x, p)),
                               0.15 * b @ b, rtol=1e-12)
    flat, fun = _flat(p, x)
    fg = jax.jit(jax.value_and_grad(fun))
    res = scipy.optimize.minimize(lambda z: tuple(np.asarray(a, np.float64) for a in fg(jnp.asarray(z))),
                                  np.asarray(flat), jac=True, method="L-BFGS-B",
                                  options=dict(maxiter=5000, gtol=1e-12, ftol=1e-16))
    _, unravel = ravel_pytree(x)
    y = unravel(jnp.asarray(res.x))
    Zy = y.H
    for i, W in enumerate(y.Ws):
        Zy = W @ Zy
        Zy = jax.nn.relu(Zy) if (activation == "relu" and i < 1) else Zy
    resid = np.asarray(Zy + y.b[:, None] - deep_ufm.one_hot_targets(p))
    np.testing.assert_allclose(resid.mean(axis=1), 0.0, atol=1e-8)
    if activation == "linear":
        assert res.fun <= deep_ufm.global_minimum(no_b).value + 1e-10


def test_bias_validation_and_closed_forms_refuse_it():
    p = DeepUFMProblem(3, 2, (3, 3), lambda_W=0.01, lambda_H=0.01, bias=True, lambda_b=0.1)
    leaves, tree = jax.tree.flatten(p)
    assert len(leaves) == 4 and jax.tree.unflatten(tree, leaves) == p
    for fn in (deep_ufm.global_minimum, deep_ufm.local_minimum_values, deep_ufm.dnc_value, deep_ufm.dnc_point):
        with pytest.raises(ValueError, match="needs bias=False"):
            fn(p)
    with pytest.raises(ValueError, match=r"lambda_b must be finite and >= 0.*-0.1"):
        DeepUFMProblem(3, 2, (3, 3), bias=True, lambda_b=-0.1)
    with pytest.raises(TypeError, match="bias must be a bool"):
        DeepUFMProblem(3, 2, (3, 3), bias="yes")
    x = deep_ufm.init_params(jax.random.key(0), p)
    with pytest.raises(ValueError, match=r"params.b must have shape \(K,\) = \(3,\)"):
        deep_ufm.objective(DeepUFMParams(x.H, x.Ws), p)
    with pytest.raises(ValueError, match="params.b must be None with bias=False"):
        deep_ufm.objective(x, p.replace(bias=False))
    assert deep_ufm.model(p).global_value is None
    # the factors' random draws do not depend on the bias
    y = deep_ufm.init_params(jax.random.key(0), p.replace(bias=False))
    assert y.b is None and all(bool(jnp.all(a == c)) for a, c in zip(jax.tree.leaves((x.H, x.Ws)),
                                                                      jax.tree.leaves((y.H, y.Ws))))


def test_relu_validation():
    p = DeepUFMProblem(3, 2, (3, 3), lambda_W=0.01, lambda_H=0.01, activation="relu")
    for fn in (deep_ufm.global_minimum, deep_ufm.local_minimum_values):
        with pytest.raises(ValueError, match="needs activation='linear'.*dnc_value"):
            fn(p)
    with pytest.raises(ValueError, match="first_layer must be 'orthogonal' or 'simplex'"):
        deep_ufm.dnc_point(p, first_layer="etf")
    with pytest.raises(ValueError, match=r"widths must be >= K = 3 \(d_1 >= 3"):
        deep_ufm.dnc_point(p.replace(widths=(2, 3)))
    with pytest.raises(ValueError, match="first_layer='simplex' needs activation='relu'"):
        deep_ufm.dnc_point(p.replace(activation="linear"), first_layer="simplex")
    with pytest.raises(ValueError, match="no 'on' branch"):
        deep_ufm.dnc_value(p.replace(lambda_W=1.0, lambda_H=1.0))
    assert deep_ufm.model(p).global_value is None and deep_ufm.model(p.replace(activation="linear")).global_value
