"""Figure 4 (feature_dim): thin wrapper of `python -m experiments.figures --figure 4` (same options).

    python -m experiments.figure4_feature_dim [--tiny] [--workdir DIR] ...
"""

import sys

from experiments import harness
from experiments.figures import main

if __name__ == "__main__":
    harness.run(lambda: main(["--figure", "4", *sys.argv[1:]]))
