"""The paper's miniImageNet setting (Fig. 6, Appendix A): rescaled MSE, SGD + warm restarts.

100 classes, 500/100 images per class train/test, resized to 84x84; ResNet18 with the CIFAR
stem and crop + flip (official `--SOTA`); SGD lr 0.01, momentum 0.9, weight decay 1e-3,
cosine annealing with warm restarts (T0 = 200 epochs, eta_min = 1e-4), 200 epochs. Sweep
`--alpha` and `--M`. Needs `--data-dir` (a folder of class subfolders, see nc_jax.data).
"""

from experiments.configs import default
from nc_jax.train import TrainConfig


def get_config() -> TrainConfig:
    # the default (configs/default.py, = the library default) with the paper's overrides
    return default.get_config().replace(
        dataset="miniimagenet",
        data_dir="data/miniimagenet",
        samples_per_class=None,
        augment=True,
        width=64,
        loss="rescaled_mse",
        mse_reduction="mean",
        learning_rate=0.01,
        weight_decay=0.001,
        schedule="cosine_restarts",
        num_epochs=200,
    )
