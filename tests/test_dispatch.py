"""The host-parallel dispatch of the explorer's phases (nc_jax/landscape/_dispatch.py): parts of
the runs called concurrently must give what one call gives, in run order, from one compiled
program, and programs with pool-blocking ops (LAPACK) must not run concurrently."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nc_jax import landscape
from nc_jax.landscape import _dispatch


@functools.partial(jax.jit, static_argnames=("batch_size",))
def _newton_sqrt(targets, scale, *, batch_size):
    """Per run: sqrt(scale * t) by a data-dependent number of Newton steps (a while loop)."""

    def one(t):
        a = scale * t
        x = jax.lax.while_loop(lambda x: jnp.abs(x * x - a) > 1e-12 * a, lambda x: 0.5 * (x + a / x), a + 1.0)
        return {"root": x, "square": x * x}

    return landscape.run_batched(one, targets, batch_size=batch_size)


@functools.partial(jax.jit, static_argnames=("batch_size",))
def _eigvals(mats, *, batch_size):
    return landscape.run_batched(jnp.linalg.eigvalsh, mats, batch_size=batch_size)


def _bind(part, bs):
    return (part, 3.0), {"batch_size": bs}


def test_parts_called_concurrently_equal_one_call_in_run_order():
    targets = jnp.linspace(1.0, 50.0, 7)  # 7 runs: parts of 2 leave one padded slot
    whole = _newton_sqrt(targets, 3.0, batch_size=7)
    before = _newton_sqrt._cache_size()
    parts = _dispatch.map_chunks(_newton_sqrt, targets, _bind, chunk=2, workers=2)
    assert _newton_sqrt._cache_size() == before + 1  # one program for every part
    np.testing.assert_allclose(parts["root"], np.sqrt(3.0 * np.asarray(targets)), rtol=1e-12)
    np.testing.assert_allclose(parts["square"], whole["square"], rtol=1e-14)
    assert parts["root"].shape == (7,)
    # a second call reuses it; a different worker count only changes the part size
    _dispatch.map_chunks(_newton_sqrt, targets + 1.0, _bind, chunk=2, workers=2)
    assert _newton_sqrt._cache_size() == before + 1
    four = _dispatch.map_chunks(_newton_sqrt, targets, _bind, chunk=8, workers=4)  # parts of 2
    np.testing.assert_allclose(four["root"], parts["root"], rtol=1e-14)


def test_programs_with_lapack_calls_are_not_run_concurrently():
    mats = jax.random.normal(jax.random.key(0), (6, 5, 5))
    mats = mats + jnp.swapaxes(mats, 1, 2)
    lowered = _eigvals.lower(mats[:3], batch_size=3)
    assert not _dispatch.threadable(lowered)  # its eigh is a LAPACK custom call
    assert _dispatch.threadable(_newton_sqrt.lower(jnp.ones(3), 3.0, batch_size=3))
    # still correct through map_chunks (the parts run one after another)
    out = _dispatch.map_chunks(_eigvals, mats, lambda part, bs: ((part,), {"batch_size": bs}), chunk=3,
                               workers=2)
    np.testing.assert_allclose(out, np.linalg.eigvalsh(np.asarray(mats)), rtol=1e-12, atol=1e-12)


def test_explore_is_the_same_with_one_worker_and_with_several(monkeypatch, key):
    """The explorer's result does not depend on how its runs are spread over threads."""
    def objective(p, shift):
        return jnp.sum((p["x"] ** 2 - 1.0) ** 2) + jnp.dot(shift, p["x"])

    model = landscape.Model(objective, lambda k, s, shift: {"x": s * jax.random.normal(k, shift.shape)},
                            name="tilted wells")
    shift = jnp.array([0.3, -0.2])
    kw = dict(key=key, num_inits=6, scales=(0.5, 1.5), num_steps=400, batch_size=2)
    monkeypatch.setattr(_dispatch, "host_workers", lambda: 1)
    one = landscape.explore(model, shift, **kw)
    monkeypatch.setattr(_dispatch, "host_workers", lambda: 2)
    two = landscape.explore(model, shift, **kw)
    np.testing.assert_array_equal(np.asarray(one.params["x"]), np.asarray(two.params["x"]))
    np.testing.assert_array_equal(np.asarray(one.classification.label), np.asarray(two.classification.label))
    np.testing.assert_array_equal(one.value, two.value)


def test_host_workers_follows_the_environment(monkeypatch):
    if jax.default_backend() != "cpu" or jax.local_device_count() != 1:
        assert _dispatch.host_workers() == 1
        return
    monkeypatch.setenv("NC_JAX_HOST_WORKERS", "3")
    assert _dispatch.host_workers() == 3
    monkeypatch.setenv("NC_JAX_HOST_WORKERS", "0")
    with pytest.raises(ValueError, match="NC_JAX_HOST_WORKERS must be an integer >= 1; got '0'"):
        _dispatch.host_workers()
    monkeypatch.delenv("NC_JAX_HOST_WORKERS")
    assert _dispatch.host_workers() >= 1


def test_runs_stay_batched_when_chunks_are_wider_than_one():
    """Many workers never split vmapped chunks into single runs (an unbatched run can differ
    in the last bit from a vmapped one, and a subset of runs must equal the whole)."""
    seen = []

    def bind(part, bs):
        seen.append(bs)
        return _bind(part, bs)

    _dispatch.map_chunks(_newton_sqrt, jnp.linspace(1.0, 4.0, 4), bind, chunk=4, workers=8)
    assert seen and min(seen) == 2
    seen.clear()
    _dispatch.map_chunks(_newton_sqrt, jnp.linspace(1.0, 4.0, 4), bind, chunk=1, workers=8)
    assert set(seen) == {1}
