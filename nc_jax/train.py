"""Full-network training: losses, optimizers, schedules, ``train_step``, ``train_and_evaluate``.

Flax-examples pattern: a frozen :class:`TrainConfig` (``experiments/configs/*.py`` return one
from ``get_config()``), a pure ``train_step(state, batch)`` that entry points jit once at
the call site, and :func:`train_and_evaluate(config, workdir)` that owns the epoch loop,
evaluation, orbax checkpoints (exact resume) and the JSON / PNG outputs.

Objective (eq. (2) of the paper, rescaled as eq. (4))::

    L(Theta) = 1/(2N) sum_i sum_k omega_ik (f(x_i)_k - M y_ik)^2 + lambda/2 ||Theta||^2

with ``omega_ik = alpha`` on the true class and 1 elsewhere (``alpha = M = 1`` is the
vanilla MSE). ``mse_reduction="eq2"`` uses this normalisation. The official PyTorch code uses
``nn.MSELoss()``, the mean over all ``N*K`` entries, i.e. ``2/K`` times eq. (2):
``mse_reduction="mean"`` reproduces it (the paper's learning rates were tuned with it, so the
``--paper`` configurations use it). The weight decay ``lambda/2 ||Theta||^2`` is part of the
loss (coupled, as torch's ``weight_decay`` for SGD and Adam) and covers every trainable
parameter (convolutions, BatchNorm scales and shifts, classifier ``W`` and ``b``); a fixed
simplex-ETF classifier is a constant, so neither the optimizer nor the decay touches it.

Data parallelism: one ``Mesh`` over ``jax.devices()`` with axis ``"data"``; batches are sharded
along it, parameters and optimizer state are replicated, and XLA inserts the all-reduces
(BatchNorm statistics are over the global batch, so the result does not depend on the
number of devices up to floating-point reduction order).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nc_jax import data as data_lib
from nc_jax.io import UsageError, check_memory, to_jsonable, write_json_atomic
from nc_jax import models

__all__ = [
    "ConfigError",
    "TrainConfig",
    "TrainState",
    "create_model",
    "create_optimizer",
    "create_train_state",
    "cross_entropy_loss",
    "eval_step",
    "learning_rate_schedule",
    "make_loss_fn",
    "mse_loss",
    "train_and_evaluate",
    "train_step",
    "weight_decay_penalty",
]

LOSSES = ("mse", "rescaled_mse", "ce")
OPTIMIZERS = ("sgd", "adam", "lbfgs")
SCHEDULES = ("step", "cosine_restarts", "constant")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One training run. Defaults: the quick CPU run on scikit-learn's digits.

    The paper's CIFAR-10 setting (Appendix A) is ``experiments/configs/cifar10.py``.
    """

    # data
    dataset: str = "digits"
    data_dir: Optional[str] = None
    samples_per_class: Optional[int] = 100
    test_samples_per_class: Optional[int] = None
    random_labels: bool = False
    augment: bool = False
    image_size: Optional[int] = None
    synthetic_num_classes: int = 4
    synthetic_samples_per_class: int = 8
    synthetic_image_size: int = 8
    synthetic_channels: int = 3
    # model
    width: int = 8
    stage_sizes: tuple = (2, 2, 2, 2)
    feature_dim: Optional[int] = None
    stem: str = "cifar"
    bias: bool = True
    fixed_etf: bool = False
    # loss
    loss: str = "mse"
    mse_reduction: str = "eq2"
    rescale_alpha: float = 1.0
    rescale_m: float = 1.0
    # optimization
    optimizer: str = "sgd"
    learning_rate: float = 0.05
    momentum: float = 0.9
    adam_b1: float = 0.9
    adam_b2: float = 0.999
    weight_decay: float = 5e-4
    schedule: str = "step"
    decay_every_epochs: int = 40
    decay_factor: float = 0.1
    restart_epochs: int = 200
    min_learning_rate: float = 1e-4
    lbfgs_memory: int = 50
    lbfgs_inner_steps: int = 1
    lbfgs_max_linesearch_steps: int = 25
    batch_size: int = 128
    num_epochs: int = 30
    seed: int = 0
    # evaluation and outputs
    eval_batch_size: int = 500
    eval_test: bool = True
    checkpoint: bool = True
    keep_checkpoints: int = 2
    hessian: bool = False
    hessian_matvecs: int = 20
    hessian_batch_size: int = 128
    hessian_restarts: int = 5
    hessian_probes: int = 2
    plots: bool = True
    progress: bool = True

    def __post_init__(self):
        self.validate()

    def validate(self) -> "TrainConfig":
        """Check every field's type and range (called on construction and by :meth:`replace`).

        Integral values given for float fields become floats, lists for ``stage_sizes`` tuples
        and path-like ``data_dir`` strings; anything else of the wrong type, any non-finite
        float and any value out of range raises :class:`ConfigError` naming the field, the
        value and what is accepted.
        """
        hints = field_types()
        for f in dataclasses.fields(self):
            value = _coerce_field(f.name, hints[f.name], getattr(self, f.name))
            object.__setattr__(self, f.name, value)
            _check_range(f.name, value)
        return self

    def replace(self, **overrides) -> "TrainConfig":
        names = [f.name for f in dataclasses.fields(self)]
        unknown = sorted(set(overrides) - set(names))
        if unknown:
            raise ConfigError(f"unknown TrainConfig field{'s' if len(unknown) > 1 else ''} "
                              f"{', '.join(map(repr, unknown))}; valid fields: {', '.join(names)}",
                              field=unknown[0])
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class ConfigError(UsageError):
    """A :class:`TrainConfig` field of the wrong type or out of range, or a workdir that holds a
    different run. ``field`` names the (first) offending field, ``None`` if not one field."""

    def __init__(self, message: str, field: Optional[str] = None):
        super().__init__(message)
        self.field = field


