"""Training configurations: each module's ``get_config()`` returns a :class:`nc_jax.train.TrainConfig`.

``nc-jax train --config NAME`` imports ``experiments.configs.NAME``; a variant imports the
config it overrides (``from experiments.configs import cifar10``).
"""
