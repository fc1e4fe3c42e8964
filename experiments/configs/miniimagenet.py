"""The paper's miniImageNet setting (Fig. 6, Appendix A): rescaled MSE, SGD + warm restarts.

100 classes, 500/100 images per class train/test, resized to 84x84; ResNet18 with the CIFAR
stem and crop + flip (official `--SOTA`); SGD lr 0.01, momentum 0.9, weight decay 1e-3,
cosine annealing with warm restarts (T0 = 200 epochs, eta_min = 1e-4), 200 epochs. Sweep
`--alpha` and `--m`. Needs `--data-dir` (a folder of class subfolders, see nc_jax.data).
"""

from nc_jax.train import TrainConfig


def get_config() -> TrainConfig:
    return TrainConfig(
        dataset="miniimagenet",
        data_dir="data/miniimagenet",
        samples_per_class=None,
        augment=True,
        width=64,
        stem="cifar",
        loss="rescaled_mse",
        mse_reduction="mean",
        rescale_alpha=1.0,
        rescale_m=1.0,
        optimizer="sgd",
        learning_rate=0.01,
        momentum=0.9,
        weight_decay=1e-3,
        schedule="cosine_restarts",
        restart_epochs=200,
        min_learning_rate=1e-4,
        batch_size=128,
        num_epochs=200,
        eval_batch_size=500,
    )
