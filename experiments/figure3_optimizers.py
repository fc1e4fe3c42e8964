"""Figure 3 (optimizers): thin wrapper of `python -m experiments.figures --figure 3` (same options).

    python -m experiments.figure3_optimizers [--tiny] [--workdir DIR] ...
"""

import sys

from experiments import harness
from experiments.figures import main

if __name__ == "__main__":
    harness.run(lambda: main(["--figure", "3", *sys.argv[1:]]))
