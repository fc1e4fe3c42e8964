"""Tests of nc_jax.distributed: the flags' checks, and real runs of two CPU processes.

The two-process runs launch ``python -m nc_jax.cli`` twice on 127.0.0.1 (a free port; CPU
collectives through gloo) and compare with one process: the exploration must be the same
bit for bit (every run depends only on its own key), training the same up to float32
reduction order (the batch statistics and gradients are summed over two devices).
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from nc_jax import cli, distributed

REPO = Path(__file__).resolve().parent.parent
TRAIN_ARGS = ["train", "--dataset", "synthetic", "--width", "2", "--set", "stage_sizes=(1,)", "--batch-size", "8",
              "--set", "eval_batch_size=16", "--no-progress", "--epochs", "1", "--set", "plots=False",
              "--set", "eval_test=False"]  # the smallest run of test_train.py, without the test-set pass
LANDSCAPE_ARGS = ["landscape", "--K", "3", "--n", "2", "--d", "4", "--num-inits", "5", "--num-steps", "200"]


# ----------------------------------------------------------------------------- the flags


_BAD_FLAGS = [
    (["--num-processes", "0", "--process-id", "0", "--coordinator-address", "127.0.0.1:1234"],
     "--num-processes must be >= 1; got 0"),
    (["--num-processes", "2", "--process-id", "2", "--coordinator-address", "127.0.0.1:1234"],
     "--process-id must be in [0, 2) (--num-processes 2); got 2"),
    (["--num-processes", "2", "--process-id", "-1", "--coordinator-address", "127.0.0.1:1234"],
     "--process-id must be in [0, 2) (--num-processes 2); got -1"),
    (["--num-processes", "2", "--process-id", "0", "--coordinator-address", "localhost"],
     "--coordinator-address must look like HOST:PORT with PORT in [1, 65535] (e.g. 10.0.0.1:12345); "
     "got 'localhost'"),
    (["--num-processes", "2", "--process-id", "0", "--coordinator-address", "host:99999"],
     "--coordinator-address must look like HOST:PORT"),
    (["--num-processes", "2"],
     "--num-processes needs --coordinator-address and --process-id as well"),
    (["--coordinator-address", "127.0.0.1:1234", "--process-id", "1"],
     "--coordinator-address needs --num-processes as well"),
    (["--heartbeat-timeout", "0"], "--heartbeat-timeout must be >= 1 (seconds); got 0"),
]


@pytest.mark.parametrize("command, flags, message", [("landscape", *case) for case in _BAD_FLAGS]
                         + [(command, *_BAD_FLAGS[i]) for command in ("train", "verify") for i in (1, 5)])
def test_bad_flags_refused_before_any_work(tmp_path, capsys, monkeypatch, command, flags, message):
    for var in ("JAX_COORDINATOR_ADDRESS", "SLURM_JOB_ID", "OMPI_MCA_orte_hnp_uri"):
        monkeypatch.delenv(var, raising=False)
    workdir = tmp_path / "w"
    assert cli.main([command, "--workdir", str(workdir), *flags]) == 2
    out, err = capsys.readouterr()
    assert err.startswith(f"nc-jax {command}: error: {message}") and err.count("\n") == 1, err
    assert "Traceback" not in out + err and not workdir.exists()


def test_library_checks_name_the_parameter():
    with pytest.raises(ValueError, match=r"process_id must be in \[0, 3\) \(num_processes 3\); got 3"):
        distributed.check_arguments("10.0.0.1:80", 3, 3)
    with pytest.raises(ValueError, match="num_processes must be an integer; got 2.0"):
        distributed.check_arguments("10.0.0.1:80", 2.0, 0)
    with pytest.raises(ValueError, match="coordinator_address must look like HOST:PORT"):
        distributed.check_arguments("10.0.0.1", 2, 0)
    distributed.check_arguments("[::1]:8476", 2, 1)  # IPv6 is a HOST
    distributed.check_arguments("node-07.cluster:8476", 1, 0)


def test_cluster_environment_allows_partial_flags(monkeypatch):
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "10.0.0.1:1234")
    assert distributed.cluster_environment() == "JAX_COORDINATOR_ADDRESS"
    distributed.check_arguments(None, 4, 2)  # JAX fills in the address
    monkeypatch.delenv("JAX_COORDINATOR_ADDRESS")
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    with pytest.raises(ValueError, match="num_processes needs coordinator_address and process_id"):
        distributed.check_arguments(None, 4, None)


def test_one_process_is_left_alone(monkeypatch):
    """No flags, no cluster: nothing is initialized, the blocks are everything."""
    monkeypatch.delenv("JAX_COORDINATOR_ADDRESS", raising=False)
    assert distributed.initialize() is False
    assert distributed.is_primary()
    assert distributed.process_slice(5) == slice(0, 5) and distributed.process_block(5) == 5
    tree = {"a": np.arange(5.0)}
    assert distributed.allgather_blocks(tree, 5) is tree
    assert distributed.broadcast_string("runs/x") == "runs/x"


# ----------------------------------------------------------------------------- two processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env():
    # one CPU device per process; the persistent compilation cache off (conftest sets it)
    return dict(os.environ, JAX_PLATFORMS="cpu", NC_JAX_CACHE_DIR="off")


def _start(args, workdir, tmp_path, num_processes=2, extra=()):
    """``num_processes`` processes of ``nc-jax ARGS`` (stdout and stderr to files)."""
    port = _free_port()
    procs = []
    for i in range(num_processes):
        flags = ["--coordinator-address", f"127.0.0.1:{port}", "--num-processes", str(num_processes),
                 "--process-id", str(i), "--initialization-timeout", "60", *extra]
        with open(tmp_path / f"p{i}.out", "w") as out, open(tmp_path / f"p{i}.err", "w") as err:
            procs.append(subprocess.Popen([sys.executable, "-m", "nc_jax.cli", *args, "--workdir", str(workdir),
                                           *flags], cwd=REPO, env=_env(), stdout=out, stderr=err))
    return procs


def _wait(procs, tmp_path, timeout):
    deadline = time.time() + timeout
    try:
        for p in procs:
            p.wait(timeout=max(1.0, deadline - time.time()))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return [(p.returncode, (tmp_path / f"p{i}.out").read_text(), (tmp_path / f"p{i}.err").read_text())
            for i, p in enumerate(procs)]


def _ours(stdout: str) -> list:
    """The lines of ``stdout`` that nc-jax printed (gloo prints from C++, past sys.stdout)."""
    return [line for line in stdout.splitlines() if not line.startswith("[Gloo]")]


def _start_single(args, workdir):
    """The one-process reference, started alongside the two (the test waits for both)."""
    return subprocess.Popen([sys.executable, "-m", "nc_jax.cli", *args, "--workdir", str(workdir)], cwd=REPO,
                            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _single(proc, workdir, timeout):
    try:
        _, stderr = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr[-3000:]
    return json.loads((workdir / "results.json").read_text())


@pytest.mark.slow
def test_two_processes_train_like_one(tmp_path):
    """A global batch of 8 split over two processes (4 rows each): the same epoch as one
    process on one device, up to float32 reduction order (tolerances of
    test_train.test_four_devices_match_one_device); orbax checkpoints written by both."""
    two, one = tmp_path / "two", tmp_path / "one"
    reference = _start_single(TRAIN_ARGS, one)
    try:
        results = _wait(_start(TRAIN_ARGS, two, tmp_path), tmp_path, timeout=300)
    finally:
        single = _single(reference, one, timeout=300)
    for code, out, err in results:
        assert code == 0, err[-3000:]
    assert "epoch    1/1" in results[0][1] and _ours(results[1][1]) == []  # only process 0 prints
    multi = json.loads((two / "results.json").read_text())
    assert multi["num_processes"] == 2 and multi["num_devices"] == 2 and multi["steps_per_epoch"] == 4
    assert (two / "checkpoints" / "1").is_dir() and (two / "final_features.npz").is_file()
    assert single["num_processes"] == 1 and single["num_devices"] == 1
    a, b = single["history"][0], multi["history"][0]
    for key in ("train_objective", "train_batch_accuracy", "train_loss", "train_accuracy", "weight_decay_term"):
        np.testing.assert_allclose(b[key], a[key], rtol=1e-4, atol=1e-5, err_msg=key)
    for key in ("nc1", "nc2", "nc3", "numerical_rank"):
        np.testing.assert_allclose(b["train_nc"][key], a["train_nc"][key], rtol=1e-3, err_msg=key)


@pytest.mark.slow
def test_two_processes_explore_like_one(tmp_path):
    """Five inits over two processes (3 + 2, the second block padded): every run's numbers
    equal the single process's bit for bit, and only process 0 writes."""
    two, one = tmp_path / "two", tmp_path / "one"
    reference = _start_single(LANDSCAPE_ARGS, one)
    try:
        results = _wait(_start(LANDSCAPE_ARGS, two, tmp_path), tmp_path, timeout=600)
    finally:
        single = _single(reference, one, timeout=600)
    for code, out, err in results:
        assert code == 0, err[-3000:]
    assert "BENIGN" in results[0][1] and _ours(results[1][1]) == []
    multi = json.loads((two / "results.json").read_text())
    a, b = single["configuration"], multi["configuration"]
    assert a["runs"]["label"] == b["runs"]["label"] and a["counts"] == b["counts"] and a["inits"] == 5
    for key, values in a["runs"].items():
        if key != "label":
            np.testing.assert_array_equal(np.asarray(b["runs"][key], float), np.asarray(values, float), err_msg=key)
    assert a["minimum_values"] == b["minimum_values"] and single["ufm"]["max_nc1"] == multi["ufm"]["max_nc1"]


