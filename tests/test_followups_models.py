"""Follow-up models (issue 12): the class-mean UFM is exact (values, gradients, inertia of the
full UFM), minority-collapse onset against the closed-form threshold, condition numbers
modulo rotations against dense eigh, the ETF scalar problem of the softmax losses, and the
normalized-feature model's parametrization."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from nc_jax import class_mean_ufm as cm
from nc_jax import conditioning, solvers, sphere_ufm, theory, ufm
from nc_jax.ufm import UFMParams, UFMProblem


def _dense_hessian(f, params, *args):
    H = np.asarray(conditioning.dense_hessian(f)(params, *args))
    return 0.5 * (H + H.T)


@functools.lru_cache(maxsize=None)
def _jit_grad(f):
    return jax.jit(jax.grad(f))


def _grad_norm(f, params, *args):
    return float(jnp.linalg.norm(ravel_pytree(_jit_grad(f)(params, *args))[0]))


def _inertia(H, tol):
    eig = np.linalg.eigvalsh(H)
    return int(np.sum(eig < -tol)), int(np.sum(np.abs(eig) <= tol))


def _random_point(key, problem):
    return cm.init(key, 0.7, problem)


# ----------------------------------------------------------------------------- class-mean UFM


@pytest.mark.parametrize("loss", ["mse", "ce", "label_smoothing", "focal"])
@pytest.mark.parametrize("bias", [True, False])
def test_class_mean_objective_is_the_full_objective_at_collapsed_features(loss, bias, key):
    p = cm.ClassMeanUFM(jnp.asarray([3.0, 1.0, 2.0]), 3, 0.02, 0.03, 0.01, bias=bias, loss=loss)
    x = _random_point(key, p)
    full = cm.full_problem(p)
    np.testing.assert_allclose(cm.objective(x, p), ufm.objective(cm.lift(x, p), full), rtol=1e-13)
    # the weights matter: the same class means under other sizes give another value
    q = p.replace(class_sizes=jnp.asarray([1.0, 3.0, 2.0]))
    assert abs(float(ufm.objective(cm.lift(x, q), cm.full_problem(q))) - float(cm.objective(x, p))) > 1e-6


def test_real_size_optimum_formula_matches_theory_for_integer_sizes():
    for sizes, d, lam in (((20, 20, 3), 4, math.sqrt(3.5) / 43), ((5, 2, 2, 1), 3, 0.03)):
        p = cm.ClassMeanUFM(jnp.asarray(sizes, float), d, lam, lam, 0.0, bias=False, loss="mse")
        np.testing.assert_allclose(cm.mse_no_bias_optimum(p), float(theory.global_minimum(cm.full_problem(p)).value),
                                   rtol=1e-13)


def test_inertia_of_the_class_mean_hessian_is_the_full_one():
    """At critical points (the global minimizer and two saddles) the full UFM Hessian has
    exactly the negative eigenvalues of the class-mean one (mse, no bias: closed form)."""
    sizes = (4, 2, 1)
    full = UFMProblem(3, sizes, 3, 0.02, 0.02, 0.0, bias=False)
    p = cm.ClassMeanUFM(jnp.asarray(sizes, float), 3, 0.02, 0.02, 0.0, bias=False, loss="mse")
    _, params, alive, _ = theory.imbalanced_global_minimum(full)
    assert bool(np.all(alive))
    n = np.asarray(sizes, float)
    means = np.asarray(params.H)[:, np.cumsum(sizes) - 1]  # one column per class
    counts = []
    for kill in (None, 0, 2):
        W, M = np.array(params.W), means.copy()
        if kill is not None:
            W[kill], M[:, kill] = 0.0, 0.0
        x = UFMParams(jnp.asarray(W), jnp.asarray(M * np.sqrt(n)[None, :]), None)
        assert _grad_norm(cm.objective, x, p) < 1e-12
        lifted = cm.lift(x, p)
        assert _grad_norm(ufm.objective, lifted, full) < 1e-12
        neg_r, _ = _inertia(_dense_hessian(cm.objective, x, p), 1e-10)
        neg_f, _ = _inertia(_dense_hessian(ufm.objective, lifted, full), 1e-10)
        assert neg_r == neg_f
        counts.append(neg_f)
    assert counts[0] == 0 and counts[1] > 0 and counts[2] > 0  # minimum, then two strict saddles


@functools.partial(jax.jit, static_argnames=("num",))
def _newton_class_mean(key, problem, *, num):
    def one(k):
        res = solvers.trust_region_newton(cm.objective, cm.init(k, 1.0, problem), problem, grad_tol=1e-11,
                                          max_iters=400)
        return res.params, res.value, res.grad_norm

    return jax.lax.map(one, jax.random.split(key, num))


def _found_minimum(problem, key, num=3):
    params, values, gnorms = _newton_class_mean(key, problem, num=num)
    i = int(np.argmin(np.where(np.asarray(gnorms) <= 1e-10, values, np.inf)))
    assert float(gnorms[i]) <= 1e-10
    return jax.tree.map(lambda x: x[i], params), float(values[i])


def test_minority_collapse_onset_matches_the_closed_form_threshold(key):
    """K = 4, sizes (R, R, 1, 1), lambda = 0.05: theory R_c = 1/(2 lambda) - 1 = 9. The
    minimum found by Newton from random inits is global (= f*), critical, PSD, balanced,
    and its minority rows vanish exactly on the theory's side of R_c."""
    lam = 0.05
    assert theory_onset(lam) == pytest.approx(9.0)
    for R in (8.0, 8.75, 9.25, 10.0):
        p = cm.ClassMeanUFM(jnp.asarray([R, R, 1.0, 1.0]), 4, lam, lam, lam, bias=False, loss="mse")
        x, value = _found_minimum(p, jax.random.fold_in(key, int(4 * R)))
        np.testing.assert_allclose(value, cm.mse_no_bias_optimum(p), rtol=1e-10)
        eig = np.linalg.eigvalsh(_dense_hessian(cm.objective, x, p))
        assert eig[0] > -1e-9
        geo = cm.geometry(x, p)
        assert abs(float(geo["balance_gap"])) < 1e-9  # lambda_W ||W||^2 = lambda_H ||G||^2 at critical points
        minority = float(geo["w_norm"][-1]) / float(geo["w_norm"][0])
        assert (minority < 1e-6) == (R >= 9.0), (R, minority)
        if R < 9.0:  # alive: row norm (lambda_H/lambda_W)^(1/4) sqrt(z), z = 1 - N lambda
            np.testing.assert_allclose(float(geo["w_norm"][-1]), math.sqrt(1.0 - (2 * R + 2) * lam), rtol=1e-7)


