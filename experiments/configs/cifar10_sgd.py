"""Fig. 3 SGD run: as the official optimizer comparison (`cmds_mse.sh`, no `--SOTA`).

ImageNet stem (7x7 stride 2 + max-pool) and no augmentation, otherwise as `cifar10.py`.
"""

from experiments.configs import cifar10
from nc_jax.train import TrainConfig


def get_config() -> TrainConfig:
    return cifar10.get_config().replace(stem="imagenet", augment=False)
