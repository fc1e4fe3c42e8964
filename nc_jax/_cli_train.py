"""`nc-jax train`: train one configuration and measure neural collapse every epoch.

With no arguments it trains the quick digits default (a width-8 ResNet18, a few minutes or
less on a laptop CPU). ``--config NAME`` loads ``experiments/configs/NAME.py`` (searched in
the current directory, then next to the installed package) or ``--config path/to/file.py``;
the file's ``get_config()`` returns a :class:`nc_jax.train.TrainConfig`. Command-line
overrides apply on top; ``--set field=value`` reaches any other field.
"""

from __future__ import annotations

import argparse
import ast
import datetime
import importlib.util
from pathlib import Path

_OVERRIDES = {
    # flag: (config field, type)
    "epochs": ("num_epochs", int),
    "lr": ("learning_rate", float),
    "batch_size": ("batch_size", int),
    "loss": ("loss", str),
    "optimizer": ("optimizer", str),
    "feature_dim": ("feature_dim", int),
    "seed": ("seed", int),
    "data_dir": ("data_dir", str),
    "dataset": ("dataset", str),
    "width": ("width", int),
    "weight_decay": ("weight_decay", float),
    "samples_per_class": ("samples_per_class", int),
    "alpha": ("rescale_alpha", float),
    "m": ("rescale_m", float),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None,
                        help="config name in experiments/configs/ (e.g. default, cifar10) or a .py path "
                             "with get_config(); default: the digits quick run")
    parser.add_argument("--workdir", default=None,
                        help="output folder (resumes from its checkpoints); default: a new ./runs/<timestamp>")
    parser.add_argument("--epochs", type=int, help="number of epochs")
    parser.add_argument("--lr", type=float, help="initial learning rate")
    parser.add_argument("--batch-size", type=int, help="global batch size (split over devices)")
    parser.add_argument("--loss", choices=("mse", "rescaled_mse", "ce"))
    parser.add_argument("--optimizer", choices=("sgd", "adam", "lbfgs"))
    parser.add_argument("--feature-dim", type=int, help="d, the width of the last block")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--data-dir", help="local dataset directory (nothing is downloaded)")
    parser.add_argument("--dataset", choices=("digits", "synthetic", "cifar10", "mnist", "fashion_mnist",
                                              "miniimagenet"))
    parser.add_argument("--width", type=int, help="ResNet base width (64 = standard ResNet18)")
    parser.add_argument("--weight-decay", type=float)
    parser.add_argument("--samples-per-class", type=int, help="class-balanced training subset")
    parser.add_argument("--alpha", type=float, help="rescaled MSE weight alpha (eq. 4)")
    parser.add_argument("--m", type=float, help="rescaled MSE target M (eq. 4)")
    parser.add_argument("--fixed-etf", action="store_true", default=None, help="fix W to a simplex ETF")
    parser.add_argument("--augment", action="store_true", default=None, help="random crop + flip")
    parser.add_argument("--hessian", action="store_true", default=None,
                        help="after training: Hessian extremes and SLQ density on one batch")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override any TrainConfig field (Python literal), repeatable")


def find_config_file(name: str) -> Path:
    """Resolve ``--config``: a path, or ``experiments/configs/<name>.py`` (cwd, then repo)."""
    p = Path(name)
    if p.suffix == ".py" or p.exists():
        if not p.is_file():
            raise FileNotFoundError(f"config file {str(p)!r} does not exist")
        return p
    candidates = [Path.cwd() / "experiments" / "configs" / f"{name}.py",
                  Path(__file__).resolve().parent.parent / "experiments" / "configs" / f"{name}.py"]
    for c in candidates:
        if c.is_file():
            return c
    raise FileNotFoundError(f"config {name!r} not found; looked for {[str(c) for c in candidates]}")


def load_config(name: str | None):
    """The ``TrainConfig`` named by ``--config`` (``None``: the library default)."""
    from nc_jax.train import TrainConfig

    if name is None:
        return TrainConfig()
    path = find_config_file(name)
    spec = importlib.util.spec_from_file_location(f"_nc_jax_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"config file {str(path)!r} has no get_config()")
    cfg = module.get_config()
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"{str(path)!r}: get_config() returned {type(cfg).__name__}, expected TrainConfig")
    return cfg


def config_from_args(args):
    cfg = load_config(args.config)
    over = {}
    for flag, (field, _) in _OVERRIDES.items():
        v = getattr(args, flag, None)
        if v is not None:
            over[field] = v
    for flag in ("fixed_etf", "augment", "hessian"):
        if getattr(args, flag, None):
            over[flag] = True
    if getattr(args, "no_progress", False):
        over["progress"] = False
    for item in args.set:
        if "=" not in item:
            raise ValueError(f"--set expects FIELD=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        try:
            over[k.strip()] = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            over[k.strip()] = v
    return cfg.replace(**over)


def default_workdir(config_name: str | None) -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{stamp}-{Path(config_name).stem if config_name else 'digits'}"


def run(args) -> int:
    import sys

    from nc_jax import data as data_lib

    try:
        cfg = config_from_args(args)  # validates choices before any heavy work
        data_lib.check_data_dir(cfg.dataset, cfg.data_dir)
    except (data_lib.DataError, FileNotFoundError, ValueError, TypeError) as e:
        print(f"nc-jax train: error: {e}", file=sys.stderr)
        return 2
    workdir = Path(args.workdir) if args.workdir else default_workdir(args.config)
    print(f"workdir: {workdir.absolute()}", flush=True)
    from nc_jax.train import train_and_evaluate

    res = train_and_evaluate(cfg, workdir)
    fin = res.get("final") or {}
    if fin:
        print(f"final: train acc {fin['train_accuracy']:.4f}, test acc {fin.get('test_accuracy', float('nan')):.4f}, "
              f"NC1 {fin['train_nc']['nc1']:.4g}, {res['wall_time_s']:.1f}s")
    return 0
