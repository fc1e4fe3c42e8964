"""Figure 5 (fixed_etf): thin wrapper of `experiments/figures.py --figure 5` (same options)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from figures import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["--figure", "5", *sys.argv[1:]]))
