"""Figure 7 (features3d): thin wrapper of `python -m experiments.figures --figure 7` (same options).

    python -m experiments.figure7_features3d [--tiny] [--workdir DIR] ...
"""

import sys

from experiments import harness
from experiments.figures import main

if __name__ == "__main__":
    harness.run(lambda: main(["--figure", "7", *sys.argv[1:]]))
