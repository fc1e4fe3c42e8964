"""The generic solvers: gradient descent with checks every few steps, and the explorer's
public descent phase built on it."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nc_jax import landscape, solvers
from nc_jax.solvers import DescentStatus

A = jnp.array([[3.0, 1.0], [1.0, 2.0]])


def quadratic(params, shift):
    x = params["x"] - shift
    return 0.5 * x @ A @ x


def _run(params, check_every, num_steps, grad_tol=0.0, lr=0.1, shift=jnp.zeros(2)):
    return solvers.gradient_descent(quadratic, params, shift, optimizer=optax.sgd(lr), num_steps=num_steps,
                                    grad_tol=grad_tol, check_every=check_every)


@pytest.mark.parametrize("num_steps", [0, 1, 7, 23, 24])
def test_checks_every_few_steps_take_the_same_budget_and_iterates(num_steps):
    p0 = {"x": jnp.array([1.0, -2.0])}
    plain = _run(p0, 1, num_steps)
    blocked = _run(p0, 8, num_steps)
    assert int(blocked.status) == int(plain.status) == DescentStatus.MAX_STEPS
    assert int(blocked.num_steps) == int(plain.num_steps) == num_steps
    # the same updates in the same order: identical iterates, value and gradient norm
    np.testing.assert_allclose(blocked.params["x"], plain.params["x"], rtol=0, atol=1e-15)
    np.testing.assert_allclose(blocked.grad_norm, plain.grad_norm, rtol=1e-14)
    x = p0["x"]
    for _ in range(num_steps):  # GD by hand
        x = x - 0.1 * (A @ x)
    np.testing.assert_allclose(plain.params["x"], x, rtol=0, atol=1e-15)


def test_checks_every_few_steps_stop_within_one_block_of_convergence():
    p0 = {"x": jnp.array([1.0, -2.0])}
    plain = _run(p0, 1, 10_000, grad_tol=1e-8)
    blocked = _run(p0, 8, 10_000, grad_tol=1e-8)
    assert int(plain.status) == int(blocked.status) == DescentStatus.CONVERGED
    assert float(blocked.grad_norm) <= 1e-8
    # the endpoint's gradient was measured there: it is the gradient at the reported point
    g = jnp.linalg.norm(A @ blocked.params["x"])
    np.testing.assert_allclose(blocked.grad_norm, g, rtol=1e-12)
    assert int(plain.num_steps) <= int(blocked.num_steps) < int(plain.num_steps) + 8
    assert int(blocked.num_steps) % 8 == 0


def test_blocked_runs_under_vmap_equal_the_runs_alone():
    """One run converges early, the other spends a budget that is not a multiple of the block
    (its last steps are the tail block): vmapped together, each is what it is alone."""
    starts = {"x": jnp.array([[1e-9, 0.0], [1.0, -2.0]])}  # the first converges at once

    def run(p):
        return _run(p, 8, 21, grad_tol=1e-6)

    both = jax.vmap(run)(starts)
    for i in range(2):
        alone = run({"x": starts["x"][i]})
        assert int(both.status[i]) == int(alone.status) and int(both.num_steps[i]) == int(alone.num_steps)
        np.testing.assert_allclose(both.params["x"][i], alone.params["x"], rtol=0, atol=1e-15)
    assert [int(s) for s in both.status] == [DescentStatus.CONVERGED, DescentStatus.MAX_STEPS]
    assert [int(n) for n in both.num_steps] == [0, 21]


def rosenbrock(params, shift):
    x, y = params["xy"][0] - shift[0], params["xy"][1] - shift[1]
    return (1.0 - x) ** 2 + 100.0 * (y - x**2) ** 2


@pytest.mark.parametrize("check_every", [1, 8])
def test_line_search_optimizers_get_value_and_objective(check_every):
    """optax.lbfgs needs value, grad and value_fn at each update (optax's line-search contract):
    it reaches Rosenbrock's minimizer (1, 1) + shift, which plain GD at this budget does not."""
    shift = jnp.array([0.5, -0.25])
    p0 = {"xy": jnp.array([-1.2, 1.0]) + shift}
    with jax.numpy_dtype_promotion("standard"):  # optax's lbfgs adds int32 and int64 counters under x64
        run = solvers.gradient_descent(rosenbrock, p0, shift, optimizer=optax.lbfgs(), num_steps=400,
                                       grad_tol=1e-10, check_every=check_every)
    assert int(run.status) == DescentStatus.CONVERGED, (run.status, run.grad_norm)
    np.testing.assert_allclose(run.params["xy"], jnp.array([1.0, 1.0]) + shift, atol=1e-9)
    gd = solvers.gradient_descent(rosenbrock, p0, shift, optimizer=optax.sgd(1e-3), num_steps=400, grad_tol=1e-10)
    assert int(gd.status) == DescentStatus.MAX_STEPS


def test_checks_every_few_steps_detect_divergence():
    run = _run({"x": jnp.array([1.0, -2.0])}, 8, 10_000, lr=2.0)  # lr > 2 / lambda_max: blows up
    assert int(run.status) == DescentStatus.DIVERGED
    assert int(run.num_steps) < 10_000


def test_check_every_must_be_a_positive_int():
    with pytest.raises(ValueError, match="check_every must be an integer >= 1; got 0"):
        _run({"x": jnp.ones(2)}, 0, 5)


def _init(key, scale, shift):
    return {"x": shift + scale * jax.random.normal(key, (2,), shift.dtype)}


MODEL = landscape.Model(quadratic, _init, global_value=0.0, name="quadratic")


@pytest.mark.slow
def test_descend_is_explores_descent_and_does_not_retrace(key):
    shift = jnp.array([0.5, -1.0])
    kw = dict(key=key, num_inits=6, scales=(0.1, 1.0), num_steps=500, learning_rate=0.1)
    run = landscape.descend(MODEL, shift, **kw, grad_tol=1e-10)
    ex = landscape.explore(MODEL, shift, **kw)
    np.testing.assert_array_equal(np.asarray(run.params["x"]), np.asarray(ex.descent.params["x"]))
    assert np.all(np.asarray(run.status) == DescentStatus.CONVERGED)
    np.testing.assert_allclose(run.params["x"], np.broadcast_to(shift, (6, 2)), atol=1e-9)
    # new argument values and keys reuse the compiled descent program (no new compilation)
    from nc_jax.landscape import _explore

    before = _explore._descent_program._cache_size()
    again = landscape.descend(MODEL, shift + 1.0, **{**kw, "key": jax.random.key(5)}, grad_tol=1e-10)
    assert _explore._descent_program._cache_size() == before
    np.testing.assert_allclose(again.params["x"], np.broadcast_to(shift + 1.0, (6, 2)), atol=1e-9)


def test_num_parameters_counts_every_scalar_of_a_point():
    from nc_jax.ufm import UFMProblem

    assert landscape.num_parameters(MODEL, jnp.zeros(2)) == 2
    K, n, d = 4, 3, 5
    assert landscape.num_parameters(landscape.ufm_model(UFMProblem(K, n, d)), UFMProblem(K, n, d)) == K * d + d * K * n + K
    assert landscape.num_parameters(landscape.ufm_model(UFMProblem(K, n, d, bias=False)),
                                    UFMProblem(K, n, d, bias=False)) == K * d + d * K * n
    # refinement and certificates work in the reduced variables (H eliminated): W and b
    problem = UFMProblem(K, n, d)
    assert landscape.num_parameters(landscape.ufm_model(problem), problem, reduced=True) == K * d + K
    assert landscape.num_parameters(MODEL, jnp.zeros(2), reduced=True) == 2  # no reduction: all of them


def test_default_batch_size_follows_the_problem_size():
    if jax.default_backend() != "cpu":
        pytest.skip("the CPU rule")
    assert landscape.default_batch_size(128, 356) == 64  # tiny: wide chunks
    assert landscape.default_batch_size(64, 65_000) == 1  # matmul-bound: one run per chunk
    assert landscape.default_batch_size(3, 10) == 3  # never more than the runs
    assert landscape.default_batch_size(64) == 4
    # refinement and certificates (loop lengths differ per run): only tiny problems vmapped
    assert landscape.default_batch_size(128, 36, phase="refine") == 16
    assert landscape.default_batch_size(128, 356, phase="refine") == 2
    assert landscape.default_batch_size(128, 1770, phase="refine") == 1
    with pytest.raises(ValueError, match="phase='certify'"):
        landscape.default_batch_size(8, 10, phase="certify")
