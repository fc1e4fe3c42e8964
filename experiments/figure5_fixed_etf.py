"""Figure 5 (fixed_etf): thin wrapper of `python -m experiments.figures --figure 5` (same options).

    python -m experiments.figure5_fixed_etf [--tiny] [--workdir DIR] ...
"""

import sys

from experiments import harness
from experiments.figures import main

if __name__ == "__main__":
    harness.run(lambda: main(["--figure", "5", *sys.argv[1:]]))
