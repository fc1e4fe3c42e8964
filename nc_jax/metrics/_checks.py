"""Argument validation and the small array helpers every metric shares.

Owns the checks that raise ``ValueError`` naming the argument, its value and the accepted
range (shapes, dtypes, labels, ``num_classes``, ``rank``, ``variant``, class sizes), the
concreteness test that decides which checks can run under tracing, and ``_EXACT``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

# Full-precision matmuls for accumulated statistics: XLA:GPU may otherwise run float32
# dots in TF32 (10-bit mantissa), which would put a ~1e-3 relative floor under NC1.
_EXACT = jax.lax.Precision.HIGHEST


def _concrete(x) -> np.ndarray | None:
    """Returns ``x`` as a numpy array when it is concrete, ``None`` under tracing."""
    if isinstance(x, jax.core.Tracer):
        return None
    try:
        return np.asarray(x)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def _one_hot(labels: jax.Array, num_classes: int, dtype) -> jax.Array:
    return jax.nn.one_hot(labels, num_classes, dtype=dtype)  # (N, K)


def _check_features(features, name: str = "features", layout: str = "(d, N)") -> jax.Array:
    features = jnp.asarray(features)
    if features.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D array of shape {layout}; got shape {features.shape}.")
    if not jnp.issubdtype(features.dtype, jnp.floating):
        raise ValueError(f"{name} must be float32 or float64; got dtype {features.dtype}.")
    return features


def _check_empty_classes(counts: np.ndarray, num_classes: int) -> None:
    """Raises when a class of the concrete per-class ``counts`` has no sample."""
    if np.any(counts == 0):
        raise ValueError(
            f"every class in [0, {num_classes}) needs at least one sample; "
            f"classes {np.flatnonzero(counts == 0).tolist()} are empty."
        )


def _check_labels(labels, num_samples: int, num_classes: int | None) -> tuple[jax.Array, int]:
    """Validates labels; returns (labels, K). Value checks only when labels are concrete."""
    labels_arr = jnp.asarray(labels)
    if labels_arr.shape != (num_samples,):
        raise ValueError(
            f"labels must have shape (N,) = ({num_samples},) to match features; "
            f"got shape {labels_arr.shape}."
        )
    if not jnp.issubdtype(labels_arr.dtype, jnp.integer):
        raise ValueError(f"labels must be integers; got dtype {labels_arr.dtype}.")
    concrete = _concrete(labels)
    if num_classes is None:
        if concrete is None:
            raise ValueError(
                "num_classes=None can only be inferred from concrete labels; under jax.jit "
                "pass num_classes explicitly (a static int >= 2)."
            )
        num_classes = int(concrete.max()) + 1 if concrete.size else 0
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
        raise ValueError(f"num_classes must be a static Python int >= 2; got {num_classes!r}.")
    num_classes = int(num_classes)
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2; got {num_classes}.")
    if concrete is not None:
        lo, hi = int(concrete.min()), int(concrete.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(
                f"labels must lie in [0, num_classes) = [0, {num_classes}); "
                f"got values in [{lo}, {hi}]."
            )
        _check_empty_classes(np.bincount(concrete, minlength=num_classes), num_classes)
    return labels_arr, num_classes


def _check_classifier(W, features: jax.Array, num_classes: int, name: str = "W") -> jax.Array:
    W = jnp.asarray(W)
    d = features.shape[0]
    if W.shape != (num_classes, d):
        raise ValueError(
            f"{name} must have shape (num_classes, d) = ({num_classes}, {d}); got {W.shape}."
        )
    if W.dtype != features.dtype:
        raise ValueError(
            f"{name} and features must share one dtype; got {W.dtype} and {features.dtype}."
        )
    return W


def _check_labelled(W, features, labels, num_classes: int | None):
    """Validates a ``(W, features, labels)`` triple; returns ``(W, features, labels, K)``.

    ``num_classes=None`` is taken from ``W`` (a ``(K, d)`` array) before the labels are
    checked against it.
    """
    features = _check_features(features)
    if num_classes is None and jnp.ndim(W) == 2:
        num_classes = int(jnp.shape(W)[0])
    labels, K = _check_labels(labels, features.shape[1], num_classes)
    return _check_classifier(W, features, K), features, labels, K


def _check_bias(b, W: jax.Array) -> jax.Array:
    K = W.shape[0]
    if b is None:
        return jnp.zeros((K,), dtype=W.dtype)
    b = jnp.asarray(b)
    if b.shape != (K,):
        raise ValueError(f"b must have shape (K,) = ({K},) or be None; got {b.shape}.")
    if b.dtype != W.dtype:
        raise ValueError(f"b and W must share one dtype; got {b.dtype} and {W.dtype}.")
    return b


def _check_rank(rank: int | None, d: int, num_classes: int) -> int:
    if rank is None:
        return min(d, num_classes - 1)
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)):
        raise ValueError(f"rank must be None or a static int in [1, K-1]; got {rank!r}.")
    if not 1 <= int(rank) <= num_classes - 1:
        raise ValueError(
            f"rank must lie in [1, K-1] = [1, {num_classes - 1}]; got {rank}."
        )
    return int(rank)


def _check_variant(variant: str) -> str:
    if variant not in ("pinv", "trace"):
        raise ValueError(f"variant must be 'pinv' or 'trace'; got {variant!r}.")
    return variant


def _check_max_class_size(max_class_size: int | None, labels: jax.Array, num_classes: int) -> int:
    """The static class-size bound of :func:`numerical_rank` (see its docstring)."""
    if max_class_size is not None and (
            isinstance(max_class_size, bool)
            or not isinstance(max_class_size, (int, np.integer)) or max_class_size < 1):
        raise ValueError(f"max_class_size must be None or an int >= 1; got {max_class_size!r}.")
    concrete = _concrete(labels)
    largest = None if concrete is None else int(np.bincount(concrete, minlength=num_classes).max())
    if max_class_size is None:
        return labels.shape[0] if largest is None else largest
    if largest is not None and largest > max_class_size:
        raise ValueError(
            f"max_class_size={max_class_size} is smaller than the largest class "
            f"({largest} samples)."
        )
    return int(max_class_size)
