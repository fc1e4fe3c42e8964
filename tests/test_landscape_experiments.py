"""Integration tests of the landscape experiments: each script's ``main(["--quick", ...])``
runs, writes a non-empty PNG and a JSON, and the JSON's numbers satisfy the mathematics
(Theorem 3.1 regimes and optimum, Lemma B.2 curvature, Theorems 3.2/3.3 escapes).

The scripts run in this process, so programs compiled by one test (same problem sizes)
are reused by the next: the quick sizes are shared on purpose (K=3, n=2, d=4, 4 inits).
"""

import importlib
import importlib.util
import json
import math
from pathlib import Path

import pytest

from nc_jax import theory
from nc_jax.ufm import UFMProblem

ROOT = Path(__file__).resolve().parents[1]


def _import_experiment(name):
    """``experiments.<name>`` (pytest puts the repository root on the path: pyproject pythonpath)."""
    return importlib.import_module(f"experiments.{name}")


open_questions = _import_experiment("open_questions")
phase_diagram = _import_experiment("phase_diagram")
strict_saddles = _import_experiment("strict_saddles")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _outputs(tmp_path, name):
    png = tmp_path / f"{name}.png"
    assert png.stat().st_size > 1000
    assert png.read_bytes()[:8] == PNG_MAGIC
    data = json.loads((tmp_path / f"{name}.json").read_text())
    assert data
    return data


def _expected_regime(K, d, c, lambda_b):
    """Theorem 3.1 with bias, stated independently of nc_jax.theory (c = lW lH N K)."""
    if c >= 1:
        return "zero"
    if d < K - 1:
        return "low_rank"
    if d == K - 1:
        return "simplex_etf_d=K-1"
    t = math.sqrt(c)
    return "shifted_etf" if lambda_b > t / (1 - t) else "simplex_etf"


@pytest.mark.slow
def test_phase_diagram_quick(tmp_path):
    phase_diagram.main(["--quick", "--workdir", str(tmp_path)])
    data = _outputs(tmp_path, "phase_diagram")
    cells = data["cells"]
    assert len(cells) == data["summary"]["num_cells"] >= 4
    assert {c["regime"] for c in cells} >= {"zero", "simplex_etf", "shifted_etf"}
    for cell in cells:
        problem = UFMProblem(cell["K"], cell["n"], cell["d"], cell["lambda_W"], cell["lambda_H"], cell["lambda_b"])
        gm = theory.global_minimum(problem)
        assert cell["regime"] == theory.regime_name(gm.regime)
        assert cell["regime"] == _expected_regime(cell["K"], cell["d"], cell["c"], cell["lambda_b"])
        assert cell["lambda_W"] * cell["lambda_H"] * cell["K"] ** 2 * cell["n"] == pytest.approx(cell["c"], rel=1e-12)
        runs = cell["runs"]
        for label, value, grad in zip(runs["label"], runs["value"], runs["grad_norm"]):
            assert label not in ("spurious_local_minimum", "below_closed_form")
            if label == "global_minimum":
                assert grad <= 1e-10
                assert abs(value - cell["f_star"]) < 1e-9
        # quick cells are easy: every run is a certified global minimum with NC
        assert cell["frac_global"] == 1.0
        assert cell["max_gap_certified"] < 1e-9
        assert cell["bias_error_max"] < 1e-7
        if cell["regime"] != "zero":
            assert cell["gram_spectrum_error_max"] < 1e-6
            assert cell["self_duality_error_max"] < 1e-6
            assert cell["nc1_max"] < 1e-8
    assert data["summary"]["all_certified_within_1e-9"]


@pytest.mark.slow
def test_strict_saddles_quick(tmp_path):
    strict_saddles.main(["--quick", "--workdir", str(tmp_path)])
    data = _outputs(tmp_path, "strict_saddles")
    probes = data["probes"]
    K, d = data["config"]["K"], data["config"]["d"]
    assert d > K
    no_bias = [p for p in probes if not p["bias"]]
    bias = [p for p in probes if p["bias"]]
    assert sorted(p["r"] for p in no_bias) == list(range(min(d, K)))
    assert sorted(p["r"] for p in bias) == list(range(K))
    for p in probes:
        assert p["grad_norm_at_saddle"] < 1e-12  # a critical point
        if not p["bias"] or p["r"] < K - 1:
            assert p["above_f_star"]
        elif p["regime"] == "simplex_etf":
            # all K-1 directions orthogonal to 1 kept: the global minimizer of Theorem 3.1
            assert not p["above_f_star"] and p["verdict"] == "minimum"
        if p["above_f_star"]:
            # Theorems 3.2 / 3.3: a critical point above f* is a strict saddle
            assert p["verdict"] == "strict_saddle"
            assert p["rayleigh_quotient"] < -p["tau"]
            assert p["lambda_min_closed_form"] < 0
            assert p["value_after_step"] < p["value_at_saddle"]
        if p["bias"]:
            # closed form = b-fixed restriction: an upper bound on the full lambda_min
            assert p["lambda_min_closed_form"] >= p["lambda_min_lanczos"] - 1e-8
        else:
            assert abs(p["lambda_min_closed_form"] - p["lambda_min_lanczos"]) < 1e-8
        assert p["final_class"] == "global_minimum"
        assert abs(p["final_gap"]) < 1e-9
    for e in data["explore"]:
        assert set(e["counts"]) == {"global_minimum"}
        assert e["max_gap"] < 1e-9
    assert data["summary"]["all_saddles_certified"] and data["summary"]["all_escapes_to_global"]


@pytest.mark.slow
def test_open_questions_quick(tmp_path):
    open_questions.main(["--quick", "--workdir", str(tmp_path)])
    data = _outputs(tmp_path, "open_questions")
    a = data["a"]
    for row in a["rows"]:
        assert row["d"] <= a["config"]["K"]  # the case Theorem 3.3 leaves open
        for p in row["probes"]:
            if p["above_f_star"]:
                assert p["verdict"] == "strict_saddle"
                assert p["rayleigh_quotient"] < -p["tau"]
                assert p["lambda_min_closed_form"] >= p["lambda_min_lanczos"] - 1e-8
            assert p["final_class"] == "global_minimum"
        assert row["explore"]["counts"].get("spurious_local_minimum", 0) == 0
    assert a["finding"]["num_saddles_constructed"] >= 1
    assert a["finding"]["all_saddles_negative_curvature"]
    for q in ("b", "c"):
        finding = data[q]["finding"]
        assert finding["runs_not_minima"] == 0
        assert finding["max_value_spread"] < 1e-9  # every certified minimum at one value
        for row in data[q]["rows"]:
            assert row["num_minima"] == sum(row["counts"].values())
            assert row["max_grad_norm"] <= 1e-10
            # neural collapse at the minima (d >= K in the quick sizes)
            assert row["nc1_max"] < 1e-8
            assert row["nc2_means_centered_max"] < 1e-6
            assert row["nc3_max"] < 1e-6
    # CE with weight decay on b: the bias is zero at the minimum (Zhu et al. 2021)
    assert all(row["bias_abs_max"] < 1e-6 for row in data["c"]["rows"])
