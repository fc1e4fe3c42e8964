"""Figure 6 (rescaled_mse): thin wrapper of `python -m experiments.figures --figure 6` (same options).

    python -m experiments.figure6_rescaled_mse [--tiny] [--workdir DIR] ...
"""

import sys

from experiments import harness
from experiments.figures import main

if __name__ == "__main__":
    harness.run(lambda: main(["--figure", "6", *sys.argv[1:]]))
