"""The data losses, defined once: (rescaled) MSE of eq. (2)-(4) and softmax cross-entropy.

Owns ``LOSSES`` (the names every CLI and config accepts) and the per-sample loss maths used
by the UFM objective (:mod:`nc_jax.ufm`), network training and the polar model of Appendix C.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["LOSSES", "check_loss", "mse", "cross_entropy", "label_smoothing", "focal", "data_loss"]

# "mse" is eq. (3); "rescaled_mse" eq. (4) (alpha on the true class, target M); "ce" for
# comparison; "label_smoothing" (CE against (1 - eps) y + eps/K) and "focal" (Lin et al. 2017)
# as in Zhou et al. (NeurIPS 2022), "Are all losses created equal".
LOSSES = ("mse", "rescaled_mse", "ce", "label_smoothing", "focal")

_REDUCTIONS = ("eq2", "mean")


def check_loss(loss: Any, name: str = "loss") -> str:
    """``loss`` if it is one of :data:`LOSSES`; otherwise an error naming ``name``."""
    if not isinstance(loss, str):
        raise TypeError(f"{name} must be one of {LOSSES} (a str); got {loss!r} of type {type(loss).__name__}")
    if loss not in LOSSES:
        raise ValueError(f"{name} must be one of {LOSSES}; got {loss!r}")
    return loss


def mse(logits, targets, *, alpha=1.0, M=1.0, class_axis: int = -1, reduction: str = "eq2") -> jax.Array:
    """(Rescaled) MSE between ``logits`` and ``M`` times the one-hot ``targets``.

    ``reduction="eq2"``: ``1/(2N) sum_i sum_k omega_ik (z_ik - M y_ik)^2`` with
    ``omega_ik = alpha`` on the true class and 1 elsewhere (eq. 4; ``alpha = M = 1`` is eq. 3);
    ``reduction="mean"``: torch ``nn.MSELoss`` style ``1/(NK) sum_ik ...`` (= ``2/K`` x eq2).
    ``class_axis`` is the axis of the K classes (0 for the UFM's K x N, -1 for a batch's N x K).
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}; got {reduction!r}")
    targets = targets.astype(logits.dtype)
    alpha = jnp.asarray(alpha, logits.dtype)
    M = jnp.asarray(M, logits.dtype)
    weight = 1.0 + (alpha - 1.0) * targets  # Omega_alpha
    sq = weight * jnp.square(logits - M * targets)
    if reduction == "mean":
        return jnp.mean(sq)
    num_samples = sq.size // sq.shape[class_axis]
    return 0.5 * jnp.sum(sq) / num_samples


def cross_entropy(logits, targets, *, class_axis: int = -1) -> jax.Array:
    """Mean softmax cross-entropy against one-hot ``targets``: logsumexp minus the true logit."""
    targets = targets.astype(logits.dtype)
    lse = jax.nn.logsumexp(logits, axis=class_axis)
    true_logit = jnp.sum(logits * targets, axis=class_axis)
    return jnp.mean(lse - true_logit)


def label_smoothing(logits, targets, *, smoothing=0.1, class_axis: int = -1) -> jax.Array:
    """Mean cross-entropy against the smoothed targets ``(1 - smoothing) y + smoothing / K``."""
    targets = targets.astype(logits.dtype)
    K = logits.shape[class_axis]
    smoothing = jnp.asarray(smoothing, logits.dtype)
    soft = (1.0 - smoothing) * targets + smoothing / K
    return -jnp.mean(jnp.sum(soft * jax.nn.log_softmax(logits, axis=class_axis), axis=class_axis))


def focal(logits, targets, *, gamma=2.0, class_axis: int = -1) -> jax.Array:
    """Mean focal loss ``-(1 - p_y)^gamma log p_y`` (``gamma = 0``: cross-entropy)."""
    targets = targets.astype(logits.dtype)
    log_p = jnp.sum(targets * jax.nn.log_softmax(logits, axis=class_axis), axis=class_axis)
    # (1 - p)^gamma through expm1 keeps it accurate where p -> 1 (the interesting regime)
    weight = jnp.power(-jnp.expm1(log_p), jnp.asarray(gamma, logits.dtype))
    return -jnp.mean(weight * log_p)


def data_loss(loss: str, logits, targets, *, alpha=1.0, M=1.0, smoothing=0.1, gamma=2.0, class_axis: int = -1,
              reduction: str = "eq2") -> jax.Array:
    """The loss named ``loss`` (one of :data:`LOSSES`); each reads only its own hyperparameters
    (``"mse"`` none; ``"rescaled_mse"`` alpha, M; ``"label_smoothing"`` smoothing; ``"focal"`` gamma)."""
    if loss == "ce":
        return cross_entropy(logits, targets, class_axis=class_axis)
    if loss == "label_smoothing":
        return label_smoothing(logits, targets, smoothing=smoothing, class_axis=class_axis)
    if loss == "focal":
        return focal(logits, targets, gamma=gamma, class_axis=class_axis)
    if loss == "mse":
        alpha, M = 1.0, 1.0
    return mse(logits, targets, alpha=alpha, M=M, class_axis=class_axis, reduction=reduction)
