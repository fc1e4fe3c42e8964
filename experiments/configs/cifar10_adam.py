"""Fig. 3 Adam run: lr 0.001, betas (0.9, 0.999), x0.1 every 40 epochs (Appendix A)."""

import importlib.util
import pathlib

from nc_jax.train import TrainConfig

_spec = importlib.util.spec_from_file_location("_cifar10_sgd", pathlib.Path(__file__).with_name("cifar10_sgd.py"))
_base = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_base)


def get_config() -> TrainConfig:
    return _base.get_config().replace(optimizer="adam", learning_rate=1e-3)
