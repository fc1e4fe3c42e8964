"""The model, the training state and one pure optimizer step.

Owns :class:`TrainState`, :func:`create_model`, :func:`create_train_state`,
:func:`train_step`, :func:`eval_step` and the weight decay of eq. (2).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from nc_jax import data as data_lib
from nc_jax import models

from ._config import TrainConfig

# Parameters, computation and learning rates are float32, as in the paper's PyTorch code.
PARAM_DTYPE = jnp.float32


class TrainState(NamedTuple):
    """Everything a resumed run needs (the data order is a function of seed and epoch)."""

    step: jnp.ndarray
    params: Any
    batch_stats: Any
    opt_state: Any


def create_model(config: TrainConfig, num_classes: int) -> models.ResNet18:
    return models.ResNet18(
        num_classes=num_classes, width=config.width, feature_dim=config.feature_dim, stem=config.stem,
        use_bias=config.bias, fixed_etf=config.fixed_etf, stage_sizes=tuple(config.stage_sizes),
        dtype=PARAM_DTYPE,
    )


def create_train_state(model, tx, image_shape, *, key) -> TrainState:
    """Initialise parameters (float32), BatchNorm statistics and the optimizer state."""
    variables = model.init(key, jnp.zeros((1, *image_shape), PARAM_DTYPE), train=False)
    params = variables["params"]
    return TrainState(jnp.zeros((), jnp.int32), params, variables.get("batch_stats", {}), tx.init(params))


def weight_decay_penalty(params, weight_decay: float):
    """``lambda/2 ||Theta||^2`` over all trainable parameters (eq. (2))."""
    leaves = jax.tree.leaves(params)
    return 0.5 * weight_decay * sum(jnp.sum(jnp.square(p)) for p in leaves)


def train_step(state: TrainState, batch, *, model, tx, loss_fn, weight_decay: float,
               augment_seed: Optional[int] = None, lbfgs_inner_steps: Optional[int] = None):
    """One optimizer step on ``batch = {"image", "label"}``; returns ``(state, metrics)``.

    Pure: bind the keyword settings with ``functools.partial`` and jit at the call site.
    ``augment_seed`` turns on random crop + flip with key ``fold_in(key(seed), step)``.
    ``lbfgs_inner_steps`` (L-BFGS only): iterations on this batch, like torch's ``max_iter``.
    """
    images, labels = batch["image"], batch["label"]
    if augment_seed is not None:
        images = data_lib.augment(jax.random.fold_in(jax.random.key(augment_seed), state.step), images)

    def objective(params):
        (logits, _), mutated = model.apply(
            {"params": params, "batch_stats": state.batch_stats}, images, train=True, mutable=["batch_stats"])
        data_loss = loss_fn(logits, labels)
        total = data_loss + weight_decay_penalty(params, weight_decay)
        acc = jnp.mean((jnp.argmax(logits, -1).astype(labels.dtype) == labels).astype(logits.dtype))
        return total, (mutated["batch_stats"], data_loss, acc)

    grad_fn = jax.value_and_grad(objective, has_aux=True)
    if lbfgs_inner_steps is None:
        (loss, (batch_stats, data_loss, acc)), grads = grad_fn(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new = TrainState(state.step + 1, params, batch_stats, opt_state)
        return new, {"loss": loss, "data_loss": data_loss, "accuracy": acc}

    value_fn = lambda p: objective(p)[0]  # noqa: E731 - BN uses batch statistics: pure in p

    def inner(carry, _):
        params, opt_state, _bs = carry
        (loss, (bs, data_loss, acc)), grads = grad_fn(params)
        updates, opt_state = tx.update(grads, opt_state, params, value=loss, grad=grads, value_fn=value_fn)
        return (optax.apply_updates(params, updates), opt_state, bs), (loss, data_loss, acc)

    (params, opt_state, batch_stats), (loss, data_loss, acc) = jax.lax.scan(
        inner, (state.params, state.opt_state, state.batch_stats), None, length=lbfgs_inner_steps)
    new = TrainState(state.step + 1, params, batch_stats, opt_state)
    return new, {"loss": loss[0], "data_loss": data_loss[0], "accuracy": acc[0]}


def eval_step(variables, images, *, model):
    """``(logits, features)`` in inference mode (running BatchNorm statistics)."""
    return model.apply(variables, images, train=False)
