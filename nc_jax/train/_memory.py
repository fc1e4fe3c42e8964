"""Sizes and memory of a run, from the config alone: refuse what cannot fit before any work.

Owns :func:`count_parameters` (exact), :func:`estimate_memory` (conservative) and
:func:`check_fits`; none of them builds a model or loads data.
"""

from __future__ import annotations

from typing import Iterator, Optional

import jax
import numpy as np

from nc_jax.io import UsageError, check_memory

from ._config import TrainConfig
from ._data import dataset_geometry


def _blocks(config: TrainConfig) -> Iterator[tuple[int, int, int]]:
    """``(features, out_features, strides)`` of every basic block of :func:`create_model`, in order.

    The last block outputs ``d`` (``feature_dim`` or ``8 * width``); the first block of every
    stage after the first halves the resolution.
    """
    w, n_stages = config.width, len(config.stage_sizes)
    d = config.feature_dim or 8 * w
    for i, blocks in enumerate(config.stage_sizes):
        f = w * 2**i
        for j in range(blocks):
            yield f, d if (i == n_stages - 1 and j == blocks - 1) else f, 2 if (i > 0 and j == 0) else 1


def count_parameters(config: TrainConfig, in_channels: int, num_classes: int) -> int:
    """Trainable parameters of :func:`create_model` (exact; no model is built)."""
    w, k = config.width, num_classes
    d = config.feature_dim or 8 * w
    ks = 3 if config.stem == "cifar" else 7
    n = ks * ks * in_channels * w + 2 * w
    cur = w
    for f, out, stride in _blocks(config):
        n += 9 * cur * f + 2 * f + 9 * f * out + 2 * out
        if stride != 1 or cur != out:  # 1x1 convolution + BatchNorm shortcut
            n += cur * out + 2 * out
        cur = out
    if not config.fixed_etf:
        n += k * d
    if config.bias:
        n += k
    return int(n)


def _conv_output_sizes(config: TrainConfig, height: int, width: int) -> list[int]:
    """Elements per sample of every convolution output (stem, blocks, shortcuts)."""
    h, wd = height, width
    if config.stem == "imagenet":
        h, wd = -(-h // 2), -(-wd // 2)
    outs = [h * wd * config.width]
    if config.stem == "imagenet":  # the max-pool
        h, wd = -(-h // 2), -(-wd // 2)
    cur = config.width
    for f, out, stride in _blocks(config):
        if stride != 1:
            h, wd = -(-h // 2), -(-wd // 2)
        outs += [h * wd * f, h * wd * out] + ([h * wd * out] if stride != 1 or cur != out else [])
        cur = out
    return outs


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
    outs = _conv_output_sizes(config, h, wd)
    batch = min(config.batch_size, max(1, num_train))
    eval_batch = min(config.eval_batch_size, max(1, num_train, num_test))
    act_bytes = 3 * 4 * batch * sum(outs)
    eval_bytes = 4 * 4 * eval_batch * max(outs)
    data_bytes = 2 * 4 * (num_train + num_test) * int(np.prod(image_shape))
    return dict(parameters=p, model_bytes=model_bytes, activation_bytes=act_bytes + eval_bytes,
                data_bytes=data_bytes, bytes=model_bytes + act_bytes + eval_bytes + data_bytes, batch=batch)


def _device_memory_limit(dev) -> Optional[int]:
    """The accelerator's memory limit in bytes; ``None`` on CPU or if the backend reports none."""
    if dev.platform == "cpu":
        return None
    try:
        return (dev.memory_stats() or {}).get("bytes_limit")
    except Exception:  # noqa: BLE001 - not every backend reports memory
        return None


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
    limit = _device_memory_limit(dev)
    if limit:
        need = est["model_bytes"] + est["activation_bytes"]
        if need > 0.9 * limit:
            raise UsageError(f"{what} needs about {need / 2**30:.3g} GiB of {dev.platform} memory; the device has "
                             f"{limit / 2**30:.3g} GiB: choose smaller sizes")
        check_memory(est["data_bytes"], what)
    else:
        check_memory(est["bytes"], what)
    return est
