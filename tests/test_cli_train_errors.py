"""Bad `nc-jax train` inputs: refused before any work with exit 2, one line naming the argument,
no traceback and nothing written (no runs/ folder, no workdir, existing files untouched)."""

import argparse
import gzip
import json
import pickle
import struct

import numpy as np
import pytest

from nc_jax import cli, train
from nc_jax.io import ExitCode, to_jsonable

TINY = dict(dataset="synthetic", width=2, stage_sizes=(1,), batch_size=16, eval_batch_size=16, progress=False)
TINY_ARGS = ["--dataset", "synthetic", "--width", "2", "--set", "stage_sizes=(1,)", "--batch-size", "16",
             "--set", "eval_batch_size=16", "--no-progress"]


# ----------------------------------------------------------------------------- fixtures written in tmp_path


def _idx_bytes(arr):
    return bytes([0, 0, 0x08, arr.ndim]) + b"".join(struct.pack(">I", s) for s in arr.shape) + arr.tobytes()


def _idx_dir(root, *, truncate=None, bad_label=None):
    rng = np.random.default_rng(0)
    root.mkdir()
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
              "train-labels-idx1-ubyte": np.repeat(np.arange(10, dtype=np.uint8), 2),
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (10, 28, 28), dtype=np.uint8),
              "t10k-labels-idx1-ubyte": np.arange(10, dtype=np.uint8)}
    if bad_label is not None:
        arrays["train-labels-idx1-ubyte"][3] = bad_label
    for name, a in arrays.items():
        raw = gzip.compress(_idx_bytes(a))
        if name == truncate:
            raw = raw[: len(raw) // 2]
        (root / (name + ".gz")).write_bytes(raw)
    return root


def _cifar_dir(root, *, garbage=None, bad_label=None):
    rng = np.random.default_rng(0)
    root.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = list(range(10))
        if name == "data_batch_2" and bad_label is not None:
            labels[4] = bad_label
        d = {b"data": rng.integers(0, 256, (10, 3072), dtype=np.uint8), b"labels": labels}
        (root / name).write_bytes(b"\x80garbage, not a pickle" if name == garbage else pickle.dumps(d))
    return root


def _trained_workdir(root, *, epochs=3, config=True, **over):
    """A workdir as a 3-epoch TINY run leaves it (config.json, results.json, checkpoint folders);
    the refusals must happen before orbax ever reads the (empty) checkpoints."""
    cfg = train.TrainConfig(**TINY, num_epochs=epochs, **over)
    for e in range(1, epochs + 1):
        (root / "checkpoints" / str(e)).mkdir(parents=True)
    if config:
        (root / "config.json").write_text(json.dumps({"config": to_jsonable(cfg.to_dict()),
                                                      "epoch_extensions": [], "data": None}))
        (root / "results.json").write_text(json.dumps({"config": to_jsonable(cfg.to_dict()), "status": "done",
                                                       "history": [{"epoch": e} for e in range(1, epochs + 1)]}))
    return root


def _write(name, text):
    def setup(tmp):
        (tmp / name).write_text(text)
        return str(tmp / name)
    return setup


# Each case: (id, argv with "{X}" replaced by setup(tmp_path)'s return value, setup, substrings of stderr).
CASES = [
    ("lr-nan", ["--lr", "nan"], None, ["--lr nan", "learning_rate", "finite number > 0"]),
    ("lr-negative", ["--lr", "-0.1"], None, ["--lr -0.1", "> 0"]),
    ("lr-inf-set", ["--set", "learning_rate=inf"], None, ["--set learning_rate=inf", "finite number > 0"]),
    ("weight-decay-inf", ["--weight-decay", "inf"], None, ["--weight-decay inf", "weight_decay", ">= 0"]),
    ("weight-decay-negative", ["--weight-decay=-1e-4"], None, ["--weight-decay -0.0001", ">= 0"]),
    ("alpha-nan", ["--alpha", "nan"], None, ["--alpha nan", "rescale_alpha", "> 0"]),
    ("M-inf", ["--M", "inf"], None, ["--M inf", "rescale_m", "> 0"]),
    ("momentum-out-of-range", ["--set", "momentum=1.5"], None, ["--set momentum=1.5", "[0, 1)"]),
    ("epochs-negative", ["--epochs", "-1"], None, ["--epochs -1", "num_epochs", ">= 0"]),
    ("seed-negative", ["--seed", "-2"], None, ["--seed -2", "seed", "[0, 2**63 - 1]"]),
    ("width-zero", ["--width", "0"], None, ["--width 0", "width", ">= 1"]),
    ("set-seed-float", ["--set", "seed=1.5"], None, ["--set seed=1.5", "must be an integer", "'1.5'"]),
    ("set-epochs-word", ["--set", "num_epochs=three"], None, ["--set num_epochs=three", "must be an integer"]),
    ("set-batch-not-int", ["--set", "batch_size=abc"], None, ["--set batch_size=abc", "must be an integer"]),
    ("set-stage-sizes-int", ["--set", "stage_sizes=2"], None, ["--set stage_sizes=2", "tuple of positive integers"]),
    ("set-bool-word", ["--set", "augment=maybe"], None, ["--set augment=maybe", "boolean"]),
    ("set-unknown-field", ["--set", "nope=1"], None, ["--set nope=1", "unknown TrainConfig field 'nope'",
                                                       "valid fields: dataset"]),
    ("set-no-equals", ["--set", "learning_rate"], None, ["--set expects FIELD=VALUE", "'learning_rate'"]),
    ("samples-zero", ["--samples-per-class", "0"], None, ["--samples-per-class 0", ">= 1"]),
    ("samples-negative", ["--samples-per-class", "-3"], None, ["--samples-per-class -3", ">= 1"]),
    ("samples-too-many-digits", ["--samples-per-class", "100000"], None,
     ["--samples-per-class 100000", "[1, 173]", "digits"]),
    ("samples-too-many-mnist", ["--dataset", "mnist", "--data-dir", "{X}", "--samples-per-class", "3"],
     lambda t: str(_idx_dir(t / "m")), ["--samples-per-class 3", "[1, 2]", "mnist training set"]),
    ("samples-synthetic", [*TINY_ARGS, "--samples-per-class", "3"], None,
     ["--samples-per-class 3", "synthetic_samples_per_class"]),
    ("width-too-big", ["--width", "100000"], None, ["--width 100000", "needs about", "TiB", "available"]),
    ("workdir-is-file", ["--workdir", "{X}"], _write("afile", "x"), ["--workdir", "existing file"]),
    ("workdir-under-file", ["--workdir", "{X}/sub"], _write("afile", "x"), ["--workdir", "is not a folder"]),
    ("workdir-proc", ["--workdir", "/proc/nc_jax_x"], None, ["--workdir", "/proc/nc_jax_x"]),
    ("config-syntax-error", ["--config", "{X}"], _write("bad.py", "x = 1\n\ndef get_config(:\n    pass\n"),
     ["--config", "bad.py", "SyntaxError", "line 3"]),
    ("config-failing-import", ["--config", "{X}"], _write("imp.py", "import nc_jax_no_such_module\n"),
     ["--config", "imp.py", "ModuleNotFoundError", "nc_jax_no_such_module", "line 1"]),
    ("config-get-config-raises", ["--config", "{X}"],
     _write("raises.py", "def get_config():\n    raise RuntimeError('boom')\n"),
     ["--config", "raises.py", "get_config() raised RuntimeError: boom", "line 2"]),
    ("config-bad-value", ["--config", "{X}"],
     _write("nan.py", "from nc_jax.train import TrainConfig\n\ndef get_config():\n"
                      "    return TrainConfig(learning_rate=float('nan'))\n"),
     ["--config", "nan.py", "learning_rate must be a finite number"]),
    ("config-wrong-return", ["--config", "{X}"], _write("dict.py", "def get_config():\n    return {}\n"),
     ["--config", "dict.py", "returned dict, expected a TrainConfig"]),
    ("config-no-get-config", ["--config", "{X}"], _write("empty.py", "x = 1\n"), ["--config", "no get_config()"]),
    ("config-missing", ["--config", "nc_jax_no_such_config"], None, ["--config nc_jax_no_such_config", "not found"]),
    ("idx-truncated-gz", ["--dataset", "fashion_mnist", "--data-dir", "{X}"],
     lambda t: str(_idx_dir(t / "f", truncate="train-images-idx3-ubyte")),
     ["--data-dir", "malformed IDX file", "train-images-idx3-ubyte.gz", "EOFError"]),
    ("idx-label-out-of-range", ["--dataset", "mnist", "--data-dir", "{X}"],
     lambda t: str(_idx_dir(t / "m", bad_label=11)),
     ["--data-dir", "label 11", "outside [0, 10)", "train-labels-idx1-ubyte.gz"]),
    ("cifar-garbage-batch", ["--config", "cifar10", "--data-dir", "{X}"],
     lambda t: str(_cifar_dir(t / "c", garbage="data_batch_3")), ["--data-dir", "malformed batch file", "data_batch_3"]),
    ("cifar-label-out-of-range", ["--config", "cifar10", "--data-dir", "{X}"],
     lambda t: str(_cifar_dir(t / "c", bad_label=12)), ["--data-dir", "label 12", "outside [0, 10)", "data_batch_2"]),
    ("cifar-missing-dir", ["--config", "cifar10", "--data-dir", "{X}/missing"], lambda t: str(t),
     ["--data-dir", "does not exist", "missing"]),
    ("resume-other-width", ["--workdir", "{X}", *TINY_ARGS, "--width", "16"],
     lambda t: str(_trained_workdir(t / "w")), ["--workdir", "refusing to resume", "width (--width) 2 -> 16"]),
    ("resume-other-lr-seed-loss", ["--workdir", "{X}", *TINY_ARGS, "--lr", "0.1", "--seed", "3", "--loss", "ce"],
     lambda t: str(_trained_workdir(t / "w")),
     ["--workdir", "learning_rate (--lr) 0.05 -> 0.1", "seed (--seed) 0 -> 3", "loss (--loss) 'mse' -> 'ce'"]),
    ("resume-other-set-field", ["--workdir", "{X}", *TINY_ARGS, "--set", "momentum=0.5"],
     lambda t: str(_trained_workdir(t / "w")), ["--workdir", "momentum (--set momentum=...) 0.9 -> 0.5"]),
    ("resume-fewer-epochs", ["--workdir", "{X}", *TINY_ARGS, "--epochs", "2"],
     lambda t: str(_trained_workdir(t / "w")), ["--workdir", "num_epochs (--epochs) 2 is fewer than the 3 epoch(s)"]),
    ("resume-no-config-record", ["--workdir", "{X}", *TINY_ARGS],
     lambda t: str(_trained_workdir(t / "w", config=False)), ["--workdir", "no readable config.json"]),
]
ARGPARSE_CASES = [
    ("epochs-not-int", ["--epochs", "1.5"], ["argument --epochs", "invalid int value: '1.5'"]),
    ("old-lowercase-m", ["--m", "2"], ["unrecognized arguments: --m 2"]),
    ("bad-loss-choice", ["--loss", "l1"], ["argument --loss", "invalid choice"]),
]


def _snapshot(root):
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in root.rglob("*")}


