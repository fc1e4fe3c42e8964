"""Fig. 3 SGD run: as the official optimizer comparison (`cmds_mse.sh`, no `--SOTA`).

ImageNet stem (7x7 stride 2 + max-pool) and no augmentation, otherwise as `cifar10.py`.
"""

from nc_jax.train import TrainConfig

import importlib.util
import pathlib

_spec = importlib.util.spec_from_file_location("_cifar10_base", pathlib.Path(__file__).with_name("cifar10.py"))
_base = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_base)


def get_config() -> TrainConfig:
    return _base.get_config().replace(stem="imagenet", augment=False)
