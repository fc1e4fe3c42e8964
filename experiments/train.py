"""Thin entry point (Flax-examples pattern): `python -m experiments.train --config cifar10 --workdir DIR`.

Same options as `nc-jax train`; see nc_jax/_cli_train.py.
"""

import sys

from nc_jax.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