@pytest.mark.parametrize("argv, setup, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_refused_cleanly(argv, setup, expected, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    x = setup(tmp_path) if setup else None
    argv = [a.replace("{X}", x) if x is not None else a for a in argv]
    before = _snapshot(tmp_path)
    rc = cli.main(["train", *argv])
    out, err = capsys.readouterr()
    assert rc == ExitCode.USAGE, (out, err)
    assert err.startswith("nc-jax train: error: ") and err.count("\n") == 1, err  # one line
    for s in expected:
        assert s in err, (s, err)
    assert "Traceback" not in out + err
    assert _snapshot(tmp_path) == before  # nothing created or changed: no runs/, no workdir
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("argv, expected", [c[1:] for c in ARGPARSE_CASES], ids=[c[0] for c in ARGPARSE_CASES])
def test_bad_flags_refused_by_the_parser(argv, expected, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        cli.main(["train", *argv])
    err = capsys.readouterr().err
    assert e.value.code == ExitCode.USAGE
    for s in expected:
        assert s in err, (s, err)
    assert "Traceback" not in err and not list(tmp_path.iterdir())


def test_every_option_has_help():
    _, subparsers = cli.build_parser()
    actions = [a for a in subparsers["train"]._actions if a.option_strings and a.dest != "help"]
    assert {"--M", "--alpha"} <= {s for a in actions for s in a.option_strings}
    assert "--m" not in {s for a in actions for s in a.option_strings}
    for a in actions:
        assert a.help and len(a.help) > 10, a.option_strings
        if a.default is argparse.SUPPRESS and a.dest != "set":
            assert "default: from the config" in a.help, a.option_strings
    text = subparsers["train"].format_help()
    assert "SUPPRESS" not in text and text.count("(default: None)") == 2  # --config and --workdir only


def test_divergence_exits_4_with_strict_json(tmp_path, monkeypatch, capsys):
    """lr 1e10 blows the tiny network up at the 2nd step of epoch 1 (reliably: inf, then nan)."""
    monkeypatch.chdir(tmp_path)
    rc = cli.main(["train", "--workdir", "w", *TINY_ARGS, "--epochs", "2", "--lr", "1e10"])
    out, err = capsys.readouterr()
    assert rc == ExitCode.DIVERGED, (out, err)
    assert "diverged" in out and "epoch 1/2" in out and "step" in out
    assert "training diverged" in err and "Traceback" not in out + err

    def no_nan(c):
        raise AssertionError(f"non-strict JSON constant {c}")

    res = json.loads((tmp_path / "w" / "results.json").read_text(), parse_constant=no_nan)
    assert res["status"] == "diverged" and res["history"] == [] and res["final"] is None
    assert res["diverged"]["epoch"] == 1 and res["diverged"]["step"] in (1, 2)
    assert res["diverged"]["value"] in ("nan", "inf")
    assert not [p for p in (tmp_path / "w" / "checkpoints").iterdir() if p.name.isdigit()]  # not checkpointed
