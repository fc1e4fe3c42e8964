"""The data of a run: its sizes from the config alone, and the loaded datasets.

Owns :func:`dataset_geometry` (image shape, K and split sizes without loading),
:func:`load_data` and :func:`data_summary` (the sizes a workdir records).
"""

from __future__ import annotations

import os
from pathlib import Path

from nc_jax import data as data_lib

from ._config import ConfigError, TrainConfig


def _miniimagenet_classes(config: TrainConfig) -> int:
    """K of miniImageNet from its class folders (100 if they cannot be listed)."""
    try:
        root = Path(os.path.expanduser(str(config.data_dir)))
        root = root / "train" if (root / "train").is_dir() else root
        return max(2, sum(1 for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")))
    except (OSError, TypeError):
        return 100


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
        k = _miniimagenet_classes(config)
        shape, n_train, n_test = (size, size, 3), 500 * k, 100 * k
    if spc is not None and name != "synthetic":
        n_train = min(n_train, k * spc)
    if tspc is not None:
        n_test = min(n_test, k * tspc)
    return dict(image_shape=shape, num_classes=k, num_train=n_train, num_test=n_test)


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
    """``{"num_train", "num_test", "num_classes", "image_shape"}``: what a workdir records of its data."""
    return dict(num_train=train_ds.size, num_test=test_ds.size, num_classes=train_ds.num_classes,
                image_shape=list(train_ds.images.shape[1:]))
