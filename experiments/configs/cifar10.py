"""The paper's CIFAR-10 setting (Appendix A; official `cmds_mse.sh`, `--SOTA` runs of Figs. 4-5).

ResNet18 (width 64, CIFAR stem: 3x3 conv, no max-pool), random crop (pad 4) + flip, vanilla
MSE with torch's `MSELoss` normalisation (mean over N*K entries, which the learning rate was
tuned for), SGD lr 0.05 momentum 0.9, weight decay 5e-4, x0.1 every 40 epochs, 200 epochs,
batch 128. Needs the CIFAR-10 python batches: `--data-dir DIR`.
Note: the official `args.py` default decay factor is 0.2; the paper states 0.1 (used here).
"""

from experiments.configs import default
from nc_jax.train import TrainConfig


def get_config() -> TrainConfig:
    # the default (configs/default.py, = the library default) with the paper's overrides
    return default.get_config().replace(
        dataset="cifar10",
        data_dir="data/cifar-10-batches-py",
        samples_per_class=None,
        augment=True,
        width=64,
        mse_reduction="mean",
        num_epochs=200,
        eval_batch_size=1000,
    )
