"""Tests of nc_jax.models: the simplex-ETF classifier (Definition .1), ResNet18 shapes, fixed classifier."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nc_jax import models, ufm


@pytest.mark.parametrize("k,d", [(4, 3), (4, 4), (10, 9), (10, 10), (10, 64)])
def test_etf_classifier_gram(k, d):
    w = np.asarray(models.etf_classifier(k, d, dtype=jnp.float64))
    assert w.shape == (k, d)
    expected = k / (k - 1) * (np.eye(k) - np.ones((k, k)) / k)
    np.testing.assert_allclose(w @ w.T, expected, rtol=0, atol=1e-12)
    # Unit-norm rows with equal angles -1/(K-1); the columns of W^T sum to zero (centred).
    np.testing.assert_allclose(np.linalg.norm(w, axis=1), 1.0, rtol=0, atol=1e-12)
    off = (w @ w.T)[~np.eye(k, dtype=bool)]
    np.testing.assert_allclose(off, -1 / (k - 1), rtol=0, atol=1e-12)
    np.testing.assert_allclose(w.sum(0), 0.0, atol=1e-12)
    # The one simplex ETF of the package (d x K unit columns), transposed.
    np.testing.assert_array_equal(w, np.asarray(ufm.simplex_etf(k, d, dtype=jnp.float64)).T)
    if d >= k:  # the official code's eye(K, d) frame: sqrt(K/(K-1)) (I - 11^T/K) in the first K coordinates
        np.testing.assert_allclose(w, np.sqrt(k / (k - 1)) * (np.eye(k) - 1 / k) @ np.eye(k, d), rtol=0, atol=1e-15)


def test_etf_classifier_rejects_small_d():
    with pytest.raises(ValueError, match=r"feature_dim >= K-1=9, got 8"):
        models.etf_classifier(10, 8)
    with pytest.raises(ValueError, match="num_classes"):
        models.etf_classifier(1, 3)


def _count(tree):
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def test_resnet18_parameter_count_matches_torchvision_cifar():
    # torchvision-style ResNet18 with the CIFAR stem and a 10-way head: 11,173,962 parameters.
    m = models.ResNet18(num_classes=10)
    shapes = jax.eval_shape(lambda k: m.init(k, jnp.zeros((1, 32, 32, 3), jnp.float32)), jax.random.key(0))
    assert _count(shapes["params"]) == 11_173_962
    # Feature dimension set by the last block (official `fixdim`): d = 10.
    m10 = models.ResNet18(num_classes=10, feature_dim=10, stem="imagenet")
    out = jax.eval_shape(lambda k: m10.init_with_output(k, jnp.zeros((2, 64, 64, 3), jnp.float32))[0],
                         jax.random.key(0))
    assert out[0].shape == (2, 10) and out[1].shape == (2, 10)


def test_tiny_forward_and_fixed_etf_classifier():
    k, d = 4, 5
    m = models.ResNet18(num_classes=k, width=2, feature_dim=d, fixed_etf=True, stage_sizes=(1, 1, 1, 1))
    x = jax.random.normal(jax.random.key(1), (3, 8, 8, 3), jnp.float32)

    @jax.jit
    def run(key, x):
        v = m.init(key, x)
        return v, m.apply(v, x, train=False)

    v, (logits, feats) = run(jax.random.key(0, impl="rbg"), x)
    assert logits.dtype == jnp.float32 and feats.shape == (3, d)
    assert "weight" not in v["params"]["classifier"]  # the ETF is a constant, not a parameter
    w, b = models.classifier_weights(m, v["params"])
    np.testing.assert_allclose(np.asarray(w), models.etf_classifier(k, d), atol=1e-7)
    np.testing.assert_allclose(logits, feats @ w.T + b, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="stem"):
        models.ResNet18(num_classes=k, stem="bad").init(jax.random.key(0), x)
