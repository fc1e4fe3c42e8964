"""CPU run closer to the paper: Fashion-MNIST (Debian `dataset-fashion-mnist`), 200 per class.

Reads /usr/share/datasets/fashion-mnist by default (`apt-get install dataset-fashion-mnist`).
Width-16 ResNet18, vanilla MSE, SGD; about 10-20 minutes on a 2-core CPU.
"""

from nc_jax.train import TrainConfig


def get_config() -> TrainConfig:
    return TrainConfig(
        dataset="fashion_mnist",
        samples_per_class=200,
        test_samples_per_class=100,
        width=16,
        loss="mse",
        optimizer="sgd",
        learning_rate=0.05,
        weight_decay=5e-4,
        schedule="step",
        decay_every_epochs=15,
        batch_size=128,
        num_epochs=40,
    )
