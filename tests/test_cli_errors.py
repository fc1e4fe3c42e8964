"""Bad input to `nc-jax verify` and `nc-jax landscape`: exit 2, one line on stderr naming the
argument, no traceback, nothing left on disk; and an exit-code contract that says
INCONCLUSIVE when the runs are no evidence.

The theory and train subcommands have their own tables (test_cli_theory_errors.py,
test_cli_train_errors.py).
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from nc_jax import cli
from nc_jax.io import ExitCode
from nc_jax.landscape import CLASS_NAMES, Verdict, summarize


def _run(argv, capsys):
    try:
        rc = cli.main(argv)
    except SystemExit as exc:  # argparse's own errors (types, choices, unknown flags)
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err


# (argv, text the one-line error must contain)
BAD = [
    (["verify", "--num-inits", "0"], "--num-inits"),
    (["verify", "--num-inits", "-5"], "--num-inits"),
    (["verify", "--num-steps", "0"], "--num-steps"),
    (["verify", "--learning-rate", "-1"], "--learning-rate"),
    (["verify", "--learning-rate", "nan"], "--learning-rate"),
    (["verify", "--learning-rate", "inf"], "--learning-rate"),
    (["verify", "--min-certified-share", "0"], "--min-certified-share"),
    (["verify", "--min-certified-share", "1.5"], "--min-certified-share"),
    (["verify", "--num-inits", "100000000"], "--num-inits"),
    (["verify", "--num-inits", "three"], "--num-inits"),
    (["verify", "--bogus"], "nc-jax verify: error: unrecognized arguments: --bogus"),
    (["landscape", "--learning-rate", "-1"], "--learning-rate"),
    (["landscape", "--learning-rate", "0"], "--learning-rate"),
    (["landscape", "--num-inits", "0"], "--num-inits"),
    (["landscape", "--K", "1"], "--K"),
    (["landscape", "--n", "0"], "--n"),
    (["landscape", "--d", "0"], "--d"),
    (["landscape", "--lambda-W", "-1"], "--lambda-W"),
    (["landscape", "--lambda-H", "nan"], "--lambda-H"),
    (["landscape", "--lambda-b", "inf"], "--lambda-b"),
    (["landscape", "--loss", "hinge"], "--loss"),
    (["landscape", "--K", "100000"], "memory"),
    (["landscape", "--m", "2"], "nc-jax landscape: error: unrecognized arguments: --m"),
]


@pytest.mark.parametrize("argv,needle", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_is_refused_cleanly(argv, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, out, err = _run(argv, capsys)
    assert rc == ExitCode.USAGE
    assert needle in err, err
    assert "Traceback" not in out + err
    # one error line, last (argparse prints its usage above it)
    assert err.strip().splitlines()[-1].startswith(f"nc-jax {argv[0]}: error:"), err
    assert list(tmp_path.iterdir()) == []  # no runs/ folder, no workdir


@pytest.mark.parametrize("command", ["verify", "landscape"])
@pytest.mark.parametrize("kind", ["file", "under_file", "read_only"])
def test_bad_workdir(command, kind, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    existing = tmp_path / "existing"
    existing.write_text("keep me")
    workdir = {"file": existing, "under_file": existing / "sub", "read_only": Path("/proc/nc_jax_test")}[kind]
    rc, out, err = _run([command, "--workdir", str(workdir)], capsys)
    assert rc == ExitCode.USAGE and "--workdir" in err and "Traceback" not in out + err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing"]
    assert existing.read_text() == "keep me"


def test_help_names_every_default(capsys):
    for command in ("verify", "landscape"):
        with pytest.raises(SystemExit):
            cli.main([command, "--help"])
        text = capsys.readouterr().out
        assert "exit status" in text and "INCONCLUSIVE" in text
        for flag in ("--workdir", "--seed", "--num-inits", "--num-steps", "--learning-rate", "--min-certified-share"):
            assert flag in text
        assert "(default:" in text


# ---- the verdict needs evidence ---------------------------------------------------------


class _Cls:
    def __init__(self, labels):
        self.label = np.asarray([CLASS_NAMES.index(x) for x in labels], dtype=np.int32)


class _Result:
    def __init__(self, labels, values, f_star):
        self.classification = _Cls(labels)
        self.value = np.asarray(values, dtype=float)
        self.f_star = f_star


@pytest.mark.parametrize(
    "labels,values,f_star,share,expected",
    [
        (["global_minimum"] * 3 + ["strict_saddle"], [1.0, 1.0, 1.0, 2.0], 1.0, 0.5, Verdict.BENIGN),
        (["diverged"] * 4, [np.nan] * 4, 1.0, 0.5, Verdict.INCONCLUSIVE),
        (["global_minimum"] + ["diverged"] * 3, [1.0] + [0.0] * 3, 1.0, 0.5, Verdict.INCONCLUSIVE),
        (["global_minimum"] + ["diverged"] * 3, [1.0] + [0.0] * 3, 1.0, 0.25, Verdict.BENIGN),
        (["strict_saddle"] * 4, [2.0] * 4, 1.0, 0.5, Verdict.INCONCLUSIVE),  # no minimum reached
        (["not_converged", "inconclusive", "global_minimum", "not_converged"], [0.0, 1.0, 1.0, 3.0], 1.0, 0.5,
         Verdict.INCONCLUSIVE),
        # one certified spurious minimum is a finding even among diverged runs
        (["spurious_local_minimum"] + ["diverged"] * 7, [1.5] + [0.0] * 7, 1.0, 0.5, Verdict.SPURIOUS),
        (["local_minimum"] * 3, [1.0, 1.0 + 1e-12, 1.0], None, 0.5, Verdict.SINGLE_LEVEL),
        (["local_minimum"] * 3, [1.0, 1.5, 1.0], None, 0.5, Verdict.MULTIPLE_LEVELS),
    ],
)
def test_summarize_verdict_needs_evidence(labels, values, f_star, share, expected):
    s = summarize(_Result(labels, values, f_star), min_certified_share=share)
    assert s.verdict == expected, s.reasons
    assert s.num_runs == len(labels) and sum(s.counts.values()) == len(labels)
    assert s.reasons


def test_summarize_groups_minimum_levels():
    s = summarize(_Result(["local_minimum"] * 5, [2.0, 1.0, 1.0 + 1e-12, 2.0 + 1e-11, 3.0], None))
    assert s.minimum_values == pytest.approx((1.0, 2.0, 3.0), abs=1e-10)
    assert s.minimum_counts == (2, 2, 1)


@pytest.mark.slow
def test_landscape_diverging_learning_rate_is_inconclusive(tmp_path, capsys):
    rc, out, err = _run(["landscape", "--learning-rate", "100", "--num-inits", "8", "--num-steps", "500",
                         "--workdir", str(tmp_path)], capsys)
    assert rc == ExitCode.INCONCLUSIVE, out + err
    assert "INCONCLUSIVE" in out and "OK" not in out.splitlines()[-1]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["verdict"] == "INCONCLUSIVE" and results["exit_code"] == 3
    assert results["configuration"]["counts"]["diverged"] == 8


@pytest.mark.slow
def test_verify_diverging_learning_rate_is_inconclusive(tmp_path, capsys):
    # same shapes as test_landscape.py::test_verify_quick_end_to_end: the programs are reused
    rc, out, err = _run(["verify", "--quick", "--learning-rate", "50", "--workdir", str(tmp_path)], capsys)
    assert rc == ExitCode.INCONCLUSIVE, out + err
    assert "nc-jax verify: INCONCLUSIVE" in out and "nc-jax verify: OK" not in out
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["verdict"] == "INCONCLUSIVE" and not results["ok"] and results["exit_code"] == 3
    assert all(row["verdict"] == "INCONCLUSIVE" for row in results["configurations"])
    report = (tmp_path / "report.md").read_text()
    assert "**Verdict: INCONCLUSIVE" in report and "No spurious local minimum" not in report


def test_verify_kill_leaves_no_half_written_file(tmp_path):
    workdir = tmp_path / "w"
    proc = subprocess.Popen([sys.executable, "-m", "nc_jax.cli", "verify", "--quick", "--workdir", str(workdir)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = proc.stdout.readline()
        assert "writing to" in line, line
        time.sleep(3.0)  # inside the first exploration
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        proc.stdout.close()
    left = sorted(p.name for p in workdir.iterdir())
    assert not [n for n in left if n.endswith(".tmp")]
    for name in left:  # anything that is there is whole
        if name.endswith(".json"):
            json.loads((workdir / name).read_text())


# ---- the Python API refuses the same misuse, before any work ----------------------------


def _api_cases():
    import jax
    import jax.numpy as jnp

    from nc_jax import landscape, ufm
    from nc_jax.ufm import UFMParams, UFMProblem

    p = UFMProblem(3, 2, 4, 1e-2, 1e-2, 1e-2)
    key = jax.random.key(0)
    no_b = UFMParams(jnp.zeros((3, 4)), jnp.zeros((4, 6)), None)
    wrong_W = UFMParams(jnp.zeros((4, 3)), jnp.zeros((4, 6)), jnp.zeros(3))
    return [
        ("num_inits", lambda: landscape.explore(p, key=key, num_inits=0)),
        ("num_inits", lambda: landscape.explore(p, key=key, num_inits=2.5)),
        ("num_steps", lambda: landscape.explore(p, key=key, num_inits=2, num_steps=-1)),
        ("learning_rate", lambda: landscape.explore(p, key=key, num_inits=2, learning_rate=-1.0)),
        ("learning_rate", lambda: landscape.explore(p, key=key, num_inits=2, learning_rate=float("nan"))),
        ("grad_tol", lambda: landscape.explore(p, key=key, num_inits=2, grad_tol=0.0)),
        ("engine", lambda: landscape.explore(p, key=key, num_inits=2, engine="fast")),
        ("num_inits", lambda: landscape.explore(p, key=key, num_inits=10**12)),  # memory
        ("params.b", lambda: landscape.classify(p, no_b, jnp.asarray(0.0), key=key)),
        ("params.W", lambda: landscape.classify(p, wrong_W, jnp.asarray(0.0), key=key)),
        ("params", lambda: landscape.classify(p, (1, 2, 3), jnp.asarray(0.0), key=key)),
        ("min_certified_share", lambda: landscape.summarize(None, min_certified_share=0.0)),
        ("scales", lambda: landscape.multistart_descent(p, key=key, num_inits=2, scales=(-1.0,))),
        ("loss", lambda: landscape.saddle_probe(p.replace(loss="ce"), 1, key=key)),
        ("params.b", lambda: ufm.objective(no_b, p)),
    ]


@pytest.mark.parametrize("case", range(15))
def test_api_bad_input_names_the_argument(case):
    name, call = _api_cases()[case]
    with pytest.raises((ValueError, TypeError)) as info:
        call()
    message = str(info.value)
    assert name.split(".")[0] in message or name in message, message


# ---- outputs a person reads: permissions, atomic writes, unique folders ------------------


def test_io_outputs_group_readable_atomic_and_unique(tmp_path, monkeypatch):
    import stat

    from matplotlib.figure import Figure

    from nc_jax import io

    monkeypatch.chdir(tmp_path)
    old = os.umask(0o022)
    try:
        a, b = io.make_workdir(None, "x"), io.make_workdir(None, "x")  # same second
        assert a != b and a.is_dir() and b.is_dir()
        io.write_json_atomic(a / "r.json", {"v": float("nan"), "w": np.float64(np.inf), "ok": [1, 2]})
        assert json.loads((a / "r.json").read_text()) == {"v": None, "w": None, "ok": [1, 2]}
        fig = Figure()
        fig.add_subplot(1, 1, 1).plot([0, 1])
        io.save_figure(fig, a / "p.png")
        for name in ("r.json", "p.png"):
            mode = stat.S_IMODE((a / name).stat().st_mode)
            assert mode == 0o644, oct(mode)  # not mkstemp's 0600
        assert sorted(p.name for p in a.iterdir()) == ["p.png", "r.json"]  # no temporary left
    finally:
        os.umask(old)
    with pytest.raises(TypeError):  # a non-serialisable value is refused whole, nothing written
        io.write_json_atomic(a / "bad.json", {"x": object()})
    assert not (a / "bad.json").exists() and not [p for p in a.iterdir() if p.name.endswith(".tmp")]
