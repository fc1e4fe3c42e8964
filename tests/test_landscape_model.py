"""The explorer on objectives it does not ship: the Model contract and negative controls.

A tool that only ever says "benign" proves nothing. These objectives have known spurious
minima or degenerate points, derived here in closed form; the explorer must find,
certify and report them.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nc_jax import landscape
from nc_jax.landscape import Model, RunClass, Verdict

# ---- a tilted double well in a pytree of dicts: two minimum levels -----------------------
TILT = 0.3


def double_well(params):
    x, y = params["a"]["x"], params["b"][0]
    return (x**2 - 1.0) ** 2 + TILT * x + jnp.sum(y**2)


def double_well_init(key, scale):
    kx, ky = jax.random.split(key)
    return {"a": {"x": scale * jax.random.normal(kx, dtype=jnp.result_type(scale))},
            "b": [scale * jax.random.normal(ky, (2,), dtype=jnp.result_type(scale))]}


def _double_well_minima():
    # f'(x) = 4x^3 - 4x + TILT = 0: three real roots; the outer two are minima
    roots = np.sort(np.roots([4.0, 0.0, -4.0, TILT]).real)
    return [(r**2 - 1.0) ** 2 + TILT * r for r in (roots[0], roots[2])]


DOUBLE_WELL_MINIMA = _double_well_minima()
WELL = Model(double_well, double_well_init, name="double-well")
WELL_KNOWN = Model(double_well, double_well_init, global_value=min(DOUBLE_WELL_MINIMA), name="double-well-known")

# ---- a degenerate critical point that is not a minimum: x^3 + y^2 at the origin --------


def monkey(params):
    return params[0] ** 3 + params[1] ** 2


CUBIC = Model(monkey, lambda key, scale: scale * jnp.abs(jax.random.normal(key, (2,), dtype=jnp.result_type(scale))),
              name="x^3 + y^2")

# ---- deep linear factorization with weight decay, L = 4 factors -------------------------
# f = 1/2 ||W4 W3 W2 W1 - diag(s)||^2 + lam/2 sum ||Wi||^2. Per singular value s the
# balanced factors (|w_i| = p^(1/L), product p) give phi(p) = (p - s)^2/2 + L lam p^(2/L)/2;
# by AM-GM balance is optimal. For L = 4, phi'(p) = 0 <=> u^3 - s u + lam = 0 (u = sqrt(p)).
# Switching a singular value off (p = 0) is a local minimum for L >= 3 (the Hessian there
# is lam I on its factors), so the landscape is NOT benign: 2^r levels.
S = (1.0, 0.8)
LAM = 0.05
DEPTH = 4


def _phi(p, s):
    return 0.5 * (p - s) ** 2 + 0.5 * DEPTH * LAM * p ** (2.0 / DEPTH)


def _on_value(s):
    u = np.roots([1.0, 0.0, -s, LAM])
    u = u[(np.abs(u.imag) < 1e-12) & (u.real > 0)].real
    p = u**2
    # the larger positive root is the local minimum of phi (the smaller one a maximum)
    return _phi(p.max(), s)


def deep_linear_levels():
    off = [0.5 * s**2 for s in S]
    on = [_on_value(s) for s in S]
    return sorted({round(a + b, 12) for a in (off[0], on[0]) for b in (off[1], on[1])})


def deep_linear(factors):
    prod = factors[0]
    for w in factors[1:]:
        prod = w @ prod
    target = jnp.diag(jnp.asarray(S, dtype=prod.dtype))
    return 0.5 * jnp.sum((prod - target) ** 2) + 0.5 * LAM * sum(jnp.sum(w**2) for w in factors)


def deep_linear_init(key, scale):
    keys = jax.random.split(key, DEPTH)
    return [scale * jax.random.normal(k, (2, 2), dtype=jnp.result_type(scale)) for k in keys]


DEEP = Model(deep_linear, deep_linear_init, global_value=min(deep_linear_levels()), name="deep-linear-L4")


@pytest.mark.slow
def test_deep_linear_closed_form_is_a_critical_value():
    # the 'on' branch: the balanced point has zero gradient and the claimed value
    for s in S:
        u = np.roots([1.0, 0.0, -s, LAM])
        u = u[(np.abs(u.imag) < 1e-12) & (u.real > 0)].real.max()
        w = [jnp.diag(jnp.asarray([np.sqrt(u), 0.0])) for _ in range(DEPTH)]  # |w_i| = p^(1/4) = sqrt(u)
        f = lambda ws, s=s: 0.5 * (jnp.prod(jnp.asarray([x[0, 0] for x in ws])) - s) ** 2 + 0.5 * LAM * sum(  # noqa: E731
            x[0, 0] ** 2 for x in ws)
        g = jax.grad(f)(w)
        assert max(float(jnp.abs(x[0, 0])) for x in g) < 1e-12
        np.testing.assert_allclose(float(f(w)), _on_value(s), rtol=1e-12)
    # switching a value off costs s^2/2 and is a local minimum: Hessian lam I at the origin
    H = jax.hessian(deep_linear)([jnp.zeros((2, 2))] * DEPTH)
    flat = np.block([[np.asarray(H[i][j]).reshape(4, 4) for j in range(DEPTH)] for i in range(DEPTH)])
    np.testing.assert_allclose(np.linalg.eigvalsh(flat), LAM, rtol=1e-12)


@pytest.mark.slow
def test_tilted_double_well_pytree_two_levels(key):
    res = landscape.explore(WELL, key=key, num_inits=12, scales=(0.5, 1.5), num_steps=400, learning_rate=0.05)
    s = landscape.summarize(res)
    assert s.verdict == Verdict.MULTIPLE_LEVELS  # no known optimum: levels, not a verdict
    np.testing.assert_allclose(s.minimum_values, sorted(DOUBLE_WELL_MINIMA), rtol=1e-9)
    names = landscape.class_names(res.classification.label)
    assert set(names) <= {"local_minimum", "strict_saddle"}
    # pytree in, pytree out
    assert set(res.params) == {"a", "b"} and res.params["b"][0].shape == (12, 2)

    known = landscape.explore(WELL_KNOWN, key=key, num_inits=12, scales=(0.5, 1.5), num_steps=400,
                              learning_rate=0.05)
    s2 = landscape.summarize(known)
    assert s2.verdict == Verdict.SPURIOUS
    assert s2.counts["spurious_local_minimum"] >= 1 and s2.counts["global_minimum"] >= 1
    spurious = np.asarray(known.classification.label) == RunClass.SPURIOUS_LOCAL_MINIMUM
    np.testing.assert_allclose(known.value[spurious], max(DOUBLE_WELL_MINIMA), rtol=1e-9)


@pytest.mark.slow
def test_deep_linear_spurious_minima_found_and_certified(key):
    levels = deep_linear_levels()
    res = landscape.explore(DEEP, key=key, num_inits=24, scales=(0.05, 1.0), num_steps=3000, learning_rate=0.1)
    s = landscape.summarize(res)
    assert s.verdict == Verdict.SPURIOUS  # the landscape is not benign, and the explorer says so
    found = np.asarray(s.minimum_values)
    for v in found:  # every level found is one of the derived local-minimum values
        assert np.min(np.abs(np.asarray(levels) - v)) < 1e-8, (v, levels)
    assert abs(found.min() - levels[0]) < 1e-8  # the global level is reached
    assert abs(found.max() - levels[-1]) < 1e-8  # and the origin (all off) from small inits
    labels = np.asarray(res.classification.label)
    # (diverged runs are refined from zeros and keep their DIVERGED label)
    origin = (np.abs(res.value - levels[-1]) < 1e-8) & (labels != RunClass.DIVERGED)
    assert origin.any()
    # at the origin the Hessian is lam I: a strict (certified) spurious local minimum
    assert np.all(labels[origin] == RunClass.SPURIOUS_LOCAL_MINIMUM)
    np.testing.assert_allclose(np.asarray(res.classification.lambda_min)[origin], LAM, rtol=1e-6)


@pytest.mark.slow
def test_degenerate_point_is_never_called_a_minimum(key):
    res = landscape.explore(CUBIC, key=key, num_inits=4, scales=(0.5,), num_steps=200, learning_rate=0.05)
    names = landscape.class_names(res.classification.label)
    assert not set(names) & {"local_minimum", "global_minimum", "spurious_local_minimum"}, names
    assert "degenerate" in names
    s = landscape.summarize(res)
    assert s.counts["degenerate"] >= 1


def test_user_objective_report(tmp_path, key):
    res = landscape.explore(WELL_KNOWN, key=key, num_inits=12, scales=(0.5, 1.5), num_steps=400, learning_rate=0.05)
    summary = landscape.write_report(res, tmp_path, name="double well", command="pytest")
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["verdict"] == summary.verdict.name == "SPURIOUS"
    assert data["configuration"]["counts"]["spurious_local_minimum"] == summary.counts["spurious_local_minimum"]
    assert "**Verdict: SPURIOUS" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "landscape.png").stat().st_size > 1000


def test_model_contract_errors():
    with pytest.raises(TypeError, match="Model.objective"):
        Model(objective=3, init=double_well_init)
    with pytest.raises(TypeError, match="Model.global_value"):
        Model(double_well, double_well_init, global_value="0")
    with pytest.raises(TypeError, match="model must be"):
        landscape.explore(double_well, key=jax.random.key(0))


@pytest.mark.slow
def test_explore_reports_each_phase_to_progress():
    """``progress`` hears every phase start and every phase's time, in order, and changes nothing."""
    model = landscape.Model(lambda p: jnp.sum((p["x"] ** 2 - 1.0) ** 2),
                            lambda key, scale: {"x": scale * jax.random.normal(key, (2,))})
    lines = []
    with_progress = landscape.explore(model, key=jax.random.key(0), num_inits=4, num_steps=200, progress=lines.append)
    plain = landscape.explore(model, key=jax.random.key(0), num_inits=4, num_steps=200)
    phases = [line.split()[1] for line in lines if line.endswith("s") and " done in " in line]
    assert phases == ["descent", "refine", "classify", "measure"], lines
    assert len(lines) == 8 and all(line.startswith("explore: ") for line in lines)
    np.testing.assert_array_equal(with_progress.value, plain.value)
    np.testing.assert_array_equal(with_progress.classification.label, plain.classification.label)
