"""TrainConfig: one training run's settings, their validation and their types.

Owns the frozen, flat :class:`TrainConfig` (``--set field=value`` and
``experiments/configs/*.py`` address its fields by name), :class:`ConfigError` and the
accepted choices and ranges of every field.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import math
import os
import typing
from typing import Optional

import numpy as np

from nc_jax import data as data_lib
from nc_jax import losses
from nc_jax.io import UsageError
from nc_jax.io import UsageError

LOSSES = losses.LOSSES
OPTIMIZERS = ("sgd", "adam", "lbfgs")
SCHEDULES = ("step", "cosine_restarts", "constant")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One training run. Defaults: the quick CPU run on scikit-learn's digits.

    The fields are flat (``--set FIELD=VALUE`` names them) and grouped below: data, model,
    loss, optimizer and schedule, evaluation and outputs. The paper's CIFAR-10 setting
    (Appendix A) is ``experiments/configs/cifar10.py``.
    """

    # --- data: which images, how many per class, augmentation
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
    # --- model: the ResNet18 and its classifier
    width: int = 8
    stage_sizes: tuple = (2, 2, 2, 2)
    feature_dim: Optional[int] = None
    stem: str = "cifar"
    bias: bool = True
    fixed_etf: bool = False
    # --- loss: eq. (2) / eq. (4) or cross-entropy
    loss: str = "mse"
    mse_reduction: str = "eq2"
    rescale_alpha: float = 1.0
    rescale_m: float = 1.0
    # --- optimizer, learning-rate schedule, batches and epochs
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
    # --- evaluation and outputs: test set, checkpoints, Hessian analysis, plots, progress
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
_OPTIONAL_INTS = ("samples_per_class", "test_samples_per_class", "image_size", "feature_dim")


@functools.lru_cache(maxsize=None)
def field_types() -> dict:
    """``{field: annotated type}`` of :class:`TrainConfig` (used to parse ``--set FIELD=VALUE``)."""
    return typing.get_type_hints(TrainConfig)


def _optional_inner(tp):
    """``X`` for ``Optional[X]``, ``None`` for any other type."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) is typing.Union and type(None) in args:
        return [a for a in args if a is not type(None)][0]
    return None


def _type_name(tp) -> str:
    inner = _optional_inner(tp)
    if inner is not None:
        return f"{_type_name(inner)} or None"
    if tp is tuple:
        return "a tuple of positive integers"
    return {int: "an integer", float: "a number", bool: "a boolean (True/False)", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp)))


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _coerce_field(name: str, tp, value):
    """``value`` as the annotated type (int to float, list to tuple, path to str) or ConfigError."""
    bad = ConfigError(f"{name} must be {_type_name(tp)}, got {value!r} ({type(value).__name__})", field=name)
    inner = _optional_inner(tp)
    if inner is not None:
        if value is None:
            return None
        try:
            return _coerce_field(name, inner, value)
        except ConfigError:
            raise bad from None
    if isinstance(value, (bool, np.bool_)):
        if tp is bool:
            return bool(value)
        raise bad
    if tp is int and _is_int(value):
        return int(value)
    if tp is float and isinstance(value, (int, float, np.integer, np.floating)):
        return float(value)
    if tp is str and name == "data_dir" and isinstance(value, os.PathLike):
        return os.fspath(value)
    if tp is str and isinstance(value, str):
        return value
    if tp is tuple and isinstance(value, (tuple, list)) and all(_is_int(v) for v in value):
        return tuple(int(v) for v in value)
    raise bad


def _check_float(name: str, value: float) -> None:
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


def _check_int(name: str, value: int) -> None:
    lo = _INT_MINIMUM.get(name, 1)
    hi = _SEED_MAX if name == "seed" else None
    if value < lo or (hi is not None and value > hi):
        rng = f"in [{lo}, 2**63 - 1]" if hi is not None else f">= {lo}" + (
            " or None" if name in _OPTIONAL_INTS else "")
        raise ConfigError(f"{name} must be an integer {rng}, got {value!r}", field=name)


def _check_range(name: str, value) -> None:
    if name in _CHOICES:
        if value not in _CHOICES[name]:
            raise ConfigError(f"{name} must be one of {', '.join(_CHOICES[name])}, got {value!r}", field=name)
    elif name == "stage_sizes":
        if not value or any(n < 1 for n in value):
            raise ConfigError(f"stage_sizes must be a non-empty tuple of block counts >= 1, got {value!r}",
                              field=name)
    elif isinstance(value, float):
        _check_float(name, value)
    elif _is_int(value):
        _check_int(name, value)


def parse_field_value(field: str, text: str):
    """The value of ``--set FIELD=TEXT`` parsed by the field's annotated type (UsageError if not).

    The one parser of ``FIELD=VALUE`` overrides: ``nc-jax train --set`` and the figure scripts.
    """
    types = field_types()
    if field not in types:
        raise UsageError(f"--set {field}={text}: unknown TrainConfig field {field!r}; valid fields: "
                         f"{', '.join(types)}")
    tp = declared = types[field]
    raw = text.strip()
    args = typing.get_args(tp)
    if typing.get_origin(tp) is typing.Union and type(None) in args:
        if raw in ("None", "none", "null"):
            return None
        tp = [a for a in args if a is not type(None)][0]

    def bad(reason: str = ""):
        return UsageError(f"--set {field}={text}: {field} must be {_type_name(declared)}, got {text!r}{reason}")

    if tp is int:
        try:
            return int(raw)
        except ValueError:
            raise bad() from None
    if tp is float:
        try:
            return float(raw)
        except ValueError:
            raise bad() from None
    if tp is bool:
        low = raw.lower()
        if low in ("true", "1", "yes", "on"):
            return True
        if low in ("false", "0", "no", "off"):
            return False
        raise bad()
    if tp is str:
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            return raw
        return value if isinstance(value, str) else raw
    try:
        return ast.literal_eval(raw)  # tuples; the config checks the element types
    except (ValueError, SyntaxError):
        raise bad(" (a Python literal like (2, 2, 2, 2))") from None
