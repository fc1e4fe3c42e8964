"""Fig. 3 L-BFGS run with a strong-Wolfe (zoom) line search.

The official command uses lr 0.1, history 10, batch 512 and torch's default 20 iterations per
batch (`max_iter`); the paper's text says lr 0.01. Constant learning rate.
"""

import importlib.util
import pathlib

from nc_jax.train import TrainConfig

_spec = importlib.util.spec_from_file_location("_cifar10_sgd", pathlib.Path(__file__).with_name("cifar10_sgd.py"))
_base = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_base)


def get_config() -> TrainConfig:
    return _base.get_config().replace(optimizer="lbfgs", learning_rate=0.1, lbfgs_memory=10,
                                      lbfgs_inner_steps=20, batch_size=512, schedule="constant")
