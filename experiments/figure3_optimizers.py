"""Figure 3 (optimizers): thin wrapper of `experiments/figures.py --figure 3` (same options)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from figures import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["--figure", "3", *sys.argv[1:]]))