_CHOICES = {
    "dataset": data_lib.DATASETS,
    "loss": LOSSES,
    "optimizer": OPTIMIZERS,
    "schedule": SCHEDULES,
    "mse_reduction": ("eq2", "mean"),
    "stem": ("cifar", "imagenet"),
}
# float fields: (lower, lower inclusive, upper, upper inclusive); all must also be finite
_FLOAT_RANGES = {
    "learning_rate": (0.0, False, None, False),
    "min_learning_rate": (0.0, True, None, False),
    "weight_decay": (0.0, True, None, False),
    "rescale_alpha": (0.0, False, None, False),
    "rescale_m": (0.0, False, None, False),
    "momentum": (0.0, True, 1.0, False),
    "adam_b1": (0.0, True, 1.0, False),
    "adam_b2": (0.0, True, 1.0, False),
    "decay_factor": (0.0, False, 1.0, True),
}
# int fields: inclusive minimum (maximum 2**63 - 1 for the seed); Optional ones may be None
_INT_MINIMUM = {"num_epochs": 0, "seed": 0, "synthetic_num_classes": 2}
_SEED_MAX = 2**63 - 1


@functools.lru_cache(maxsize=None)
def field_types() -> dict:
    """``{field: annotated type}`` of :class:`TrainConfig` (used to parse ``--set FIELD=VALUE``)."""
    import typing

    return typing.get_type_hints(TrainConfig)


def _type_name(tp) -> str:
    import typing

    args = typing.get_args(tp)
    if typing.get_origin(tp) is typing.Union and type(None) in args:
        inner = [a for a in args if a is not type(None)][0]
        return f"{_type_name(inner)} or None"
    if tp is tuple:
        return "a tuple of positive integers"
    return {int: "an integer", float: "a number", bool: "a boolean (True/False)", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp)))


def _coerce_field(name: str, tp, value):
    """``value`` as the annotated type (int to float, list to tuple, path to str) or ConfigError."""
    import typing

    declared = tp

    def bad():
        return ConfigError(f"{name} must be {_type_name(declared)}, got {value!r} ({type(value).__name__})",
                           field=name)

    args = typing.get_args(tp)
    if typing.get_origin(tp) is typing.Union and type(None) in args:
        if value is None:
            return None
        tp = [a for a in args if a is not type(None)][0]
        try:
            return _coerce_field(name, tp, value)
        except ConfigError:
            raise bad() from None
    if isinstance(value, (bool, np.bool_)):
        if tp is bool:
            return bool(value)
        raise bad()
    if tp is int:
        if isinstance(value, (int, np.integer)):
            return int(value)
        raise bad()
    if tp is float:
        if isinstance(value, (int, float, np.integer, np.floating)):
            return float(value)
        raise bad()
    if tp is str:
        if name == "data_dir" and isinstance(value, os.PathLike):
            return os.fspath(value)
        if isinstance(value, str):
            return value
        raise bad()
    if tp is tuple:
        if isinstance(value, (tuple, list)) and all(
                isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in value):
            return tuple(int(v) for v in value)
        raise bad()
    raise bad()


def _check_range(name: str, value) -> None:
    if name in _CHOICES:
        if value not in _CHOICES[name]:
            raise ConfigError(f"{name} must be one of {', '.join(_CHOICES[name])}, got {value!r}", field=name)
        return
    if name == "stage_sizes":
        if not value or any(n < 1 for n in value):
            raise ConfigError(f"stage_sizes must be a non-empty tuple of block counts >= 1, got {value!r}",
                              field=name)
        return
    if isinstance(value, float):
        lo, lo_in, hi, hi_in = _FLOAT_RANGES.get(name, (None, False, None, False))
        ok = math.isfinite(value)
        ok = ok and (lo is None or value > lo or (lo_in and value == lo))
        ok = ok and (hi is None or value < hi or (hi_in and value == hi))
        if not ok:
            rng = "a finite number"
            if lo is not None and hi is not None:
                rng += f" in {'[' if lo_in else '('}{lo:g}, {hi:g}{']' if hi_in else ')'}"
            elif lo is not None:
                rng += f" {'>=' if lo_in else '>'} {lo:g}"
            raise ConfigError(f"{name} must be {rng}, got {value!r}", field=name)
        return
    if isinstance(value, int) and not isinstance(value, bool):
        lo = _INT_MINIMUM.get(name, 1)
        hi = _SEED_MAX if name == "seed" else None
        if value < lo or (hi is not None and value > hi):
            rng = f"in [{lo}, 2**63 - 1]" if hi is not None else f">= {lo}" + (
                " or None" if name in _OPTIONAL_INTS else "")
            raise ConfigError(f"{name} must be an integer {rng}, got {value!r}", field=name)


_OPTIONAL_INTS = ("samples_per_class", "test_samples_per_class", "image_size", "feature_dim")


class TrainState(NamedTuple):
    """Everything a resumed run needs (the data order is a function of seed and epoch)."""

    step: jnp.ndarray
    params: Any
    batch_stats: Any
    opt_state: Any


# ----------------------------------------------------------------------------- losses