def theory_onset(lam, n_min=1.0):
    from experiments.followups_imbalance import theory_onset as onset

    return onset(lam, n_min)


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_minority_rows_merge_at_the_same_threshold_with_bias(loss, key):
    """With a bias (MSE or CE) the minority classifier rows merge (w_3 = w_4) exactly when
    n_min <= N^2 lambda_W lambda_H, the no-bias threshold (R_c = 9 at lambda = 0.05)."""
    lam = 0.05
    for R in (8.5, 9.5):
        p = cm.ClassMeanUFM(jnp.asarray([R, R, 1.0, 1.0]), 4, lam, lam, lam, bias=True, loss=loss)
        x, _ = _found_minimum(p, jax.random.fold_in(key, int(4 * R)), num=4)
        assert np.linalg.eigvalsh(_dense_hessian(cm.objective, x, p))[0] > -1e-9
        geo = cm.geometry(x, p)
        rho = float(geo["w_diff_last_two"]) / float(geo["w_diff_first_two"])
        assert (rho < 1e-6) == (R > 9.0), (R, rho)


@pytest.mark.parametrize("loss,bias", [("mse", False), ("ce", True)])
def test_merged_minority_point_is_a_strict_saddle_exactly_below_the_threshold(loss, bias, key):
    """The merged point (w_3 = w_4, g_3 = g_4, b_3 = b_4) is critical for the full class-mean
    objective; along the escape direction its curvature is the closed form
    (lambda_W + lambda_H)/2 - sqrt(((lambda_W - lambda_H)/2)^2 + n_min/N^2): negative (a strict
    saddle) iff n_min > N^2 lambda_W lambda_H, i.e. R < R_c = 1/(2 sqrt(lambda_W lambda_H)) - 1 = 11.91 here."""
    lw, lh = 0.05, 0.03
    for R in (6.0, 14.0):
        p = cm.ClassMeanUFM(jnp.asarray([R, R, 1.0, 1.0]), 4, lw, lh, 0.05, bias=bias, loss=loss)
        x, sub_grad = cm.merged_critical_point(p, key)
        assert sub_grad < 1e-10 and _grad_norm(cm.objective, x, p) < 1e-10  # symmetric criticality
        H = _dense_hessian(cm.objective, x, p)
        s = 1.0 / (2 * R + 2)
        _, vecs = np.linalg.eigh(np.array([[lw, -s], [-s, lh]]))
        D = np.asarray(ravel_pytree(cm.merge_escape_direction(x, p, *vecs[:, 0]))[0])
        predicted = cm.merge_escape_curvature(p)
        np.testing.assert_allclose(D @ H @ D / (D @ D), predicted, rtol=1e-8, atol=1e-13)
        lam_min = np.linalg.eigvalsh(H)[0]
        assert (predicted < 0) == (R < 1.0 / math.sqrt(lw * lh) / 2 - 1)
        assert lam_min <= predicted + 1e-12
        if predicted < 0:
            assert lam_min < -1e-3  # a certified strict saddle


