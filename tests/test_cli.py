"""The command line: `nc-jax theory` prints what global_minimum computes."""

import json
import math

import numpy as np
import pytest

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


def test_theory_bad_input_is_a_clear_error_on_stderr(capsys):
    assert cli.main(["theory", "--K", "1"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip() == "nc-jax theory: error: --K: num_classes must be an integer >= 2; got 1"


def _strict_json(text):
    def refuse(constant):
        raise ValueError(f"non-strict JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


def test_theory_underflowing_lambdas_give_the_right_regime(capsys):
    """lambda_W lambda_H = 1e-400 underflows; t = 1e-200 sqrt(K N) = 1e-198 > lambda_b = 1e-300."""
    rc = cli.main(["theory", "--lambda-W", "1e-200", "--lambda-H", "1e-200", "--lambda-b", "1e-300", "--json"])
    assert rc == 0
    out = _strict_json(capsys.readouterr().out)
    assert out["regime"] == "simplex_etf"
    assert out["b_star"] == 1 / (10 * (1 + 1e-300))
    np.testing.assert_allclose(out["t"], 1e-198, rtol=1e-15)
    np.testing.assert_allclose(out["lambda_b_threshold"], 1e-198, rtol=1e-15)
    assert out["lambda_W_lambda_H"] is None
    assert any(note.startswith("lambda_W_lambda_H: underflows float64") for note in out["notes"])


def test_theory_overflowing_lambdas_give_strict_json_with_notes(capsys):
    argv = ["theory", "--K", "4", "--n", "3", "--d", "5",
            "--lambda-W", "1e300", "--lambda-H", "1e300", "--lambda-b", "1e300"]
    assert cli.main(argv + ["--json"]) == 0
    text = capsys.readouterr().out
    assert "Infinity" not in text and "NaN" not in text
    out = _strict_json(text)
    assert out["regime"] == "zero"
    np.testing.assert_allclose(out["f_star"], 0.5, rtol=2e-16)  # 1/2 - O(1e-300): W* = H* = 0, b* ~ 0
    assert out["lambda_W_lambda_H"] is None and out["lambda_b_threshold"] is None
    fields = [note.split(":")[0] for note in out["notes"]]
    assert fields == ["lambda_W_lambda_H", "lambda_b_threshold"]
    assert "overflows" in out["notes"][0] and "infinite" in out["notes"][1]
    for key, value in out.items():  # every other number is finite
        if isinstance(value, float):
            assert np.isfinite(value), key
    # the text output does not crash and shows the notes
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    assert "regime        : zero" in text
    assert "lambda_b threshold t/(1-t) = null" in text
    assert "note: lambda_b_threshold: infinite" in text


def test_theory_json_is_strict_when_t_overflows(capsys):
    """t = sqrt(K N) 1.7e308 overflows float64: null, with a note saying so."""
    argv = ["theory", "--K", "3", "--n", "2", "--d", "4", "--lambda-W", "1.7e308", "--lambda-H", "1.7e308", "--json"]
    assert cli.main(argv) == 0
    out = _strict_json(capsys.readouterr().out)
    assert out["regime"] == "zero"
    assert out["t"] is None and out["lambda_W_lambda_H"] is None and out["lambda_b_threshold"] is None
    assert [note.split(":")[0] for note in out["notes"]] == ["lambda_W_lambda_H", "t", "lambda_b_threshold"]
    assert "t: overflows float64 (it is about 10^308.9)" in out["notes"][1]


def test_theory_extreme_ratio_of_lambdas_stays_finite(capsys):
    """lambda_H / lambda_W = 1e608: (lambda_H/lambda_W)^(1/4) is taken as a ratio of fourth roots."""
    argv = ["theory", "--K", "3", "--n", "2", "--d", "4", "--lambda-W", "3e-308", "--lambda-H", "1e300", "--json"]
    assert cli.main(argv) == 0
    out = _strict_json(capsys.readouterr().out)
    assert out["regime"] == "simplex_etf" and out["notes"] == []
    # ||W*||^2 = sqrt(lambda_H/lambda_W) sum(eta), ||H*||^2 = sqrt(lambda_W/lambda_H) sum(eta)
    root_ratio = math.sqrt(1e300) / math.sqrt(3e-308)
    assert 1e300 < out["norm_W_sq"] < 1e310 and 0 < out["norm_H_sq"] < 1e-300
    assert out["norm_W_sq"] / root_ratio == pytest.approx(out["norm_H_sq"] * root_ratio, rel=1e-12)
    assert out["gamma"] == pytest.approx(1 / 3, rel=1e-12)


def test_theory_help_documents_every_option(capsys):
    with pytest.raises(SystemExit):
        cli.main(["theory", "--help"])
    text = capsys.readouterr().out
    _, subparsers = cli.build_parser()
    for action in subparsers["theory"]._actions:
        assert action.help, action.option_strings
    for flag in ("--lambda-W", "--lambda-H", "--lambda-b"):
        assert flag in text
    assert "weight decay on the bias b" in text and "(default: 0.0005)" in text


def test_no_bias_flag(capsys):
    assert cli.main(["theory", "--K", "3", "--n", "2", "--d", "2", "--no-bias", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["regime"] == "no_bias_low_rank"