@pytest.mark.parametrize("victim", [1, 0])
def test_a_dead_process_stops_the_other(tmp_path, victim):
    """SIGKILL one of two processes in the middle of a long exploration: the other exits
    with a non-zero status within the heartbeat timeout (5 s) plus slack, instead of hanging."""
    long_run = ["landscape", "--K", "3", "--n", "2", "--d", "4", "--num-inits", "64", "--num-steps", "100000"]
    procs = _start(long_run, tmp_path / "w", tmp_path, extra=["--heartbeat-timeout", "5"])
    try:
        deadline = time.time() + 60
        # process 0 prints once both joined (its first line comes after initialize)
        while "writing to" not in (tmp_path / "p0.out").read_text():
            assert time.time() < deadline and all(p.poll() is None for p in procs), (tmp_path / "p0.err").read_text()
            time.sleep(0.1)
        procs[victim].send_signal(signal.SIGKILL)
        t0 = time.time()
        survivor = procs[1 - victim]
        code = survivor.wait(timeout=45)
        assert code != 0 and time.time() - t0 < 45
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


@pytest.mark.slow
def test_two_processes_resume_from_their_checkpoint(tmp_path):
    """One epoch in two processes, then a second one resumed by two processes from the orbax
    checkpoint both wrote: the history of one process training two epoch straight."""
    two, one = tmp_path / "two", tmp_path / "one"
    reference = _start_single([*TRAIN_ARGS, "--epochs", "2"], one)
    try:
        for epochs in ("1", "2"):
            for code, out, err in _wait(_start([*TRAIN_ARGS, "--epochs", epochs], two, tmp_path), tmp_path,
                                        timeout=300):
                assert code == 0, err[-3000:]
    finally:
        single = _single(reference, one, timeout=600)
    assert "resumed from epoch 1" in (tmp_path / "p0.out").read_text()
    multi = json.loads((two / "results.json").read_text())
    assert multi["epoch_extensions"] == [{"from_epochs": 1, "to_epochs": 2}] and len(multi["history"]) == 2
    for a, b in zip(single["history"], multi["history"]):
        for key in ("train_objective", "train_loss", "weight_decay_term"):
            np.testing.assert_allclose(b[key], a[key], rtol=1e-4, atol=1e-5, err_msg=key)
        np.testing.assert_allclose(b["train_nc"]["nc1"], a["train_nc"]["nc1"], rtol=1e-3)
