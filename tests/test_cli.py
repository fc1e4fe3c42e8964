"""The command line: `nc-jax theory` prints what global_minimum computes."""

import json

import numpy as np

from nc_jax import cli, theory
from nc_jax.ufm import UFMProblem


def test_theory_json_matches_library(capsys):
    rc = cli.main(["theory", "--K", "4", "--n", "3", "--d", "4", "--lambda-W", "0.01",
                   "--lambda-H", "0.02", "--lambda-b", "1.0", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    gm = theory.global_minimum(UFMProblem(4, 3, 4, 0.01, 0.02, 1.0))
    assert out["regime"] == "shifted_etf"
    np.testing.assert_allclose(out["f_star"], float(gm.value), rtol=1e-15)
    np.testing.assert_allclose(out["b_star"], np.sqrt(3 * 0.01 * 0.02) / 1.0, rtol=1e-12)


def test_theory_text_default(capsys):
    assert cli.main(["theory"]) == 0
    text = capsys.readouterr().out
    assert "regime        : simplex_etf" in text and "f*" in text


def test_theory_bad_input_is_a_clear_error(capsys):
    assert cli.main(["theory", "--K", "1"]) == 2
    assert "num_classes must be an integer >= 2" in capsys.readouterr().out


def test_no_bias_flag(capsys):
    assert cli.main(["theory", "--K", "3", "--n", "2", "--d", "2", "--no-bias", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["regime"] == "no_bias_low_rank"
