"""CPU run closer to the paper: Fashion-MNIST (Debian `dataset-fashion-mnist`), 200 per class.

Reads /usr/share/datasets/fashion-mnist by default (`apt-get install dataset-fashion-mnist`).
Width-16 ResNet18, vanilla MSE, SGD; about 10-20 minutes on a 2-core CPU.
"""

from experiments.configs import default
from nc_jax.train import TrainConfig


def get_config() -> TrainConfig:
    # the default (digits) with the data, width and schedule of this run
    return default.get_config().replace(
        dataset="fashion_mnist",
        samples_per_class=200,
        test_samples_per_class=100,
        width=16,
        decay_every_epochs=15,
        num_epochs=40,
    )
