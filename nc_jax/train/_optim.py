"""Optimizers and learning-rate schedules, built from optax.

Owns :func:`learning_rate_schedule` (epoch-wise optax schedules: the rate is constant
within an epoch, as torch's schedulers stepped once per epoch) and :func:`create_optimizer`.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from ._config import TrainConfig
from ._step import PARAM_DTYPE


def _epoch_schedule(config: TrainConfig) -> Callable:
    """The optax schedule of ``config.schedule`` as a function of the (float) epoch count."""
    lr0 = config.learning_rate
    if config.schedule == "step":  # StepLR: lr * decay_factor ** (epoch // decay_every_epochs)
        return optax.exponential_decay(lr0, transition_steps=config.decay_every_epochs,
                                       decay_rate=config.decay_factor, staircase=True)
    if config.schedule == "cosine_restarts":  # CosineAnnealingWarmRestarts, T_mult = 1
        period, eta_min = config.restart_epochs, config.min_learning_rate
        # (lr - eta_min)(1 + cos(pi t))/2 of the phase t = (epoch mod T0)/T0 in [0, 1)
        half_cosine = optax.cosine_decay_schedule(lr0 - eta_min, decay_steps=1)
        return lambda epoch: eta_min + half_cosine(jnp.mod(epoch, period) / period)
    return optax.constant_schedule(lr0)


def learning_rate_schedule(config: TrainConfig, steps_per_epoch: int) -> Callable:
    """``schedule(step count) -> learning rate`` (parameter dtype), constant within an epoch.

    With ``epoch = count // steps_per_epoch``:

    * ``step``: ``lr * decay_factor ** (epoch // decay_every_epochs)`` (StepLR;
      ``optax.exponential_decay`` with ``staircase=True``);
    * ``cosine_restarts``: ``eta_min + (lr - eta_min)(1 + cos(pi t/T0))/2``, ``t = epoch mod T0``
      (CosineAnnealingWarmRestarts with ``T_mult = 1``; ``optax.cosine_decay_schedule``);
    * ``constant``.
    """
    spe = int(steps_per_epoch)
    per_epoch = _epoch_schedule(config)

    def schedule(count):
        epoch = jnp.asarray(jnp.asarray(count) // spe, PARAM_DTYPE)  # exact below 2**24 epochs
        return jnp.asarray(per_epoch(epoch), PARAM_DTYPE)

    return schedule


def create_optimizer(config: TrainConfig, steps_per_epoch: int) -> optax.GradientTransformation:
    """SGD with momentum, Adam, or L-BFGS with a zoom (strong Wolfe) line search."""
    inner = config.lbfgs_inner_steps if config.optimizer == "lbfgs" else 1
    schedule = learning_rate_schedule(config, steps_per_epoch * inner)
    if config.optimizer == "sgd":
        return optax.sgd(schedule, momentum=config.momentum)
    if config.optimizer == "adam":
        return optax.adam(schedule, b1=config.adam_b1, b2=config.adam_b2, eps=1e-8)
    return _float_state_like_params(optax.lbfgs(
        learning_rate=schedule,
        memory_size=config.lbfgs_memory,
        linesearch=optax.scale_by_zoom_linesearch(
            max_linesearch_steps=config.lbfgs_max_linesearch_steps, initial_guess_strategy="one"),
    ))


def _float_state_like_params(tx):
    """Cast the optimizer state's floating leaves to the parameters' dtype at ``init``.

    ``optax.lbfgs`` allocates some buffers with the default float dtype (float64 when x64 is
    on), which then meet float32 updates; with float32 parameters this keeps one dtype.
    """

    def init(params):
        state = tx.init(params)
        dt = jax.tree.leaves(params)[0].dtype

        def cast(x):
            x = jnp.asarray(x)
            return x.astype(dt) if jnp.issubdtype(x.dtype, jnp.floating) and x.dtype != dt else x

        return jax.tree.map(cast, state)

    return optax.GradientTransformationExtraArgs(init, tx.update)