def mse_loss(logits, labels, *, num_classes: int, alpha: float = 1.0, m: float = 1.0,
             reduction: str = "eq2"):
    """(Rescaled) MSE, eq. (2) / eq. (4) data term.

    ``reduction="eq2"``: ``1/(2N) sum_i sum_k omega_ik (z_ik - M y_ik)^2``;
    ``reduction="mean"``: torch ``nn.MSELoss`` style, ``1/(NK) sum_ik ...`` (= ``2/K`` x eq2).
    """
    y = jax.nn.one_hot(labels, num_classes, dtype=logits.dtype)
    weights = 1.0 + (alpha - 1.0) * y
    sq = weights * jnp.square(logits - m * y)
    if reduction == "eq2":
        return 0.5 * jnp.mean(jnp.sum(sq, axis=-1))
    if reduction == "mean":
        return jnp.mean(sq)
    raise ValueError(f"reduction must be 'eq2' or 'mean', got {reduction!r}")


def cross_entropy_loss(logits, labels):
    """Mean softmax cross-entropy."""
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


def make_loss_fn(config: TrainConfig, num_classes: int) -> Callable:
    """``loss(logits, labels)`` for ``config.loss`` (``"mse"`` ignores alpha and M)."""
    if config.loss == "ce":
        return cross_entropy_loss
    alpha, m = (config.rescale_alpha, config.rescale_m) if config.loss == "rescaled_mse" else (1.0, 1.0)
    return functools.partial(mse_loss, num_classes=num_classes, alpha=alpha, m=m, reduction=config.mse_reduction)


def weight_decay_penalty(params, weight_decay: float):
    """``lambda/2 ||Theta||^2`` over all trainable parameters (eq. (2))."""
    leaves = jax.tree.leaves(params)
    return 0.5 * weight_decay * sum(jnp.sum(jnp.square(p)) for p in leaves)


# ----------------------------------------------------------------------------- optimizers


def learning_rate_schedule(config: TrainConfig, steps_per_epoch: int) -> Callable:
    """Epoch-wise schedule (the learning rate is constant within an epoch, as torch's).

    * ``step``: ``lr * decay_factor ** (epoch // decay_every_epochs)`` (StepLR);
    * ``cosine_restarts``: ``eta_min + (lr - eta_min)(1 + cos(pi t/T0))/2``, ``t = epoch mod T0``
      (CosineAnnealingWarmRestarts with ``T_mult = 1``);
    * ``constant``.
    """
    lr0, spe = config.learning_rate, int(steps_per_epoch)

    def schedule(count):
        epoch = jnp.asarray(count) // spe
        if config.schedule == "step":
            k = (epoch // config.decay_every_epochs).astype(jnp.float32)
            lr = lr0 * jnp.power(jnp.float32(config.decay_factor), k)
        elif config.schedule == "cosine_restarts":
            t = (epoch % config.restart_epochs).astype(jnp.float32) / config.restart_epochs
            lr = config.min_learning_rate + (lr0 - config.min_learning_rate) * 0.5 * (1 + jnp.cos(jnp.pi * t))
        else:
            lr = jnp.full((), lr0, jnp.float32)
        return jnp.asarray(lr, jnp.float32)  # parameters are float32

    return schedule


def create_optimizer(config: TrainConfig, steps_per_epoch: int) -> optax.GradientTransformation:
    """SGD with momentum, Adam, or L-BFGS with a zoom (strong Wolfe) line search."""
    schedule = learning_rate_schedule(config, steps_per_epoch * (config.lbfgs_inner_steps if config.optimizer == "lbfgs" else 1))
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


# ----------------------------------------------------------------------------- model and state


def create_model(config: TrainConfig, num_classes: int) -> models.ResNet18:
    return models.ResNet18(
        num_classes=num_classes, width=config.width, feature_dim=config.feature_dim, stem=config.stem,
        use_bias=config.bias, fixed_etf=config.fixed_etf, stage_sizes=tuple(config.stage_sizes),
        dtype=jnp.float32,
    )


def create_train_state(model, tx, image_shape, *, key) -> TrainState:
    """Initialise parameters (float32), BatchNorm statistics and the optimizer state."""
    variables = model.init(key, jnp.zeros((1, *image_shape), jnp.float32), train=False)
    params = variables["params"]
    return TrainState(jnp.zeros((), jnp.int32), params, variables.get("batch_stats", {}), tx.init(params))


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


# ----------------------------------------------------------------------------- I/O helpers


def _save_npz_atomic(path, **arrays) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".npz")
    os.close(fd)
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class _PlainProgress:
    """Progress without tqdm: a line ``epoch i/N: step s/S, loss ..., acc ..., Ts`` on stderr at
    most every ``interval`` seconds (the latest step's batch loss and accuracy)."""

    def __init__(self, total: int, desc: str, interval: float = 10.0):
        self.total, self.desc, self.interval = total, desc, interval
        self.n = 0
        self.t0 = self.last = time.perf_counter()

    def update(self, n: int = 1, metrics=None) -> None:
        import sys

        self.n += n
        now = time.perf_counter()
        if now - self.last >= self.interval and self.n < self.total:
            self.last = now
            extra = ""
            if metrics is not None:
                m = jax.device_get(metrics)
                extra = f", batch loss {float(m['loss']):.4g}, batch acc {float(m['accuracy']):.3f}"
            print(f"{self.desc}: step {self.n}/{self.total}{extra}, {now - self.t0:.0f}s", file=sys.stderr,
                  flush=True)

    def close(self) -> None:
        pass


class _TqdmProgress:
    def __init__(self, bar):
        self.bar = bar

    def update(self, n: int = 1, metrics=None) -> None:
        self.bar.update(n)

    def close(self) -> None:
        self.bar.close()


