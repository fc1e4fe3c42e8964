"""Bad input to `nc-jax theory` and to the Python API behind it: refused cleanly.

CLI: exit status 2, one error line on stderr naming the flag, nothing on stdout, no
traceback, refused before any heavy work. Python API: TypeError for a wrong type,
ValueError for a value out of range, each naming the argument.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nc_jax import cli, io, theory, ufm
from nc_jax.io import ExitCode
from nc_jax.ufm import UFMProblem

GiB = 2**30


def _run(argv, capsys):
    try:
        rc = cli.main(argv)
    except SystemExit as exc:  # argparse's own errors (types, unknown flags)
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err


# (argv after "theory", text the one error line must contain)
BAD_CLI = [
    (["--K", "1"], "--K: num_classes must be an integer >= 2; got 1"),
    (["--K", "-3"], "--K: num_classes must be an integer >= 2; got -3"),
    (["--K", "2.5"], "argument --K: invalid int value: '2.5'"),
    (["--K", "ten"], "argument --K: invalid int value: 'ten'"),
    (["--n", "0"], "--n: n_per_class must be an integer >= 1; got 0"),
    (["--d", "0"], "--d: feature_dim must be an integer >= 1; got 0"),
    (["--d", "-1"], "--d: feature_dim must be an integer >= 1; got -1"),
    (["--lambda-W", "-1"], "--lambda-W: lambda_W must be finite and >= 0 (accepted range [0, inf)); got -1.0"),
    (["--lambda-H", "nan"], "--lambda-H: lambda_H must be finite and >= 0 (accepted range [0, inf)); got nan"),
    (["--lambda-b", "inf"], "--lambda-b: lambda_b must be finite and >= 0 (accepted range [0, inf)); got inf"),
    (["--lambda-b", "-0.5"], "--lambda-b: lambda_b must be finite and >= 0"),
    (["--lambda-b", "x"], "argument --lambda-b: invalid float value: 'x'"),
    (["--lambda-W", "0", "--lambda-H", "1"], "--lambda-W/--lambda-H: lambda_W and lambda_H must be both > 0 or both 0"),
    (["--lambda-W", "5e-324"], "--lambda-W: lambda_W = 5e-324 is not 0 but below the smallest normal float64"),
    (["--K", "1000000"], "--K 1000000 --n 100 --d 512 needs about"),
    (["--K", "20000", "--n", "1", "--d", "1"], "--K 20000 --n 1 --d 1 needs about"),
    (["--K", "4", "--n", "10000000000", "--d", "1"], "--K 4 --n 10000000000 --d 1 needs about"),
    (["--d", "1000000000000"], "--K 10 --n 100 --d 1000000000000 needs about"),
    (["--bogus"], "nc-jax theory: error: unrecognized arguments: --bogus"),
]


@pytest.mark.parametrize("argv,needle", BAD_CLI, ids=[" ".join(a) for a, _ in BAD_CLI])
def test_bad_cli_input_is_refused_cleanly(argv, needle, capsys, monkeypatch):
    # a fixed 8 GiB of available memory: the memory refusals do not depend on this machine
    monkeypatch.setattr(io, "available_memory_bytes", lambda: 8 * GiB)
    start = time.perf_counter()
    rc, out, err = _run(["theory", *argv], capsys)
    elapsed = time.perf_counter() - start
    assert rc == ExitCode.USAGE
    assert out == ""
    assert needle in err, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("nc-jax theory: error:"), err
    assert elapsed < 2.0, f"refusal took {elapsed:.2f} s"


def test_memory_refusal_names_the_estimate_and_what_is_available(capsys, monkeypatch):
    monkeypatch.setattr(io, "available_memory_bytes", lambda: 8 * GiB)
    rc, _, err = _run(["theory", "--K", "1000000"], capsys)
    assert rc == ExitCode.USAGE
    estimate = theory.memory_estimate(UFMProblem(1_000_000, 100, 512))
    assert estimate > 2**50  # the K x N targets and the d x N features alone
    assert "PiB of memory; this machine has 8 GiB available" in err


def test_default_sizes_fit_in_8_gib(monkeypatch):
    monkeypatch.setattr(io, "available_memory_bytes", lambda: 8 * GiB)
    estimate = theory.memory_estimate(UFMProblem(10, 100, 512))
    assert estimate < GiB
    io.check_memory(estimate, "--K 10 --n 100 --d 512")  # no refusal


# (callable, exception type, text the message must contain: the argument and its value)
BAD_API = [
    (lambda: UFMProblem(3, 2, 4, lambda_b="0.1"), TypeError, "lambda_b must be a real number"),
    (lambda: UFMProblem(3, 2, 4, lambda_W=None), TypeError, "lambda_W must be a real number"),
    (lambda: UFMProblem(3, 2, 4, lambda_H=True), TypeError, "lambda_H must be a real number"),
    (lambda: UFMProblem(3, 2, 4, lambda_H=float("nan")), ValueError, "lambda_H must be finite and >= 0"),
    (lambda: UFMProblem(3, 2, 4, lambda_W=-1e-3), ValueError, "lambda_W must be finite and >= 0"),
    (lambda: UFMProblem(3, 2, 4, lambda_b=np.float64("inf")), ValueError, "lambda_b must be finite and >= 0"),
    (lambda: UFMProblem(True, 2, 4), TypeError, "num_classes must be an integer >= 2"),
    (lambda: UFMProblem(4.0, 2, 4), TypeError, "num_classes must be an integer >= 2 (int or numpy integer); got 4.0"),
    (lambda: UFMProblem(3, "2", 4), TypeError, "n_per_class must be an integer >= 1"),
    (lambda: UFMProblem(3, 2, None), TypeError, "feature_dim must be an integer >= 1"),
    (lambda: UFMProblem(3, 2, 0), ValueError, "feature_dim must be an integer >= 1; got 0"),
    (lambda: UFMProblem(3, 2, 4, alpha=0.0, loss="rescaled_mse"), ValueError, "alpha must be finite and > 0"),
    (lambda: UFMProblem(3, 2, 4, M=-1.0, loss="rescaled_mse"), ValueError, "M must be finite and > 0"),
    (lambda: UFMProblem(3, 2, 4, M="1"), TypeError, "M must be a real number"),
    (lambda: UFMProblem(3, 2, 4, loss="hinge"), ValueError, "loss must be one of"),
    (lambda: UFMProblem(3, 2, 4, bias=1), TypeError, "bias must be True or False"),
    (lambda: theory.lemma_b2_critical_point(UFMProblem(3, 2, 4, 0.01, 0.01, 0.0, bias=False), -1),
     ValueError, "kept must be a count in [0, 3]"),
    (lambda: theory.lemma_b2_critical_point(UFMProblem(3, 2, 4, 0.01, 0.01, 0.0, bias=False), (1, 1)),
     ValueError, "kept must be distinct indices in [0, 3)"),
    (lambda: theory.ufm_critical_point(UFMProblem(3, 2, 4, 0.01, 0.01, 0.1), (0, 2)),
     ValueError, "kept must be distinct indices in [0, 2)"),
    (lambda: theory.global_minimum(UFMProblem(3, 2, 4), dtype=jnp.float16),
     TypeError, "global_minimum: dtype must be float32 or float64"),
    (lambda: theory.global_minimum(UFMProblem(3, 2, 4, lambda_W=1e-310)),
     ValueError, "lambda_W = 1e-310 is not 0 but below the smallest normal float64"),
    (lambda: ufm.init_params(jax.random.key(0), UFMProblem(3, 2, 4), "1"), TypeError, "scale must be a real number"),
    (lambda: ufm.init_params(jax.random.key(0), UFMProblem(3, 2, 4), dtype=jnp.int32),
     TypeError, "init_params: dtype must be"),
    (lambda: ufm.simplex_etf(3, 2.0), TypeError, "dim must be an integer >= 1"),
]


@pytest.mark.parametrize("call,exc,needle", BAD_API, ids=[f"{i}-{e.__name__}-{n[:30]}" for i, (_, e, n) in enumerate(BAD_API)])
def test_bad_python_input_raises_naming_the_argument(call, exc, needle):
    with pytest.raises(exc) as info:
        call()
    assert type(info.value) is exc
    assert needle in str(info.value), str(info.value)
