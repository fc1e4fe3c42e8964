"""The landscape explorer: descent engines, variable projection, refinement, classes.

The problems here share the shapes of `nc-jax verify --quick` (K=4, n=5, d=6, 8 inits) so
the compiled programs are reused across tests and by the end-to-end test.
"""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from nc_jax import cli, landscape, theory, ufm
from nc_jax.landscape import _descent, _explore
from nc_jax.ufm import UFMProblem

K, N_PER, D = 4, 5, 6
LAM = dict(lambda_W=1e-2, lambda_H=1e-2)


def _problem(**kw):
    base = dict(num_classes=K, n_per_class=N_PER, feature_dim=D, lambda_b=1e-2, **LAM)
    base.update(kw)
    return UFMProblem(**base)


@pytest.mark.parametrize("loss", ["mse", "rescaled_mse"])
@pytest.mark.parametrize("bias", [True, False])
def test_reduced_objective_is_the_minimum_over_features(loss, bias):
    p = _problem(loss=loss, bias=bias, alpha=3.0, M=5.0)
    params = ufm.init_params(jax.random.key(0), p, 0.5)
    x = landscape.ReducedParams(params.W, params.b)
    full = landscape.lift(x, p)
    # F(W, b) = f(W, H*, b), grad_H f = 0 there, and grad F = grad_{W,b} f (envelope)
    np.testing.assert_allclose(landscape.reduced_objective(x, p), ufm.objective(full, p), rtol=1e-14)
    g = jax.grad(ufm.objective)(full, p)
    gF = jax.grad(landscape.reduced_objective)(x, p)
    assert float(jnp.abs(g.H).max()) < 1e-14
    np.testing.assert_allclose(gF.W, g.W, atol=1e-14)
    # H* really minimises: any perturbation of H increases f
    bumped = full._replace(H=full.H + 1e-3 * jax.random.normal(jax.random.key(1), full.H.shape))
    assert float(ufm.objective(bumped, p)) > float(ufm.objective(full, p))


@pytest.mark.slow
def test_reduced_hessian_has_the_inertia_of_the_full_hessian():
    """Haynsworth: #negative eigenvalues agree at a saddle and at the minimum."""
    p = _problem(n_per_class=2, bias=False, lambda_b=0.0)
    for kept in (0, 1, 2, 4):
        cp = theory.ufm_critical_point(p, kept, rotation_key=jax.random.key(kept))
        flat, unravel = ravel_pytree(cp.params)
        full = np.linalg.eigvalsh(np.asarray(jax.hessian(lambda z: ufm.objective(unravel(z), p))(flat)))
        xr, unr = ravel_pytree(landscape.ReducedParams(cp.params.W, None))
        red = np.linalg.eigvalsh(np.asarray(jax.hessian(lambda z: landscape.reduced_objective(unr(z), p))(xr)))
        tol = 1e-10
        assert np.sum(full < -tol) == np.sum(red < -tol)
        assert (np.sum(full < -tol) > 0) == (kept < K)


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["gram", "full"])
def test_a_subset_of_runs_descends_as_in_the_whole_multistart(engine):
    """descent_from_keys on runs (3, 0) of a multistart's split keys gives exactly those runs'
    endpoints: how the explorer splits runs over processes."""
    p = _problem(bias=True, lambda_b=1e-2)
    kw = dict(num_steps=150, learning_rate=0.5, grad_tol=1e-30, engine=engine)
    whole = landscape.multistart_descent(p, key=jax.random.key(5), num_inits=4, scales=(0.3, 1.0), **kw)
    runs = np.array([3, 0])
    part = landscape.descent_from_keys(p, keys=jax.random.split(jax.random.key(5), 4)[runs],
                                       scales=np.resize([0.3, 1.0], 4)[runs], **kw)
    for name in ("W", "b", "value", "grad_norm", "status", "num_steps"):
        np.testing.assert_array_equal(np.asarray(getattr(part, name)), np.asarray(getattr(whole, name))[runs])
    assert not np.array_equal(np.asarray(part.W[0]), np.asarray(part.W[1]))  # distinct runs, not one repeated