def _progress(total: int, desc: str, enabled: bool):
    """A tqdm bar if tqdm is installed, else :class:`_PlainProgress`; ``None`` when disabled."""
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _PlainProgress(total, desc)
    return _TqdmProgress(tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True))


def _checkpoint_manager(directory: Path, keep: int):
    try:
        import orbax.checkpoint as ocp
    except ImportError as e:  # pragma: no cover
        raise ImportError("checkpointing needs orbax-checkpoint: pip install orbax-checkpoint "
                          "(or set checkpoint=False)") from e
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=False)
    return ocp, ocp.CheckpointManager(directory.absolute(), options=options)


# ----------------------------------------------------------------------------- evaluation


def _evaluate(p_eval, variables, ds: data_lib.Dataset, batch_size: int, sharding, loss_fn):
    """Logits and features of a whole dataset (last batch padded, outputs trimmed)."""
    n = ds.size
    logits, feats = [], []
    for start in range(0, n, batch_size):
        idx = np.arange(start, start + batch_size) % n
        x = jax.device_put(ds.images[idx], sharding)
        lg, ft = p_eval(variables, x)
        logits.append(lg)
        feats.append(ft)
    logits = np.concatenate([np.asarray(a) for a in logits])[:n]
    feats = np.concatenate([np.asarray(a) for a in feats])[:n]
    loss = float(loss_fn(jnp.asarray(logits), jnp.asarray(ds.labels)))
    acc = float(np.mean(np.argmax(logits, -1) == ds.labels))
    return logits, feats, loss, acc


def _collapse_fn(labels: np.ndarray, num_classes: int):
    """``collapse_report`` jitted once per dataset (static K and largest class size)."""
    from nc_jax import metrics

    max_class = int(np.bincount(labels, minlength=num_classes).max())
    return jax.jit(functools.partial(metrics.collapse_report, num_classes=num_classes, max_class_size=max_class))


def _collapse(report_fn, model, params, feats, labels):
    w, b = models.classifier_weights(model, params)
    rep = report_fn(jnp.asarray(w), None if b is None else jnp.asarray(b), jnp.asarray(feats.T), jnp.asarray(labels))
    return {k: float(v) for k, v in jax.device_get(rep)._asdict().items()}


def _round_batch(batch: int, n_samples: int, n_devices: int, what: str) -> int:
    b = min(int(batch), int(n_samples))
    b -= b % n_devices
    if b < n_devices:
        raise ValueError(f"{what}: {n_samples} samples cannot fill one batch on {n_devices} devices")
    return b


# ----------------------------------------------------------------------------- checks before any work

# Fields that do not change the training trajectory: a resumed workdir may differ in them.
RESUME_FREE_FIELDS = ("progress", "plots", "data_dir", "keep_checkpoints", "hessian", "hessian_matvecs",
                      "hessian_batch_size", "hessian_restarts", "hessian_probes")
RECORD_FILE = "config.json"


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def completed_epochs(workdir) -> int:
    """Epochs a workdir already holds: its latest orbax checkpoint or its results.json history."""
    workdir = Path(workdir)
    ckpt = workdir / "checkpoints"
    steps = [int(p.name) for p in ckpt.iterdir() if p.is_dir() and p.name.isdigit()] if ckpt.is_dir() else []
    res = _read_json(workdir / "results.json")
    hist = len(res.get("history") or []) if isinstance(res, dict) else 0
    return max(steps + [hist])


def check_resume(config: TrainConfig, workdir, *, names: Optional[dict] = None, data: Optional[dict] = None,
                 flag: str = "workdir") -> dict:
    """Refuse to resume ``workdir`` with settings that change its run; return its new record.

    A workdir records its configuration in ``config.json`` (older ones: in ``results.json``).
    Once it holds a completed epoch, every field must match except:

    * ``num_epochs``, which may change as long as it is not below the epochs already done;
      each change is appended to the record's ``epoch_extensions`` as
      ``{"from_epochs", "to_epochs"}`` (the schedules depend on the epoch, not on the total,
      so extending a run gives the same trajectory as training the longer run at once);
    * :data:`RESUME_FREE_FIELDS`, which do not change the trajectory: progress display,
      plots, the checkpoints kept, the post-training Hessian analysis and ``data_dir`` (the
      data may move; ``data``, the sizes of what was loaded, must then still match).

    This reads two small JSON files and lists folders: nothing is loaded from checkpoints.

    Args:
      names: display names of fields (e.g. ``{"learning_rate": "learning_rate (--lr)"}``).
      data: ``{"num_train", "num_test", "num_classes", "image_shape"}`` of the loaded data, to
        compare with the record's.
      flag: how messages name the workdir (``"--workdir"`` on the command line).

    Raises:
      ConfigError: a differing field (old and new value of each), too few epochs, or a workdir
        with checkpoints but no readable configuration.
    """
    workdir = Path(workdir)
    label = lambda f: (names or {}).get(f, f)  # noqa: E731
    new_cfg = to_jsonable(config.to_dict())
    record = {"config": new_cfg, "epoch_extensions": [], "data": data}
    if not workdir.is_dir():
        return record
    done = completed_epochs(workdir)
    if done == 0:
        return record  # nothing trained yet: the record is replaced
    old = _read_json(workdir / RECORD_FILE)
    if not (isinstance(old, dict) and isinstance(old.get("config"), dict)):
        res = _read_json(workdir / "results.json")
        old = {"config": res.get("config"),
               "data": {k: res[k] for k in ("num_train", "num_test", "num_classes") if k in res}
               } if isinstance(res, dict) else None
    if not (isinstance(old, dict) and isinstance(old.get("config"), dict)):
        raise ConfigError(f"{flag} {str(workdir)!r} holds {done} trained epoch(s) but no readable {RECORD_FILE} "
                          f"or results.json with its configuration: cannot check that it is the same run; "
                          f"use a new workdir")
    old_cfg = old["config"]
    defaults = to_jsonable(TrainConfig().to_dict())
    diffs = []
    for f in dataclasses.fields(TrainConfig):
        if f.name in RESUME_FREE_FIELDS or f.name == "num_epochs":
            continue
        before, after = old_cfg.get(f.name, defaults[f.name]), new_cfg[f.name]
        if before != after:
            diffs.append((f.name, f"{label(f.name)} {before!r} -> {after!r}"))
    old_epochs = old_cfg.get("num_epochs", done)
    if config.num_epochs < done:
        diffs.append(("num_epochs", f"{label('num_epochs')} {config.num_epochs} is fewer than the {done} epoch(s) "
                                    f"already trained (it may only grow, or stay at least {done})"))
    if diffs:
        raise ConfigError(f"{flag} {str(workdir)!r} holds a run ({done} epoch(s) trained) with different settings; "
                          f"refusing to resume it: " + "; ".join(d for _, d in diffs)
                          + ". Use a new workdir, or the workdir's settings (only the number of epochs may grow)",
                          field=diffs[0][0])
    old_data = old.get("data")
    if data is not None and isinstance(old_data, dict):
        dd = [f"{k} {old_data.get(k)!r} -> {v!r}" for k, v in to_jsonable(data).items()
              if k in old_data and old_data[k] != v]
        if dd:
            raise ConfigError(f"{flag} {str(workdir)!r} was trained on different data; refusing to resume it: "
                              + "; ".join(dd) + f" (check {label('data_dir')})", field="data_dir")
    ext = list(old.get("epoch_extensions") or [])
    if config.num_epochs != old_epochs:
        ext.append({"from_epochs": old_epochs, "to_epochs": config.num_epochs})
    record.update(epoch_extensions=ext, data=data if data is not None else old_data)
    return record


