"""The paper's miniImageNet setting (Fig. 6, Appendix A): rescaled MSE, SGD + warm restarts.

100 classes, 500/100 images per class train/test, resized to 84x84; ResNet18 with the CIFAR
stem and crop + flip (official `--SOTA`); SGD lr 0.01, momentum 0.9, weight decay 1e-3,
cosine annealing with warm restarts (T0 = 200 epochs, eta_min = 1e-4), 200 epochs. Sweep
`--alpha` and `--M`. Needs `--data-dir` (a folder of class subfolders, see nc_jax.data).
"""

from experiments.configs import cifar10
from nc_jax.train import TrainConfig


def get_config() -> TrainConfig:
    # the paper's CIFAR-10 setting (data pipeline, width, loss scale, epochs) with miniImageNet's
    # data, the rescaled MSE and its optimizer settings
    return cifar10.get_config().replace(
        dataset="miniimagenet",
        data_dir="data/miniimagenet",
        loss="rescaled_mse",
        learning_rate=0.01,
        weight_decay=0.001,
        schedule="cosine_restarts",
        eval_batch_size=500,
    )