# ----------------------------------------------------------------------------- conditioning


def test_condition_number_modulo_rotations_is_the_dense_spectrum_without_its_kernel():
    problem = UFMProblem(3, 2, 3, 5e-3, 5e-3, 5e-3)
    params = theory.global_minimum(problem).params
    c = conditioning.conditioning(ufm.objective, params, problem)
    eig = np.linalg.eigvalsh(_dense_hessian(ufm.objective, params, problem))
    assert c.orbit_dim == 3 and c.num_zero == 3  # the kernel is the rotation orbit's tangent space
    np.testing.assert_allclose(eig[3:], c.perp_eigenvalues, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(c.kappa, eig[-1] / eig[3], rtol=1e-9)
    assert np.all(np.abs(eig[:3]) < 1e-12)


@pytest.mark.parametrize("loss", ["ce", "label_smoothing", "focal"])
def test_etf_scalar_problem_gives_a_critical_point_at_the_right_value(loss):
    problem = UFMProblem(3, 2, 3, 5e-3, 5e-3, 5e-3, loss=loss)
    e = conditioning.etf_minimum(problem)
    np.testing.assert_allclose(float(ufm.objective(e.params, problem)), e.value, rtol=1e-13)
    assert _grad_norm(ufm.objective, e.params, problem) < 1e-12
    np.testing.assert_allclose(e.W_norm**2 * 5e-3, e.H_norm**2 * 5e-3, rtol=1e-12)  # balance
    slope = math.sqrt(3 * 6 * 5e-3 * 5e-3)
    grid = np.linspace(0.0, 20.0, 4001)
    phi = np.asarray(jax.vmap(lambda t: conditioning.etf_scalar_loss(t, problem))(grid)) + slope * grid
    assert phi.min() >= e.value - 1e-12
    c = conditioning.conditioning(ufm.objective, e.params, problem)
    assert c.num_zero == c.orbit_dim == 3 and c.lambda_min_perp > 0
    # the smallest curvature is lambda exactly: shifting all logits (b -> b + s 1) leaves the loss unchanged
    np.testing.assert_allclose(c.lambda_min_perp, 5e-3, rtol=1e-9)


def test_label_smoothing_minimum_is_worse_conditioned_than_ce_at_these_sizes():
    """The finding of experiments/followups_losses.py at its quick size: kappa(LS) > kappa(CE)."""
    kappa = {}
    for loss in ("ce", "label_smoothing"):
        problem = UFMProblem(3, 2, 3, 5e-3, 5e-3, 5e-3, loss=loss)
        kappa[loss] = conditioning.conditioning(ufm.objective, conditioning.etf_minimum(problem).params, problem).kappa
    assert kappa["label_smoothing"] > 2 * kappa["ce"]


# ----------------------------------------------------------------------------- normalized features


def test_sphere_parametrization_at_the_etf():
    """At the simplex ETF (d = K - 1): critical, value f*, no negative curvature, kernel =
    the rotation orbit, radial directions at curvature 2 mu."""
    K, n, d, tau, mu = 4, 2, 3, 5.0, 1.0
    problem = sphere_ufm.SphereUFM(K, n, d, tau, mu)
    M = np.asarray(ufm.simplex_etf(K, d))  # d x K unit columns
    params = sphere_ufm.SphereParams(jnp.asarray(M.T), jnp.asarray(np.repeat(M, n, axis=1)))
    np.testing.assert_allclose(float(sphere_ufm.objective(params, problem)), sphere_ufm.etf_value(problem),
                               rtol=1e-13)
    assert _grad_norm(sphere_ufm.objective, params, problem) < 1e-12
    H = _dense_hessian(sphere_ufm.objective, params, problem)
    neg, zero = _inertia(H, 1e-9)
    assert neg == 0 and zero == d * (d - 1) // 2
    # a radial direction (scale one feature vector) is an eigenvector with eigenvalue 2 mu
    v = sphere_ufm.SphereParams(jnp.zeros((K, d)), jnp.zeros((d, K * n)).at[:, 0].set(params.U[:, 0]))
    flat = ravel_pytree(v)[0]
    np.testing.assert_allclose(H @ np.asarray(flat), 2 * mu * np.asarray(flat), atol=1e-12)


def test_sphere_value_is_invariant_to_scaling_away_from_the_penalty(key):
    problem = sphere_ufm.SphereUFM(3, 2, 2, 4.0, 0.0)  # no penalty: 0-homogeneous
    params = sphere_ufm.init(key, 1.0, problem)
    scaled = sphere_ufm.SphereParams(params.V * jnp.asarray([[2.0], [0.5], [3.0]]), params.U * 1.7)
    np.testing.assert_allclose(sphere_ufm.objective(params, problem), sphere_ufm.objective(scaled, problem),
                               rtol=1e-13)


# ----------------------------------------------------------------------------- the scripts' quick modes


@pytest.mark.slow
def test_followups_imbalance_quick(tmp_path):
    from experiments import followups_imbalance

    out = followups_imbalance.main(["--quick", "--workdir", str(tmp_path)])
    s = out["summary"]["per_model"]["mse_no_bias"]
    assert s["benign_on_the_evidence"] and s["onset_within_theory_bracket"] == [(0.05, True)]
    assert s["merged_point_strict_saddle_below_R_c"] and s["merged_point_second_order_above_R_c"]
    assert s["max_escape_curvature_error"] < 1e-12
    assert (tmp_path / "followups_imbalance.png").stat().st_size > 0
    assert followups_imbalance.exit_status(out) == 0


def test_followups_imbalance_exit_status_reports_contradictions_and_missing_evidence():
    """OK only when the closed forms hold on certified cells; a contradicted onset, probe or
    no-bias verdict is DISAGREEMENT (1), an uncertified cell INCONCLUSIVE (3)."""
    import copy

    from experiments import followups_imbalance

    ok_model = {"verdicts": {"BENIGN": 2}, "merged_point_strict_saddle_below_R_c": True,
                "merged_point_second_order_above_R_c": True, "onset_within_theory_bracket": [(0.05, True)]}
    good = {"summary": {"per_model": {"mse_no_bias": ok_model, "ce": {**ok_model, "verdicts": {"SINGLE_LEVEL": 2}}}},
            "cells": [{"verdict": "BENIGN"}, {"verdict": "SINGLE_LEVEL"}]}
    assert followups_imbalance.exit_status(good) == 0
    for path, value in ((("mse_no_bias", "verdicts"), {"BENIGN": 1, "SPURIOUS": 1}),
                        (("ce", "onset_within_theory_bracket"), [(0.05, False)]),
                        (("ce", "merged_point_strict_saddle_below_R_c"), False)):
        bad = copy.deepcopy(good)
        bad["summary"]["per_model"][path[0]][path[1]] = value
        assert followups_imbalance.exit_status(bad) == 1, path
    unsure = copy.deepcopy(good)
    unsure["cells"][1]["verdict"] = "INCONCLUSIVE"
    assert followups_imbalance.exit_status(unsure) == 3


@pytest.mark.slow
def test_followups_losses_quick(tmp_path):
    from experiments import followups_losses

    s = followups_losses.main(["--quick", "--workdir", str(tmp_path)])["summary"]
    assert s["num_inconclusive"] == 0 and s["all_morse_bott"]
    assert s["max_abs_value_minus_closed_form"] < 1e-12 and s["max_abs_balance_gap"] < 1e-9
    assert s["claim_ls_better_conditioned_than_ce"] == "refuted"


@pytest.mark.slow
def test_followups_sphere_quick(tmp_path):
    from experiments import followups_sphere

    s = followups_sphere.main(["--quick", "--workdir", str(tmp_path)])["summary"]
    assert s["etf_cases_benign"] and not s["spurious_found"]


@pytest.mark.slow
def test_followups_deep_relu_quick(tmp_path):
    """At K = 4, L = 4 the descent finds a point below the DNC level (the 2024 claim) and at
    K = 2 it reaches the DNC level and nothing lower (the 2023 theorem); exit status OK."""
    import json

    from experiments import followups_deep_relu

    result = followups_deep_relu.main(["--quick", "--workdir", str(tmp_path)])
    s = result["summary"]
    assert s["dnc_points_at_closed_form"]
    assert s["sukenik_2023_two_classes"] == "evidence only" and s["sukenik_2024_beyond_two"] == "confirmed"
    assert s["min_relative_gap_beyond_two"] < -1e-2
    assert followups_deep_relu.exit_status(result) == 0
    saved = json.loads((tmp_path / "followups_deep_relu_counterexamples.json").read_text())
    assert [(c["K"], c["L"]) for c in saved] == [(4, 4)]
    # a search that stops above the DNC level is no evidence for it
    bad = {"summary": dict(s, sukenik_2023_two_classes="inconclusive")}
    assert followups_deep_relu.exit_status(bad) == 3
    assert followups_deep_relu.exit_status({"summary": dict(s, sukenik_2023_two_classes="refuted")}) == 1
