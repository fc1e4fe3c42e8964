"""Flax ResNet18 with an exposed penultimate feature and a learned or simplex-ETF classifier.

The network follows the official PyTorch code of Zhou et al. (torchvision ResNet18):

* ``stem="cifar"``: a 3x3 stride-1 convolution and no max-pool (the official ``SOTA=True``
  branch, used for CIFAR-10); ``stem="imagenet"``: 7x7 stride-2 convolution and a 3x3
  stride-2 max-pool (torchvision's default, used for miniImageNet).
* Four stages of two basic blocks, widths ``width * (1, 2, 4, 8)`` (``width=64`` is the
  standard ResNet18; small widths keep CPU tests fast).
* The feature dimension ``d`` is set by the output width of the *last block* (the official
  ``fixdim``): its second convolution outputs ``d`` channels and its shortcut becomes a
  1x1 convolution + BatchNorm. There is no extra linear projection; ``d=None`` keeps the
  stage width ``8 * width``.
* Features ``h = avgpool(relu(block output))`` in R^d are returned with the logits
  ``W h + b``; the rows of ``W`` (K x d) are the classifiers, as in the paper.
* ``fixed_etf=True`` replaces ``W`` by the simplex ETF of Definition .1 as a constant: it is
  not a parameter, so no optimizer, weight decay or gradient ever touches it.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from nc_jax import ufm

__all__ = ["BasicBlock", "ResNet18", "etf_classifier", "classifier_weights"]

# torchvision: kaiming_normal_(mode="fan_out", nonlinearity="relu"), untruncated normal.
_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
# torch.nn.Linear default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)); our kernel is (K, d), fan_in = d.
_fc_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform", in_axis=-1, out_axis=-2)


def etf_classifier(num_classes: int, feature_dim: int, dtype=jnp.float32) -> jnp.ndarray:
    """The fixed simplex-ETF classifier ``W`` (K x d, rows are classifiers), Definition .1.

    The transpose of :func:`nc_jax.ufm.simplex_etf` (d x K, unit columns): for ``d >= K`` the
    first K coordinates (as the official code's ``eye(K, d)``), for ``d = K-1`` an orthonormal
    basis of the complement of the all-ones vector. ``W W^T = K/(K-1) (I - 11^T/K)``: unit-norm
    rows with pairwise inner products ``-1/(K-1)``.

    Raises:
      ValueError: ``num_classes < 2`` or ``feature_dim < num_classes - 1`` (no simplex ETF
        fits in fewer than K-1 dimensions).
    """
    if int(feature_dim) < int(num_classes) - 1:  # ufm.simplex_etf checks the types and K >= 2
        raise ValueError(f"fixed_etf: a simplex ETF with K={num_classes} classes needs feature_dim >= "
                         f"K-1={num_classes - 1}, got {feature_dim}")
    return ufm.simplex_etf(num_classes, feature_dim, dtype=dtype).T


class BasicBlock(nn.Module):
    """ResNet basic block; ``out_features`` lets the last block set the feature dimension."""

    features: int
    strides: int = 1
    out_features: Optional[int] = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        out_features = self.out_features or self.features
        norm = lambda name: nn.BatchNorm(  # noqa: E731
            use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype, name=name
        )
        conv = lambda f, k, s, name: nn.Conv(  # noqa: E731
            f, (k, k), (s, s), padding=[((k - 1) // 2, (k - 1) // 2)] * 2, use_bias=False,
            kernel_init=_conv_init, dtype=self.dtype, name=name,
        )
        y = conv(self.features, 3, self.strides, "conv1")(x)
        y = nn.relu(norm("bn1")(y))
        y = norm("bn2")(conv(out_features, 3, 1, "conv2")(y))
        if self.strides != 1 or x.shape[-1] != out_features:
            x = norm("shortcut_bn")(conv(out_features, 1, self.strides, "shortcut_conv")(x))
        return nn.relu(y + x)


class ResNet18(nn.Module):
    """ResNet18 returning ``(logits, features)``; see the module docstring.

    Attributes:
      num_classes: K.
      width: base width (64 for the standard ResNet18).
      feature_dim: d, the output width of the last block; ``None`` for ``8 * width``.
      stem: ``"cifar"`` (3x3 stride 1, no max-pool) or ``"imagenet"`` (7x7 stride 2 + max-pool).
      use_bias: learn a classifier bias ``b``.
      fixed_etf: fix ``W`` to :func:`etf_classifier` (needs ``d >= K-1``).
      stage_sizes: blocks per stage.
      dtype: computation dtype (parameters are float32).
    """

    num_classes: int
    width: int = 64
    feature_dim: Optional[int] = None
    stem: str = "cifar"
    use_bias: bool = True
    fixed_etf: bool = False
    stage_sizes: Sequence[int] = (2, 2, 2, 2)
    dtype: Any = jnp.float32

    @property
    def d(self) -> int:
        return int(self.feature_dim or 8 * self.width)

    @nn.compact
    def __call__(self, x, train: bool = False):
        if self.stem not in ("cifar", "imagenet"):
            raise ValueError(f"stem must be 'cifar' or 'imagenet', got {self.stem!r}")
        x = jnp.asarray(x, self.dtype)
        if self.stem == "cifar":
            x = nn.Conv(self.width, (3, 3), padding=[(1, 1), (1, 1)], use_bias=False,
                        kernel_init=_conv_init, dtype=self.dtype, name="stem_conv")(x)
        else:
            x = nn.Conv(self.width, (7, 7), (2, 2), padding=[(3, 3), (3, 3)], use_bias=False,
                        kernel_init=_conv_init, dtype=self.dtype, name="stem_conv")(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                         dtype=self.dtype, name="stem_bn")(x)
        x = nn.relu(x)
        if self.stem == "imagenet":
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=[(1, 1), (1, 1)])
        n_stages = len(self.stage_sizes)
        for i, n_blocks in enumerate(self.stage_sizes):
            for j in range(n_blocks):
                last = i == n_stages - 1 and j == n_blocks - 1
                x = BasicBlock(
                    self.width * 2**i,
                    strides=2 if (i > 0 and j == 0) else 1,
                    out_features=self.d if last else None,
                    dtype=self.dtype,
                    name=f"stage{i + 1}_block{j + 1}",
                )(x, train)
        features = jnp.mean(x, axis=(1, 2))  # (batch, d)
        logits = Classifier(self.num_classes, use_bias=self.use_bias, fixed_etf=self.fixed_etf,
                            dtype=self.dtype, name="classifier")(features)
        return logits, features


class Classifier(nn.Module):
    """Last layer ``W h + b`` with ``W`` (K x d) learned or the fixed simplex ETF."""

    num_classes: int
    use_bias: bool = True
    fixed_etf: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h):
        d = h.shape[-1]
        if self.fixed_etf:
            w = etf_classifier(self.num_classes, d, dtype=self.dtype)
        else:
            w = self.param("weight", _fc_init, (self.num_classes, d), jnp.float32).astype(self.dtype)
        out = h @ w.T
        if self.use_bias:
            out = out + self.param("bias", nn.initializers.zeros, (self.num_classes,), jnp.float32).astype(self.dtype)
        return out


def classifier_weights(model: ResNet18, params) -> tuple[jnp.ndarray, Optional[jnp.ndarray]]:
    """The classifier ``(W, b)`` of ``model`` (``W`` is K x d; ``b`` is ``None`` without bias)."""
    head = params.get("classifier", {})
    if model.fixed_etf:
        w = etf_classifier(model.num_classes, model.d, dtype=model.dtype)
    else:
        w = head["weight"]
    return w, head.get("bias") if model.use_bias else None
