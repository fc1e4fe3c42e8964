"""The class-imbalanced UFM (n_per_class a tuple): the no-bias closed form against L-BFGS,
minority collapse at the derived threshold, and the explorer on an imbalanced problem."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nc_jax import landscape, theory, ufm
from nc_jax.ufm import UFMParams, UFMProblem


def _lbfgs_best(problem, num_starts=6, num_steps=2500):
    """Best value of L-BFGS on the full objective from several random starts (independent reference)."""
    f = lambda p: ufm.objective(UFMParams(p[0], p[1], None), problem)  # noqa: E731
    opt = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(f)

    @jax.jit
    def run(p):
        def step(carry, _):
            p, state = carry
            v, g = value_and_grad(p, state=state)
            u, state = opt.update(g, state, p, value=v, grad=g, value_fn=f)
            return (optax.apply_updates(p, u), state), None

        (p, _), _ = jax.lax.scan(step, (p, opt.init(p)), None, length=num_steps)
        return f(p)

    K, d, N = problem.num_classes, problem.feature_dim, problem.num_samples
    best = np.inf
    # optax's zoom line search mixes int32 and int64 counters: standard promotion for the reference only
    with jax.numpy_dtype_promotion("standard"):
        for s in range(num_starts):
            kW, kH = jax.random.split(jax.random.key(100 + s))
            best = min(best, float(run((jax.random.normal(kW, (K, d)), jax.random.normal(kH, (d, N))))))
    return best


CASES = [  # sizes, d, lambda_W, lambda_H: all classes alive; one collapsed; d < K; several collapsed
    ((11, 9, 7, 6), 4, 8.6e-3, 2.5e-3),
    ((6, 3, 4, 1, 1), 4, 1.7e-3, 1.9e-3),
    ((10, 7, 1, 9, 9), 3, 3.6e-2, 2.6e-2),
    ((4, 6), 1, 2.7e-3, 3.4e-3),
    ((12, 2, 5), 5, 2e-3, 1e-3),
]


@pytest.mark.parametrize("sizes,d,lw,lh", CASES[:1] + [pytest.param(*c, marks=pytest.mark.slow) for c in CASES[1:]])
def test_closed_form_matches_lbfgs_and_is_critical(sizes, d, lw, lh):
    problem = UFMProblem(len(sizes), sizes, d, lw, lh, 0.0, bias=False)
    gm = theory.global_minimum(problem)
    assert theory.regime_name(gm.regime) in ("imbalanced_no_bias", "zero")
    # the minimizer attains the value and is a critical point
    np.testing.assert_allclose(ufm.objective(gm.params, problem), gm.value, rtol=1e-12)
    grads = jax.grad(ufm.objective)(gm.params, problem)
    assert max(float(jnp.max(jnp.abs(g))) for g in (grads.W, grads.H)) < 1e-12
    # no point found by L-BFGS is lower, and the best one reaches it
    np.testing.assert_allclose(_lbfgs_best(problem), float(gm.value), rtol=1e-9, atol=1e-12)


def test_minority_collapse_at_the_threshold():
    """Row k of W* vanishes exactly when n_k <= N^2 lambda_W lambda_H."""
    sizes = (20, 20, 3)
    problem = UFMProblem(3, sizes, 4, 1e-3, 1e-3, 0.0, bias=False)
    threshold = float(theory.minority_collapse_threshold(problem))  # 43^2 1e-6 = 1.849e-3 ... n=3 alive
    _, params, alive, _ = theory.imbalanced_global_minimum(problem)
    assert list(np.asarray(alive)) == [n > threshold for n in sizes] == [True, True, True]
    # raise lambda so that N^2 lw lh crosses n_3 = 3 but not 20: the minority class collapses
    lam = np.sqrt(3.5) / 43
    collapsed = problem.replace(lambda_W=lam, lambda_H=lam)
    assert 3 < float(theory.minority_collapse_threshold(collapsed)) < 20
    _, params, alive, _ = theory.imbalanced_global_minimum(collapsed)
    assert list(np.asarray(alive)) == [True, True, False]
    np.testing.assert_array_equal(params.W[2], 0.0)
    assert float(jnp.linalg.norm(params.W[0])) > 0
    # and L-BFGS agrees with the collapsed value
    np.testing.assert_allclose(_lbfgs_best(collapsed), float(theory.global_minimum(collapsed).value), rtol=1e-9)


def test_geometry_orthogonal_frame_with_class_dependent_lengths():
    problem = UFMProblem(3, (9, 4, 1), 5, 1e-3, 2e-3, 0.0, bias=False)
    W = theory.global_minimum(problem).params.W
    gram = np.asarray(W @ W.T)
    np.testing.assert_allclose(gram - np.diag(np.diag(gram)), 0.0, atol=1e-15)  # orthogonal rows
    norms = np.sqrt(np.diag(gram))
    assert norms[0] > norms[1] > norms[2] > 0  # longer for larger classes: not an ETF


def test_balanced_tuple_is_the_balanced_problem():
    a = UFMProblem(3, (4, 4, 4), 5, 1e-3, 2e-3, 0.0, bias=False)
    assert a.n_per_class == 4 and a.balanced
    imbalanced_formula = theory.imbalanced_global_minimum(a)[0]
    np.testing.assert_allclose(imbalanced_formula, theory.global_minimum(a).value, rtol=1e-13)


def test_unsupported_imbalanced_requests_fail_clearly():
    with pytest.raises(ValueError, match="no closed form for unequal class sizes with a bias"):
        theory.global_minimum(UFMProblem(3, (4, 2, 1), 5))
    with pytest.raises(ValueError, match="nc_predictions is derived for balanced classes"):
        theory.nc_predictions(UFMProblem(3, (4, 2, 1), 5, bias=False))
    with pytest.raises(ValueError, match="one size per class"):
        UFMProblem(3, (4, 2), 5)
    with pytest.raises(ValueError, match=r"n_per_class\[1\] must be an integer >= 1"):
        UFMProblem(3, (4, 0, 1), 5)


@pytest.mark.slow
def test_explorer_on_an_imbalanced_problem_finds_only_the_global_minimum(key):
    """Theorem-3.2-style claim for unequal classes: every certified minimum is global."""
    problem = UFMProblem(3, (6, 3, 1), 4, 5e-3, 5e-3, 0.0, bias=False)
    result = landscape.explore(problem, key=key, num_inits=8, num_steps=1500)
    summary = landscape.summarize(result)
    assert summary.verdict == landscape.Verdict.BENIGN, summary
    np.testing.assert_allclose(result.f_star, float(theory.global_minimum(problem).value))


def test_theory_cli_prints_minority_collapse(capsys):
    import json

    from nc_jax import cli

    lam = np.sqrt(3.5) / 43  # N^2 lambda_W lambda_H = 3.5: the class of 3 collapses, those of 20 do not
    argv = ["theory", "--K", "3", "--n", "20,20,3", "--d", "4", "--no-bias", "--lambda-W", str(lam),
            "--lambda-H", str(lam), "--json"]
    assert cli.main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert [c["alive"] for c in out["classes"]] == [True, True, False]
    assert out["classes"][2]["norm_w"] == 0.0
    problem = UFMProblem(3, (20, 20, 3), 4, lam, lam, 0.0, bias=False)
    assert out["f_star"] == pytest.approx(float(theory.global_minimum(problem).value), rel=1e-15)


@pytest.mark.slow
def test_landscape_cli_on_unequal_classes(tmp_path):
    from nc_jax import cli

    rc = cli.main(["--cache-dir", "off", "landscape", "--K", "3", "--n", "6,3,1", "--d", "4", "--no-bias",
                   "--lambda-W", "5e-3", "--lambda-H", "5e-3", "--num-inits", "6", "--workdir", str(tmp_path / "w")])
    assert rc == 0
