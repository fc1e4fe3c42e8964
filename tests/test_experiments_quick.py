"""Every experiment script's quick mode runs end to end (slow: `pytest -m slow`, run by CI).

Figures 3-7 train tiny networks on synthetic data (``--tiny``); the landscape experiments'
quick modes are in test_landscape_experiments.py, Figures 2 and 8 in test_plotting.py.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.parametrize("figure", [3, 4, 5, 6, 7])
def test_figures_tiny(figure, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.figures", "--figure", str(figure), "--tiny",
         "--no-progress", "--workdir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads((tmp_path / f"figure{figure}.json").read_text())
    assert data["figure"] == figure and data["variants"]
    for name, variant in data["variants"].items():
        final = variant["final"]
        assert 0.0 <= final["train_accuracy"] <= 1.0, name
        assert final["train_nc"]["nc1"] >= 0.0, name
    assert (tmp_path / f"figure{figure}.png").stat().st_size > 1000


@pytest.mark.slow
def test_my_objective_quick(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "experiments.my_objective", "--quick",
                           "--workdir", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["verdict"] == "BENIGN"  # enough measurements: every local minimum is global (f* = 0)
    assert data["configuration"]["counts"]["global_minimum"] >= 1
    assert "**Verdict: BENIGN" in (tmp_path / "report.md").read_text()