def dataset_geometry(config: TrainConfig) -> dict:
    """Image shape, K and upper bounds of the split sizes, from the config alone (no loading).

    miniImageNet's K is counted from its class folders (100 if they cannot be listed).
    """
    name, spc, tspc = config.dataset, config.samples_per_class, config.test_samples_per_class
    if name == "digits":
        k, shape, n_train, n_test = 10, (8, 8, 1), 10 * (spc or 100), 1797
    elif name == "synthetic":
        k = config.synthetic_num_classes
        shape = (config.synthetic_image_size,) * 2 + (config.synthetic_channels,)
        n_train, n_test = k * config.synthetic_samples_per_class, k * max(1, config.synthetic_samples_per_class // 2)
    elif name == "cifar10":
        k, shape, n_train, n_test = 10, (32, 32, 3), 50000, 10000
    elif name in ("mnist", "fashion_mnist"):
        k, shape, n_train, n_test = 10, (28, 28, 1), 60000, 10000
    else:
        size = config.image_size or 84
        k = 100
        try:
            root = Path(os.path.expanduser(str(config.data_dir)))
            root = root / "train" if (root / "train").is_dir() else root
            k = max(2, sum(1 for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")))
        except (OSError, TypeError):
            pass
        shape, n_train, n_test = (size, size, 3), 500 * k, 100 * k
    if spc is not None and name != "synthetic":
        n_train = min(n_train, k * spc)
    if tspc is not None:
        n_test = min(n_test, k * tspc)
    return dict(image_shape=shape, num_classes=k, num_train=n_train, num_test=n_test)


def count_parameters(config: TrainConfig, in_channels: int, num_classes: int) -> int:
    """Trainable parameters of :func:`create_model` (exact; no model is built)."""
    w, k = config.width, num_classes
    d = config.feature_dim or 8 * w
    ks = 3 if config.stem == "cifar" else 7
    n = ks * ks * in_channels * w + 2 * w
    cur = w
    n_stages = len(config.stage_sizes)
    for i, blocks in enumerate(config.stage_sizes):
        f = w * 2**i
        for j in range(blocks):
            out = d if (i == n_stages - 1 and j == blocks - 1) else f
            stride = 2 if (i > 0 and j == 0) else 1
            n += 9 * cur * f + 2 * f + 9 * f * out + 2 * out
            if stride != 1 or cur != out:
                n += cur * out + 2 * out
            cur = out
    if not config.fixed_etf:
        n += k * d
    if config.bias:
        n += k
    return int(n)


def estimate_memory(config: TrainConfig, *, image_shape, num_classes: int, num_train: int, num_test: int) -> dict:
    """A conservative estimate of the memory a run needs, from the sizes alone (bytes).

    * model: float32 parameters, gradients, updates and optimizer state (momentum: 1 copy,
      Adam: 2, L-BFGS: ``2 * lbfgs_memory + 4``), the state twice (old and new: no donation);
    * training activations: 3 float32 tensors kept for the backward pass (the convolution,
      BatchNorm and ReLU outputs) per convolution output and sample of a batch;
    * evaluation: 4 x the largest convolution output per sample of an evaluation batch;
    * data: the float32 training and test images, twice (standardisation copies them).
    """
    h, wd, c = (int(v) for v in image_shape)
    p = count_parameters(config, c, num_classes)
    opt = {"sgd": 1, "adam": 2, "lbfgs": 2 * config.lbfgs_memory + 4}[config.optimizer]
    model_bytes = 4 * p * (2 * (1 + opt) + 2)
    # convolution output sizes per sample
    w = config.width
    d = config.feature_dim or 8 * w
    if config.stem == "imagenet":
        h, wd = -(-h // 2), -(-wd // 2)
    outs = [h * wd * w]
    if config.stem == "imagenet":
        h, wd = -(-h // 2), -(-wd // 2)
    n_stages = len(config.stage_sizes)
    cur = w
    for i, blocks in enumerate(config.stage_sizes):
        f = w * 2**i
        for j in range(blocks):
            out = d if (i == n_stages - 1 and j == blocks - 1) else f
            if i > 0 and j == 0:
                h, wd = -(-h // 2), -(-wd // 2)
            outs += [h * wd * f, h * wd * out] + ([h * wd * out] if (i > 0 and j == 0) or cur != out else [])
            cur = out
    batch = min(config.batch_size, max(1, num_train))
    eval_batch = min(config.eval_batch_size, max(1, num_train, num_test))
    act_bytes = 3 * 4 * batch * sum(outs)
    eval_bytes = 4 * 4 * eval_batch * max(outs)
    data_bytes = 2 * 4 * (num_train + num_test) * int(np.prod(image_shape))
    return dict(parameters=p, model_bytes=model_bytes, activation_bytes=act_bytes + eval_bytes,
                data_bytes=data_bytes, bytes=model_bytes + act_bytes + eval_bytes + data_bytes, batch=batch)


def check_fits(config: TrainConfig, geometry: Optional[dict] = None, *, what: Optional[str] = None) -> dict:
    """Refuse (:class:`nc_jax.io.UsageError`) a run whose :func:`estimate_memory` exceeds what is available.

    On CPU the whole estimate is compared with the host's available memory; on an accelerator
    the model and activations with the device's memory limit and the data with the host's.
    """
    geometry = geometry or dataset_geometry(config)
    est = estimate_memory(config, **geometry)
    what = what or (f"width={config.width}, stage_sizes={config.stage_sizes}, batch_size={est['batch']}, "
                    f"eval_batch_size={config.eval_batch_size}")
    what = f"{what} (a ResNet18 of {est['parameters']:.3g} parameters on {tuple(geometry['image_shape'])} images)"
    dev = jax.devices()[0]
    limit = None
    if dev.platform != "cpu":
        try:
            limit = (dev.memory_stats() or {}).get("bytes_limit")
        except Exception:  # noqa: BLE001 - not every backend reports memory
            limit = None
    if limit:
        need = est["model_bytes"] + est["activation_bytes"]
        if need > 0.9 * limit:
            raise UsageError(f"{what} needs about {need / 2**30:.3g} GiB of {dev.platform} memory; the device has "
                             f"{limit / 2**30:.3g} GiB: choose smaller sizes")
        check_memory(est["data_bytes"], what)
    else:
        check_memory(est["bytes"], what)
    return est


def load_data(config: TrainConfig) -> tuple[data_lib.Dataset, data_lib.Dataset]:
    """The ``(train, test)`` datasets of ``config`` (raises :class:`nc_jax.data.DataError` or
    :class:`ConfigError` naming ``samples_per_class`` / ``test_samples_per_class``)."""
    try:
        return data_lib.load_dataset(
            config.dataset, config.data_dir, samples_per_class=config.samples_per_class,
            test_samples_per_class=config.test_samples_per_class,
            random_labels_seed=config.seed if config.random_labels else None, image_size=config.image_size,
            synthetic_kwargs=dict(num_classes=config.synthetic_num_classes,
                                  samples_per_class=config.synthetic_samples_per_class,
                                  test_samples_per_class=max(1, config.synthetic_samples_per_class // 2),
                                  image_size=config.synthetic_image_size, channels=config.synthetic_channels,
                                  seed=config.seed))
    except data_lib.SubsetSizeError as e:
        raise ConfigError(str(e), field=e.field) from None


def data_summary(train_ds: data_lib.Dataset, test_ds: data_lib.Dataset) -> dict:
    return dict(num_train=train_ds.size, num_test=test_ds.size, num_classes=train_ds.num_classes,
                image_shape=list(train_ds.images.shape[1:]))


# ----------------------------------------------------------------------------- main loop


def train_and_evaluate(config: TrainConfig, workdir, *, verbose: bool = True,
                       datasets: Optional[tuple[data_lib.Dataset, data_lib.Dataset]] = None) -> dict:
    """Train ``config`` in ``workdir`` (resuming from its latest checkpoint) and return the results.

    Before anything is created or loaded from checkpoints: :func:`check_resume` (a workdir
    holding a run with other settings is refused), :func:`check_fits` (memory), the data
    (``datasets``, a pre-loaded ``(train, test)`` pair of :func:`load_data`, or loaded here).
    Writes ``workdir/config.json`` (the configuration, the data sizes and the epoch
    extensions), ``workdir/results.json`` after every epoch (atomically), ``checkpoints/``
    (orbax, every epoch), ``final_features.npz`` (training features, labels, W, b, sorted
    cosine margins) and ``*.png`` plots at the end.

    If the training loss turns non-finite the run stops in that epoch: results.json gets
    ``status: "diverged"`` and ``diverged: {epoch, step, global_step}`` (step ``None`` when
    only the evaluation after the epoch found it), the epoch is not checkpointed, and the
    returned dict has ``status == "diverged"``. Otherwise ``status == "done"``.
    """
    log = print if verbose else (lambda *a, **k: None)
    workdir = Path(workdir)
    # Validate everything before any heavy work, and before touching the checkpoints.
    check_resume(config, workdir)
    data_lib.check_data_dir(config.dataset, config.data_dir)
    check_fits(config)
    t_start = time.perf_counter()
    train_ds, test_ds = datasets if datasets is not None else load_data(config)
    record = check_resume(config, workdir, data=data_summary(train_ds, test_ds))
    workdir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(workdir / RECORD_FILE, record)

    k = train_ds.num_classes
    devices = jax.devices()
    n_dev = len(devices)
    mesh = jax.sharding.Mesh(np.asarray(devices), ("data",))
    data_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    batch = _round_batch(config.batch_size, train_ds.size, n_dev, "batch_size")
    eval_batch = _round_batch(config.eval_batch_size, max(train_ds.size, test_ds.size), n_dev, "eval_batch_size")
    steps_per_epoch = train_ds.size // batch

    model = create_model(config, k)
    if config.fixed_etf:
        models.simplex_etf(k, model.d)  # validates d >= K-1 early
    tx = create_optimizer(config, steps_per_epoch)
    loss_fn = make_loss_fn(config, k)
    schedule = learning_rate_schedule(config, steps_per_epoch)
    init_fn = functools.partial(create_train_state, model, tx, train_ds.images.shape[1:])
    # The initialisation key is an RBG key: XLA:CPU compiles threefry draws for ~60 parameter
    # tensors in 20-60 s, RngBitGenerator in ~2 s. Deterministic given (seed, backend).
    state = jax.jit(lambda key: init_fn(key=key), out_shardings=replicated)(
        jax.random.key(config.seed, impl="rbg"))
    penalty_fn = jax.jit(functools.partial(weight_decay_penalty, weight_decay=config.weight_decay))
    eval_loss_fn = jax.jit(loss_fn)
    report_train = _collapse_fn(train_ds.labels, k)
    report_test = _collapse_fn(test_ds.labels, k)

    step_fn = functools.partial(
        train_step, model=model, tx=tx, loss_fn=loss_fn, weight_decay=config.weight_decay,
        augment_seed=config.seed if config.augment else None,
        lbfgs_inner_steps=config.lbfgs_inner_steps if config.optimizer == "lbfgs" else None)
    p_train_step = jax.jit(step_fn, out_shardings=(replicated, replicated))
    p_eval = jax.jit(functools.partial(eval_step, model=model), out_shardings=(replicated, replicated))

    history: list[dict] = []
    start_epoch = 0
    mngr = ocp = None
    if config.checkpoint:
        ocp, mngr = _checkpoint_manager(workdir / "checkpoints", config.keep_checkpoints)
        latest = mngr.latest_step()
        if latest is not None:
            abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
            restored = mngr.restore(latest, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), history=ocp.args.JsonRestore()))
            state = TrainState(*restored["state"])
            history = list(restored["history"]["epochs"])[:latest]
            start_epoch = int(latest)
            log(f"resumed from epoch {start_epoch} in {workdir / 'checkpoints'}")

    n_params = int(sum(np.size(p) for p in jax.tree.leaves(state.params)))
    meta = dict(config=config.to_dict(), epoch_extensions=record["epoch_extensions"], num_devices=n_dev,
                device_kind=devices[0].device_kind,
                num_train=train_ds.size, num_test=test_ds.size, num_classes=k, feature_dim=model.d,
                batch_size=batch, steps_per_epoch=steps_per_epoch, trainable_parameters=n_params)
    log(f"{config.dataset}: {train_ds.size} train / {test_ds.size} test, K={k}, d={model.d}, "
        f"{n_params} trainable parameters, {n_dev} device(s), batch {batch}")

    def results(status):
        return dict(meta, status=status, history=history, final=history[-1] if history else None,
                    wall_time_s=time.perf_counter() - t_start)

    def diverged(epoch, step, value):
        where = f"epoch {epoch + 1}/{config.num_epochs}" + (
            f", step {step + 1}/{steps_per_epoch} (global step {epoch * steps_per_epoch + step + 1})"
            if step is not None else ", in the evaluation after its last step")
        info = dict(epoch=epoch + 1, step=None if step is None else step + 1,
                    global_step=None if step is None else epoch * steps_per_epoch + step + 1,
                    value=str(value), last_finite_epoch=history[-1]["epoch"] if history else None)
        if mngr is not None:
            mngr.close()
        out = dict(results("diverged"), diverged=info)
        write_json_atomic(workdir / "results.json", out)
        log(f"diverged: the training loss became {value} at {where} (learning rate "
            f"{float(schedule(epoch * steps_per_epoch)):.3g}); stopped, that epoch is not checkpointed; "
            f"results: {workdir / 'results.json'}")
        return out

    for epoch in range(start_epoch, config.num_epochs):
        t0 = time.perf_counter()
        perm = data_lib.epoch_permutation(train_ds.size, seed=config.seed, epoch=epoch)
        bar = _progress(steps_per_epoch, f"epoch {epoch + 1}/{config.num_epochs}", config.progress and verbose)
        step_metrics = []
        for s in range(steps_per_epoch):
            idx = perm[s * batch:(s + 1) * batch]
            b = {"image": jax.device_put(train_ds.images[idx], data_sharding),
                 "label": jax.device_put(train_ds.labels[idx], data_sharding)}
            state, m = p_train_step(state, b)
            step_metrics.append(m)
            if bar is not None:
                bar.update(1, metrics=m)
        if bar is not None:
            bar.close()
        step_metrics = jax.device_get(step_metrics)
        losses = np.asarray([m["loss"] for m in step_metrics])
        if not np.all(np.isfinite(losses)):
            bad = int(np.argmin(np.isfinite(losses)))
            return diverged(epoch, bad, losses[bad])
        variables = {"params": state.params, "batch_stats": state.batch_stats}
        _, ftr, tr_loss, tr_acc = _evaluate(p_eval, variables, train_ds, eval_batch, data_sharding, eval_loss_fn)
        if not np.isfinite(tr_loss):
            return diverged(epoch, None, tr_loss)
        record = dict(
            epoch=epoch + 1,
            learning_rate=float(schedule(epoch * steps_per_epoch)),
            train_objective=float(np.mean([m["loss"] for m in step_metrics])),
            train_batch_accuracy=float(np.mean([m["accuracy"] for m in step_metrics])),
            train_loss=tr_loss, train_accuracy=tr_acc,
            weight_decay_term=float(penalty_fn(state.params)),
            train_nc=_collapse(report_train, model, state.params, ftr, train_ds.labels),
        )
        if config.eval_test:
            _, fte, te_loss, te_acc = _evaluate(p_eval, variables, test_ds, eval_batch, data_sharding, eval_loss_fn)
            record.update(test_loss=te_loss, test_accuracy=te_acc,
                          test_nc=_collapse(report_test, model, state.params, fte, test_ds.labels))
        record["epoch_time_s"] = time.perf_counter() - t0
        history.append(record)
        if mngr is not None:
            mngr.save(epoch + 1, args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), history=ocp.args.JsonSave({"epochs": history})))
            mngr.wait_until_finished()
        write_json_atomic(workdir / "results.json", results("running"))
        log(f"epoch {epoch + 1:4d}/{config.num_epochs}  lr {record['learning_rate']:.3g}  loss {tr_loss:.4f}  "
            f"train acc {tr_acc:.4f}" + (f"  test acc {record['test_accuracy']:.4f}" if config.eval_test else "")
            + f"  NC1 {record['train_nc']['nc1']:.4g}  ({record['epoch_time_s']:.1f}s)")
    if mngr is not None:
        mngr.close()

    out = results("done")
    # Final features, classifier and cosine margins (PCM) for the figure scripts.
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    _, ftr, _, _ = _evaluate(p_eval, variables, train_ds, eval_batch, data_sharding, eval_loss_fn)
    w, b = models.classifier_weights(model, state.params)
    from nc_jax import metrics

    cm_fn = jax.jit(functools.partial(metrics.cosine_margin, num_classes=k))
    cm = np.sort(np.asarray(cm_fn(jnp.asarray(w), None if b is None else jnp.asarray(b), jnp.asarray(ftr.T),
                                  jnp.asarray(train_ds.labels))))
    _save_npz_atomic(workdir / "final_features.npz", features=ftr, labels=train_ds.labels, W=np.asarray(w),
                     b=np.zeros(k, np.float32) if b is None else np.asarray(b), cosine_margins_sorted=cm)
    out["pcm_quantiles"] = np.quantile(cm, np.linspace(0, 1, 101)).tolist() if cm.size else []
    if config.hessian:
        out["hessian"] = _hessian_summary(config, model, state, train_ds, loss_fn, batch)
    out["wall_time_s"] = time.perf_counter() - t_start
    write_json_atomic(workdir / "results.json", out)
    if config.plots and history:
        out["plots"] = plot_run(out, workdir, cm)
        write_json_atomic(workdir / "results.json", out)
    log(f"results: {workdir / 'results.json'}")
    return out


def _hessian_summary(config, model, state, train_ds, loss_fn, batch):
    """Hessian extremes and SLQ spectral density of the training objective on one batch.

    The objective is the training loss (BatchNorm in training mode, running statistics not
    updated) plus weight decay, as a function of the trainable parameters only.
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
    grid = jnp.linspace(lo - 0.05 * span, hi + 0.05 * span, 200, dtype=jnp.float32)

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


def _to_builtin(x):
    if hasattr(x, "_asdict"):
        return {k: _to_builtin(v) for k, v in x._asdict().items()}
    if isinstance(x, dict):
        return {k: _to_builtin(v) for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return [_to_builtin(v) for v in x]
    if isinstance(x, (jax.Array, np.ndarray, np.generic)):
        a = np.asarray(x)
        return a.item() if a.ndim == 0 else a.tolist()
    return x


def plot_run(results: dict, workdir, cosine_margins=None) -> list[str]:
    """Metric-vs-epoch curves (``metrics.png``) and the PCM (``pcm.png``) of one run."""
    from nc_jax import plotting

    hist = results["history"]
    curves = {
        "NC1": [h["train_nc"]["nc1"] for h in hist],
        "NC2": [h["train_nc"]["nc2"] for h in hist],
        "NC3": [h["train_nc"]["nc3"] for h in hist],
        "NC4": [h["train_nc"]["nc4"] for h in hist],
        "numerical rank": [h["train_nc"]["numerical_rank"] for h in hist],
        "train loss": [h["train_loss"] for h in hist],
        "train accuracy": [h["train_accuracy"] for h in hist],
    }
    if "test_accuracy" in hist[-1]:
        curves["test accuracy"] = [h["test_accuracy"] for h in hist]
    workdir = Path(workdir)
    paths = [workdir / "metrics.png"]
    plotting.plot_metric_curves(curves, path=paths[0], log_names=("NC1", "NC2", "NC3", "train loss"),
                                title=f"{results['config']['dataset']}: {results['config']['loss']}, "
                                      f"{results['config']['optimizer']}, d={results['feature_dim']}")
    if cosine_margins is not None and np.size(cosine_margins):
        paths.append(workdir / "pcm.png")
        plotting.plot_pcm({"train": np.asarray(cosine_margins)}, path=paths[1])
    return [str(p) for p in paths]