@pytest.mark.slow
@pytest.mark.parametrize("bias", [True, False])
def test_gram_engine_reproduces_full_gradient_descent(bias):
    p = _problem(bias=bias, lambda_b=1e-2 if bias else 0.0)
    kw = dict(key=jax.random.key(3), num_inits=8, scales=(0.3, 1.0), num_steps=200, learning_rate=0.5, grad_tol=1e-30)
    gram = landscape.multistart_descent(p, engine="gram", **kw)
    full = landscape.multistart_descent(p, engine="full", **kw)
    np.testing.assert_allclose(gram.W, full.W, rtol=0, atol=1e-11)
    np.testing.assert_allclose(gram.class_means, full.class_means, atol=1e-11)
    np.testing.assert_allclose(gram.within_gram, full.within_gram, atol=1e-10)
    np.testing.assert_allclose(gram.value, full.value, rtol=1e-12)
    np.testing.assert_allclose(gram.grad_norm, full.grad_norm, rtol=1e-9)
    assert np.all(np.asarray(gram.status) == landscape.DescentStatus.MAX_STEPS)
    assert np.all(np.asarray(gram.num_steps) == 200)
    # the reported gradient norm is the true one of the full objective
    params = ufm.UFMParams(full.W[0], full.H[0], None if full.b is None else full.b[0])
    g = ravel_pytree(jax.grad(ufm.objective)(params, p))[0]
    np.testing.assert_allclose(gram.grad_norm[0], jnp.linalg.norm(g), rtol=1e-9)


def test_descent_stops_on_gradient_tolerance():
    p = _problem()
    r = landscape.multistart_descent(p, key=jax.random.key(4), num_inits=8, scales=(0.3,), num_steps=20000,
                                     learning_rate=0.5, grad_tol=1e-6)
    assert np.all(np.asarray(r.status) == landscape.DescentStatus.CONVERGED)
    assert np.all(np.asarray(r.grad_norm) <= 1e-6)
    assert np.all(np.asarray(r.num_steps) < 20000)


@pytest.mark.slow
def test_explore_classifies_every_run_and_matches_the_closed_form():
    p = _problem()
    r = landscape.explore(p, key=jax.random.key(0), num_inits=8, num_steps=500)
    names = landscape.class_names(r.classification.label)
    assert names == ["global_minimum"] * 8
    assert np.all(r.grad_norm <= 1e-10)
    np.testing.assert_allclose(r.value, float(theory.global_minimum(p).value), rtol=1e-12)
    # NC at the refined endpoints: collapse and the Theorem 3.1 Gram spectrum
    assert np.all(np.asarray(r.report.nc1) < 1e-12)
    assert np.all(r.gram_spectrum_error < 1e-8)
    assert np.all(r.self_duality_error < 1e-8)
    # certificates: PSD to tau, agreeing starts
    assert np.all(np.asarray(r.classification.lambda_min) >= -np.asarray(r.classification.tau))
    assert np.all(np.asarray(r.classification.num_agree) == 3)


def test_explore_is_bitwise_reproducible_and_does_not_recompile():
    p = _problem(lambda_b=1.0)
    a = landscape.explore(p, key=jax.random.key(7), num_inits=8, num_steps=500)
    sizes = (_descent._descent_program._cache_size(), _explore._refine_program._cache_size(),
             _explore._classify_program._cache_size())
    b = landscape.explore(p, key=jax.random.key(7), num_inits=8, num_steps=500)
    for x, y in zip(jax.tree.leaves((a.params, a.classification)), jax.tree.leaves((b.params, b.classification))):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    # new lambdas reuse every compiled program
    landscape.explore(p.replace(lambda_W=2e-2), key=jax.random.key(8), num_inits=8, num_steps=500)
    assert (_descent._descent_program._cache_size(), _explore._refine_program._cache_size(),
            _explore._classify_program._cache_size()) == sizes


def test_divergent_learning_rate_gives_diverged_runs_never_a_class():
    p = _problem()
    r = landscape.explore(p, key=jax.random.key(0), num_inits=8, num_steps=500, learning_rate=50.0,
                          scales=(1.0,))
    assert landscape.class_names(r.classification.label) == ["diverged"] * 8
    assert np.all(np.asarray(r.descent.status) == landscape.DescentStatus.DIVERGED)


def test_origin_is_certified_as_a_strict_saddle():
    """Zero init: descent stays at (0, 0, b0 1), a critical point; it must not be called a minimum."""
    p = _problem()
    r = landscape.explore(p, key=jax.random.key(0), num_inits=8, num_steps=500, scales=(0.0,))
    assert landscape.class_names(r.classification.label) == ["strict_saddle"] * 8
    N = K * N_PER
    exact = 0.5 * (2e-2 - np.sqrt(4 / (N * K)))  # lambda_W = lambda_H: the closed form of Lemma B.2
    assert np.all(np.asarray(r.classification.full_rayleigh_quotient) < 0)
    assert np.all(np.asarray(r.classification.rayleigh_quotient) < 0)
    assert exact < 0


