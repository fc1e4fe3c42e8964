"""Fig. 3 L-BFGS run with a strong-Wolfe (zoom) line search.

The official command uses lr 0.1, history 10, batch 512 and torch's default 20 iterations per
batch (`max_iter`); the paper's text says lr 0.01. Constant learning rate.
"""

from experiments.configs import cifar10_sgd
from nc_jax.train import TrainConfig


def get_config() -> TrainConfig:
    return cifar10_sgd.get_config().replace(optimizer="lbfgs", learning_rate=0.1, lbfgs_memory=10,
                                            lbfgs_inner_steps=20, batch_size=512, schedule="constant")
