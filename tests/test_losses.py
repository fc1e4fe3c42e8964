"""nc_jax.losses, the one home of the data losses, and the UFM with the follow-up losses
(label smoothing, focal) explored."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nc_jax import landscape, losses, ufm
from nc_jax.ufm import UFMProblem


@pytest.fixture
def batch():
    logits = jax.random.normal(jax.random.key(0), (7, 5))
    return logits, jax.nn.one_hot(jnp.arange(7) % 5, 5, dtype=logits.dtype)


def test_mse_and_rescaled_mse_are_eq3_and_eq4(batch):
    z, y = batch
    np.testing.assert_allclose(losses.mse(z, y), 0.5 * jnp.sum((z - y) ** 2) / 7, rtol=1e-14)
    weight = np.where(np.asarray(y) > 0, 3.0, 1.0)
    np.testing.assert_allclose(losses.mse(z, y, alpha=3.0, M=5.0), 0.5 * np.sum(weight * (z - 5 * y) ** 2) / 7,
                               rtol=1e-14)
    # the UFM's K x N layout gives the same number
    np.testing.assert_allclose(losses.mse(z.T, y.T, class_axis=0), losses.mse(z, y), rtol=1e-14)
    np.testing.assert_allclose(losses.mse(z, y, reduction="mean"), jnp.mean((z - y) ** 2), rtol=1e-14)


def test_cross_entropy_family_against_independent_formulas(batch):
    z, y = batch
    np.testing.assert_allclose(losses.cross_entropy(z, y), jnp.mean(optax.softmax_cross_entropy(z, y)), rtol=1e-14)
    np.testing.assert_allclose(losses.label_smoothing(z, y, smoothing=0.2),
                               jnp.mean(optax.softmax_cross_entropy(z, optax.smooth_labels(y, 0.2))), rtol=1e-14)
    p = jax.nn.softmax(z)[jnp.arange(7), jnp.arange(7) % 5]
    np.testing.assert_allclose(losses.focal(z, y, gamma=2.0), jnp.mean(-((1 - p) ** 2) * jnp.log(p)), rtol=1e-13)
    np.testing.assert_allclose(losses.focal(z, y, gamma=0.0), losses.cross_entropy(z, y), rtol=1e-14)
    np.testing.assert_allclose(losses.label_smoothing(z, y, smoothing=0.0), losses.cross_entropy(z, y), rtol=1e-14)


def test_loss_names_and_hyperparameters_are_checked():
    assert losses.check_loss("focal") == "focal"
    with pytest.raises(ValueError, match="loss must be one of"):
        losses.check_loss("hinge")
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\)"):
        UFMProblem(3, 2, 4, loss="label_smoothing", label_smoothing=1.0)
    with pytest.raises(ValueError, match="focal_gamma must be finite and >= 0"):
        UFMProblem(3, 2, 4, loss="focal", focal_gamma=-1.0)


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["label_smoothing", "focal"])
def test_ufm_with_followup_losses_has_one_collapsed_minimum_level(loss, key):
    """Zhou et al. 2022 (Are all losses created equal): label smoothing and focal loss minima
    collapse. At this size every certified second-order point sits at one level with NC1 ~ 0
    (degenerate, not strict: the UFM's rotation symmetry leaves zero Hessian eigenvalues)."""
    problem = UFMProblem(3, 2, 4, 5e-3, 5e-3, 5e-3, loss=loss)
    result = landscape.explore(problem, key=key, num_inits=6, num_steps=3000, learning_rate=0.5)
    summary = landscape.summarize(result)
    assert summary.verdict == landscape.Verdict.SINGLE_LEVEL, summary
    assert summary.num_certified == 6
    assert float(np.max(np.asarray(result.report.nc1))) < 1e-10
    # the level is a critical value of this loss's objective
    grads = jax.vmap(jax.grad(ufm.objective), in_axes=(0, None))(result.params, problem)
    assert max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grads)) < 1e-9