@pytest.mark.parametrize(
    "bias,kept",
    [(False, 1), (True, 2)],
)
@pytest.mark.slow
def test_saddle_probe_certifies_and_escapes(bias, kept):
    p = _problem(bias=bias, lambda_b=1e-2 if bias else 0.0)
    r = landscape.saddle_probe(p, kept, key=jax.random.key(0), num_steps=1000)
    assert r.verdict == "strict_saddle"
    assert r.grad_norm_at_saddle < 1e-12
    if bias:
        assert r.lambda_min_lanczos <= r.lambda_min_closed_form + 1e-10
    else:
        np.testing.assert_allclose(r.lambda_min_lanczos, r.lambda_min_closed_form, rtol=1e-8)
    assert r.rayleigh_quotient < -r.tau
    assert r.value_after_step < r.value_at_saddle
    assert r.final_class == "global_minimum"
    assert abs(r.final_gap) < 1e-12


def test_trust_region_newton_on_rosenbrock():
    f = lambda x: jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)
    res = landscape.trust_region_newton(f, jnp.array([-1.2, 1.0, -0.5, 0.3]), grad_tol=1e-10)
    assert bool(res.converged)
    np.testing.assert_allclose(res.params, np.ones(4), atol=1e-9)


def test_bad_inputs_are_clear_errors():
    p = _problem()
    with pytest.raises(ValueError, match="num_inits must be >= 1"):
        landscape.multistart_descent(p, key=jax.random.key(0), num_inits=0)
    with pytest.raises(ValueError, match="learning_rate must be finite and > 0"):
        landscape.multistart_descent(p, key=jax.random.key(0), num_inits=2, learning_rate=-1.0)
    with pytest.raises(ValueError, match="engine must be one of"):
        landscape.multistart_descent(p, key=jax.random.key(0), num_inits=2, engine="fast")
    with pytest.raises(ValueError, match="engine='gram' runs plain gradient descent on loss='mse' only"):
        landscape.multistart_descent(p.replace(loss="ce"), key=jax.random.key(0), num_inits=2, engine="gram")
    with pytest.raises(ValueError, match="scales must be a non-empty list"):
        landscape.multistart_descent(p, key=jax.random.key(0), num_inits=2, scales=(-1.0,))
    with pytest.raises(ValueError, match="lambda_H = 0"):
        landscape.explore(p.replace(lambda_H=0.0, lambda_W=0.0), key=jax.random.key(0), num_inits=2, engine="gram")


@pytest.mark.slow
def test_four_devices_give_the_same_results_as_one():
    script = textwrap.dedent(
        """
        import jax, numpy as np, sys
        jax.config.update("jax_enable_x64", True)
        from nc_jax import landscape
        from nc_jax.ufm import UFMProblem
        p = UFMProblem(4, 5, 6, 1e-2, 1e-2, 1e-2)
        r = landscape.multistart_descent(p, key=jax.random.key(1), num_inits=10, scales=(0.1, 1.0),
                                         num_steps=300, batch_size=2)
        np.save(sys.argv[1], np.concatenate([np.asarray(r.W).ravel(), np.asarray(r.value)]))
        print(len(jax.devices()))
        """
    )
    outs = []
    for count in (1, 4):
        env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={count}")
        path = f"/tmp/nc_jax_devices_{count}_{os.getpid()}.npy"
        proc = subprocess.run([sys.executable, "-c", script, path], env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip().endswith(str(count))
        outs.append(np.load(path))
        os.remove(path)
    np.testing.assert_allclose(outs[0], outs[1], rtol=0, atol=1e-12)


@pytest.mark.slow
def test_verify_quick_end_to_end(tmp_path, capsys):
    rc = cli.main(["verify", "--quick", "--workdir", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0, out
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["ok"] and not results["problems"]
    for row in results["configurations"]:
        assert row["counts"]["spurious_local_minimum"] == 0
        assert row["max_abs_gap"] < 1e-9
    assert results["saddle_probes"][0]["verdict"] == "strict_saddle"
    assert (tmp_path / "report.md").read_text().startswith("# nc-jax verify")
    assert (tmp_path / "verify.png").stat().st_size > 10_000
    assert "nc-jax verify: OK" in out
