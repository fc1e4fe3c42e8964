"""Fig. 3 Adam run: lr 0.001, betas (0.9, 0.999), x0.1 every 40 epochs (Appendix A)."""

from experiments.configs import cifar10_sgd
from nc_jax.train import TrainConfig


def get_config() -> TrainConfig:
    return cifar10_sgd.get_config().replace(optimizer="adam", learning_rate=1e-3)
