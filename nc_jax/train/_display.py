"""Progress display within an epoch: a tqdm bar when tqdm is installed, else a line every few seconds.

Owns :func:`_progress` and its two displays; the per-epoch summary lines are the loop's.
"""

from __future__ import annotations

import sys
import time

import jax


class _PlainProgress:
    """Progress without tqdm: a line ``epoch i/N: step s/S, loss ..., acc ..., Ts`` on stderr at
    most every ``interval`` seconds (the latest step's batch loss and accuracy)."""

    def __init__(self, total: int, desc: str, interval: float = 10.0):
        self.total, self.desc, self.interval = total, desc, interval
        self.n = 0
        self.t0 = self.last = time.perf_counter()

    def update(self, n: int = 1, metrics=None) -> None:
        self.n += n
        now = time.perf_counter()
        if now - self.last >= self.interval and self.n < self.total:
            self.last = now
            extra = ""
            if metrics is not None:
                m = jax.device_get(metrics)
                extra = f", batch loss {float(m['loss']):.4g}, batch acc {float(m['accuracy']):.3f}"
            print(f"{self.desc}: step {self.n}/{self.total}{extra}, {now - self.t0:.0f}s", file=sys.stderr,
                  flush=True)

    def close(self) -> None:
        pass


class _TqdmProgress:
    def __init__(self, bar):
        self.bar = bar

    def update(self, n: int = 1, metrics=None) -> None:
        self.bar.update(n)

    def close(self) -> None:
        self.bar.close()


def _progress(total: int, desc: str, enabled: bool):
    """A tqdm bar if tqdm is installed, else :class:`_PlainProgress`; ``None`` when disabled."""
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _PlainProgress(total, desc)
    return _TqdmProgress(tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True))
