"""Second-order analysis after training: the Hessian of the training objective on one batch.

Owns :func:`_hessian_summary` (extremes by thick-restarted Lanczos and the SLQ spectral
density, from :mod:`nc_jax.hessian`), written to results.json as ``"hessian"``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from nc_jax import data as data_lib

from ._step import PARAM_DTYPE, weight_decay_penalty


def _hessian_summary(config, model, state, train_ds, loss_fn):
    """Hessian extremes and SLQ spectral density of the training objective on one batch.

    The objective is the training loss (BatchNorm in training mode, running statistics not
    updated) plus weight decay, as a function of the trainable parameters only. The batch:
    ``hessian_batch_size`` samples in a fixed order drawn from the seed.
    """
    from nc_jax import hessian

    n = min(config.hessian_batch_size, train_ds.size)
    idx = data_lib.epoch_permutation(train_ds.size, seed=config.seed, epoch=10**6)[:n]
    images, labels = jnp.asarray(train_ds.images[idx]), jnp.asarray(train_ds.labels[idx])
    params = jax.device_get(state.params)
    batch_stats = jax.device_get(state.batch_stats)

    def objective(params, batch_stats, x, y):
        (logits, _), _ = model.apply({"params": params, "batch_stats": batch_stats}, x, train=True,
                                     mutable=["batch_stats"])
        return loss_fn(logits, y) + weight_decay_penalty(params, config.weight_decay)

    m = config.hessian_matvecs
    ext_fn = jax.jit(functools.partial(hessian.hessian_extremes, objective, key=jax.random.key(config.seed + 1),
                                       num_matvecs=m, restarts=config.hessian_restarts))
    ext = jax.device_get(ext_fn(params, batch_stats, images, labels))
    lo, hi = float(ext.lambda_min), float(ext.lambda_max)
    span = max(hi - lo, 1e-6)
    grid = jnp.linspace(lo - 0.05 * span, hi + 0.05 * span, 200, dtype=PARAM_DTYPE)

    def density(params, batch_stats, x, y, grid):
        op = hessian.flat_hvp_operator(objective, params, batch_stats, x, y)
        return hessian.slq_density(op.matvec, op.dim, key=jax.random.key(config.seed + 2),
                                   num_probes=config.hessian_probes, num_matvecs=m, grid=grid, sigma=span / 100)

    dens = jax.device_get(jax.jit(density)(params, batch_stats, images, labels, grid))
    return {
        "batch_size": n, "num_matvecs": m,
        "lambda_min": lo, "lambda_max": hi,
        "residual_min": float(ext.residual_min), "residual_max": float(ext.residual_max),
        "converged": bool(ext.converged), "num_hvps": int(ext.num_hvps),
        "density_grid": np.asarray(dens.grid).tolist(), "density": np.asarray(dens.density).tolist(),
    }
