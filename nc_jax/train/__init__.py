"""Full-network training: config, losses, optimizers, schedules, ``train_step``, ``train_and_evaluate``.

Flax-examples pattern: a frozen :class:`TrainConfig` (``experiments/configs/*.py`` return one
from ``get_config()``), a pure ``train_step(state, batch)`` that entry points jit once at
the call site, and :func:`train_and_evaluate(config, workdir)` that owns the epoch loop,
evaluation, orbax checkpoints (exact resume) and the JSON / PNG outputs.

Objective (eq. (2) of the paper, rescaled as eq. (4))::

    L(Theta) = 1/(2N) sum_i sum_k omega_ik (f(x_i)_k - M y_ik)^2 + lambda/2 ||Theta||^2

with ``omega_ik = alpha`` on the true class and 1 elsewhere (``alpha = M = 1`` is the
vanilla MSE); the data terms are :mod:`nc_jax.losses`'. ``mse_reduction="eq2"`` uses this
normalisation. The official PyTorch code uses ``nn.MSELoss()``, the mean over all ``N*K``
entries, i.e. ``2/K`` times eq. (2): ``mse_reduction="mean"`` reproduces it (the paper's
learning rates were tuned with it, so the ``--paper`` configurations use it). The weight decay
``lambda/2 ||Theta||^2`` is part of the loss (coupled, as torch's ``weight_decay`` for SGD and
Adam) and covers every trainable parameter (convolutions, BatchNorm scales and shifts,
classifier ``W`` and ``b``); a fixed simplex-ETF classifier is a constant, so neither the
optimizer nor the decay touches it.

Data parallelism: one ``Mesh`` over ``jax.devices()`` with axis ``"data"``; batches are sharded
along it, parameters and optimizer state are replicated, and XLA inserts the all-reduces
(BatchNorm statistics are over the global batch, so the result does not depend on the
number of devices up to floating-point reduction order).

Layout (each private module owns one idea; this package re-exports the public names):

* ``_config``: :class:`TrainConfig`, :class:`ConfigError`, validation, :func:`field_types`;
* ``_losses``: integer-label adapters of :mod:`nc_jax.losses`;
* ``_optim``: optax optimizers and epoch-wise schedules;
* ``_step``: :class:`TrainState`, the model, :func:`train_step`, :func:`eval_step`;
* ``_data``, ``_memory``, ``_resume``: the checks before any work;
* ``_loop`` (with ``_eval``, ``_checkpoint``, ``_display``): :func:`train_and_evaluate`;
* ``_analysis``: the Hessian summary after training.
"""

from ._analysis import _hessian_summary  # noqa: F401 - private, reachable for tests
from ._config import (
    LOSSES,
    OPTIMIZERS,
    SCHEDULES,
    ConfigError,
    TrainConfig,
    field_types,
    parse_field_value,
)
from ._data import data_summary, dataset_geometry, load_data
from ._display import _PlainProgress, _progress, _TqdmProgress  # noqa: F401 - private, for tests
from ._loop import train_and_evaluate
from ._losses import cross_entropy_loss, make_loss_fn, mse_loss
from ._memory import check_fits, count_parameters, estimate_memory
from ._optim import create_optimizer, learning_rate_schedule
from ._resume import RECORD_FILE, RESUME_FREE_FIELDS, check_resume, completed_epochs
from ._step import (
    PARAM_DTYPE,
    TrainState,
    create_model,
    create_train_state,
    eval_step,
    train_step,
    weight_decay_penalty,
)

__all__ = [
    "LOSSES",
    "OPTIMIZERS",
    "PARAM_DTYPE",
    "RECORD_FILE",
    "RESUME_FREE_FIELDS",
    "SCHEDULES",
    "ConfigError",
    "TrainConfig",
    "TrainState",
    "check_fits",
    "check_resume",
    "completed_epochs",
    "count_parameters",
    "create_model",
    "create_optimizer",
    "create_train_state",
    "cross_entropy_loss",
    "data_summary",
    "dataset_geometry",
    "estimate_memory",
    "eval_step",
    "field_types",
    "learning_rate_schedule",
    "parse_field_value",
    "load_data",
    "make_loss_fn",
    "mse_loss",
    "train_and_evaluate",
    "train_step",
    "weight_decay_penalty",
]
