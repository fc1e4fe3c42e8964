"""Quick CPU default: scikit-learn digits (100 per class), width-8 ResNet18, vanilla MSE, SGD.

Finishes in about a minute on a 2-core CPU. `nc-jax train --config default`.
"""

from nc_jax.train import TrainConfig


def get_config() -> TrainConfig:
    return TrainConfig(
        dataset="digits",
        samples_per_class=100,
        width=8,
        loss="mse",
        optimizer="sgd",
        learning_rate=0.05,
        momentum=0.9,
        weight_decay=5e-4,
        schedule="step",
        decay_every_epochs=40,
        decay_factor=0.1,
        batch_size=128,
        num_epochs=30,
    )
