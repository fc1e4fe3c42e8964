"""Data losses of a training batch: integer labels in, :mod:`nc_jax.losses` maths out.

Owns only the adapters from ``(logits, labels)`` with integer labels to the one-hot
formulas of :mod:`nc_jax.losses` (eq. (2) / eq. (4) MSE and cross-entropy).
"""

from __future__ import annotations

from typing import Callable

import jax

from nc_jax import losses

from ._config import TrainConfig


def mse_loss(logits, labels, *, num_classes: int, alpha: float = 1.0, m: float = 1.0,
             reduction: str = "eq2"):
    """(Rescaled) MSE, eq. (2) / eq. (4) data term, of logits (N x K) and integer labels (N).

    ``reduction="eq2"``: ``1/(2N) sum_i sum_k omega_ik (z_ik - M y_ik)^2``;
    ``reduction="mean"``: torch ``nn.MSELoss`` style, ``1/(NK) sum_ik ...`` (= ``2/K`` x eq2).
    See :func:`nc_jax.losses.mse`.
    """
    y = jax.nn.one_hot(labels, num_classes, dtype=logits.dtype)
    return losses.mse(logits, y, alpha=alpha, M=m, class_axis=-1, reduction=reduction)


def cross_entropy_loss(logits, labels):
    """Mean softmax cross-entropy of logits (N x K) and integer labels (N)."""
    y = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
    return losses.cross_entropy(logits, y, class_axis=-1)


def make_loss_fn(config: TrainConfig, num_classes: int) -> Callable:
    """``loss(logits, labels)`` for ``config.loss``: :func:`nc_jax.losses.data_loss` on one-hot labels
    (``"mse"`` ignores alpha and M; ``"ce"`` the MSE reduction)."""

    def loss_fn(logits, labels):
        y = jax.nn.one_hot(labels, num_classes, dtype=logits.dtype)
        return losses.data_loss(config.loss, logits, y, alpha=config.rescale_alpha, M=config.rescale_m,
                                class_axis=-1, reduction=config.mse_reduction)

    return loss_fn
