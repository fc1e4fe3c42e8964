"""`nc-jax train`: train one configuration and measure neural collapse every epoch.

With no arguments it trains the quick digits default (a width-8 ResNet18, a few minutes or
less on a laptop CPU). ``--config NAME`` imports ``experiments.configs.NAME`` (the package
``experiments/configs/`` of the repository: importable from the current directory, else found
there or next to the installed package) or loads ``--config path/to/file.py``; the module's
``get_config()`` returns a :class:`nc_jax.train.TrainConfig`. Command-line
overrides apply on top; ``--set field=value`` reaches any other field (the value is parsed
by the field's type: ``None``, ``True``/``False``, numbers, tuples like ``(1, 1)``).

Everything is checked before any work and before anything is written: every setting's type
and range, the ``--config`` file, ``--workdir`` (a folder that can be created or written; an
existing one must hold the same run, see :func:`nc_jax.train.check_resume`: only ``--epochs``
may grow), the estimated memory, and the data files (read in full). Bad input prints one
line naming the argument and exits 2; the flags of several processes (``--coordinator-address
--num-processes --process-id``, :mod:`nc_jax.distributed`) are checked first, and the processes
join before the memory check, the first JAX call; a run whose training loss turns non-finite stops there,
records ``status: "diverged"`` in results.json and exits 4.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.machinery
import importlib.util
import os
import sys
import traceback
from pathlib import Path

from nc_jax import losses
from nc_jax.io import ExitCode, UsageError

# command-line dest -> TrainConfig field (the flag is "--" + dest with "-" for "_")
_OVERRIDES = {
    "epochs": "num_epochs",
    "lr": "learning_rate",
    "batch_size": "batch_size",
    "loss": "loss",
    "optimizer": "optimizer",
    "feature_dim": "feature_dim",
    "seed": "seed",
    "data_dir": "data_dir",
    "dataset": "dataset",
    "width": "width",
    "weight_decay": "weight_decay",
    "samples_per_class": "samples_per_class",
    "alpha": "rescale_alpha",
    "M": "rescale_m",
    "fixed_etf": "fixed_etf",
    "augment": "augment",
    "hessian": "hessian",
}
_FROM_CONFIG = "default: from the config"


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


FIELD_FLAGS = {field: _flag(dest) for dest, field in _OVERRIDES.items()}
FIELD_FLAGS["progress"] = "--no-progress"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    s = argparse.SUPPRESS  # no "(default: None)": these defaults come from the config
    parser.add_argument("--config", default=None,
                        help="config name in experiments/configs/ (e.g. default, cifar10, fashion_mnist) or a .py "
                             "file whose get_config() returns a TrainConfig; when absent, the library default (the digits quick run)")
    parser.add_argument("--workdir", default=None,
                        help="output folder; an existing one is resumed from its checkpoints if it holds the same "
                             "run (only --epochs may grow); None: a new ./runs/train-<config>-<timestamp>")
    parser.add_argument("--epochs", type=int, default=s, help=f"number of epochs (>= 0); {_FROM_CONFIG}")
    parser.add_argument("--lr", type=float, default=s, help=f"initial learning rate (> 0); {_FROM_CONFIG}")
    parser.add_argument("--batch-size", type=int, default=s,
                        help=f"global batch size, split over the devices (>= 1); {_FROM_CONFIG}")
    parser.add_argument("--loss", choices=losses.LOSSES, default=s,
                        help=f"training loss: MSE (eq. 2), rescaled MSE (eq. 4) or cross-entropy; {_FROM_CONFIG}")
    parser.add_argument("--optimizer", choices=("sgd", "adam", "lbfgs"), default=s, help=f"optimizer; {_FROM_CONFIG}")
    parser.add_argument("--feature-dim", type=int, default=s,
                        help=f"d, the output width of the last block (>= 1; the config's None: 8 x width); "
                             f"{_FROM_CONFIG}")
    parser.add_argument("--seed", type=int, default=s,
                        help=f"seed of the initialisation, data order and augmentation (>= 0); {_FROM_CONFIG}")
    parser.add_argument("--data-dir", default=s,
                        help=f"local dataset directory (nothing is downloaded); {_FROM_CONFIG}")
    parser.add_argument("--dataset", choices=("digits", "synthetic", "cifar10", "mnist", "fashion_mnist",
                                              "miniimagenet"), default=s, help=f"dataset; {_FROM_CONFIG}")
    parser.add_argument("--width", type=int, default=s,
                        help=f"ResNet base width (>= 1; 64 = standard ResNet18); {_FROM_CONFIG}")
    parser.add_argument("--weight-decay", type=float, default=s,
                        help=f"lambda, weight decay on all trainable parameters (>= 0); {_FROM_CONFIG}")
    parser.add_argument("--samples-per-class", type=int, default=s,
                        help="class-balanced training subset, 1 to the smallest class's size (not for synthetic: "
                             f"--set synthetic_samples_per_class=N); {_FROM_CONFIG}")
    parser.add_argument("--alpha", type=float, default=s,
                        help=f"rescaled MSE weight alpha of the true class (eq. 4, > 0); {_FROM_CONFIG}")
    parser.add_argument("--M", type=float, default=s,
                        help=f"rescaled MSE target M of the true class (eq. 4, > 0); {_FROM_CONFIG}")
    parser.add_argument("--fixed-etf", action="store_true", default=s,
                        help=f"fix the classifier W to a simplex ETF; {_FROM_CONFIG}")
    parser.add_argument("--augment", action="store_true", default=s,
                        help=f"random crop + flip; {_FROM_CONFIG}")
    parser.add_argument("--hessian", action="store_true", default=s,
                        help=f"after training: Hessian extremes and SLQ density on one batch; {_FROM_CONFIG}")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress within epochs (tqdm bar, or without tqdm a line every 10 s); the "
                             "per-epoch summary lines are printed regardless")
    parser.add_argument("--set", action="append", default=s, metavar="FIELD=VALUE",
                        help="override any TrainConfig field, parsed by its type (None, True/False, numbers, "
                             "tuples like (1, 1)); repeatable; default: none")


# ----------------------------------------------------------------------------- the config


def _importable_experiments_dir() -> Path | None:
    """The folder of the ``experiments`` package importable as things stand (e.g. the cwd under
    ``python -m``), without importing it; None if there is none."""
    module = sys.modules.get("experiments")
    if module is not None:
        locations = list(getattr(module, "__path__", []) or [])
    else:
        try:
            spec = importlib.util.find_spec("experiments")
        except (ImportError, ValueError):
            spec = None
        locations = list(spec.submodule_search_locations or []) if spec is not None else []
    return Path(locations[0]) if locations else None


def find_config_file(name: str) -> Path:
    """Resolve ``--config``: a path, or ``experiments/configs/<name>.py`` (the importable
    ``experiments`` package, the cwd's, then the one next to the installed package)."""
    p = Path(name)
    if p.suffix == ".py" or p.exists():
        if not p.is_file():
            raise UsageError(f"--config {name}: file {str(p)!r} does not exist")
        return p
    candidates = [Path.cwd() / "experiments" / "configs" / f"{name}.py",
                  Path(__file__).resolve().parent.parent / "experiments" / "configs" / f"{name}.py"]
    importable = _importable_experiments_dir()
    if importable is not None and name.isidentifier() and (importable / "configs" / f"{name}.py").is_file():
        return importable / "configs" / f"{name}.py"
    for c in candidates:
        if c.is_file():
            return c
    raise UsageError(f"--config {name}: not found; looked for {', '.join(str(c) for c in candidates)}")


def _config_module_name(path: Path) -> str | None:
    """``experiments.configs.<stem>`` if ``path`` is a module of an ``experiments/configs`` package
    that can be imported as such (so a variant can ``from experiments.configs import cifar10``);
    None to load the file on its own.

    When ``experiments`` is not importable from ``sys.path`` (``nc-jax`` run as a console script),
    the package is imported from the folder holding it; ``sys.path`` is left unchanged.
    """
    path = path.resolve()
    configs, package = path.parent, path.parent.parent
    if not (path.stem.isidentifier() and configs.name == "configs" and package.name == "experiments"
            and (configs / "__init__.py").is_file() and (package / "__init__.py").is_file()):
        return None
    current = _importable_experiments_dir()
    if current is None:
        spec = importlib.machinery.PathFinder.find_spec("experiments", [str(package.parent)])
        if spec is None or spec.loader is None:
            return None
        module = importlib.util.module_from_spec(spec)
        sys.modules["experiments"] = module
        try:
            spec.loader.exec_module(module)
        except Exception:  # noqa: BLE001 - a broken package: load the file on its own
            sys.modules.pop("experiments", None)
            return None
        current = package
    try:
        same = current.resolve() == package
    except OSError:
        same = False
    return f"experiments.configs.{path.stem}" if same else None


def _where(err: BaseException, path: Path) -> str:
    """`` (line N)`` of the deepest frame of ``err``'s traceback inside the config file."""
    try:
        target = path.resolve()
        lines = [f.lineno for f in traceback.extract_tb(err.__traceback__)
                 if f.filename and Path(f.filename).resolve() == target]
    except (OSError, ValueError):
        lines = []
    return f" (line {lines[-1]})" if lines else ""


def load_config(name: str | None):
    """The ``TrainConfig`` named by ``--config`` (``None``: the library default).

    Raises :class:`nc_jax.io.UsageError` naming ``--config``, the file and the error (a syntax
    error, a failing import, a ``get_config()`` that raises or returns something else).
    """
    from nc_jax.train import TrainConfig

    if name is None:
        return TrainConfig()
    path = find_config_file(name)
    head = f"--config {name}: {str(path)!r}"
    module_name = _config_module_name(path)
    try:
        if module_name is not None:
            module = importlib.import_module(module_name)
        else:
            spec = importlib.util.spec_from_file_location(f"_nc_jax_config_{path.stem}", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
    except SyntaxError as e:
        where = f"line {e.lineno}" + ("" if not e.filename or Path(e.filename).resolve() == path.resolve()
                                      else f" of {e.filename}")
        raise UsageError(f"{head}: {type(e).__name__}: {e.msg} ({where})") from None
    except Exception as e:  # noqa: BLE001 - any failure while importing the config file
        raise UsageError(f"{head} failed to import: {type(e).__name__}: {e}{_where(e, path)}") from None
    if not callable(getattr(module, "get_config", None)):
        raise UsageError(f"{head} has no get_config() function")
    try:
        cfg = module.get_config()
    except Exception as e:  # noqa: BLE001
        raise UsageError(f"{head}: get_config() raised {type(e).__name__}: {e}{_where(e, path)}") from None
    if not isinstance(cfg, TrainConfig):
        raise UsageError(f"{head}: get_config() returned {type(cfg).__name__}, expected a TrainConfig")
    return cfg


def config_from_args(args):
    """``(config, sources)``: the config with the overrides, ``sources[field]`` the argument that set it.

    Raises :class:`nc_jax.io.UsageError` naming the argument responsible for a bad value.
    """
    from nc_jax.train import ConfigError, parse_field_value

    cfg = load_config(args.config)
    sources = {}
    over = {}
    for dest, field in _OVERRIDES.items():
        if hasattr(args, dest):
            value = getattr(args, dest)
            over[field] = value
            sources[field] = _flag(dest) + ("" if isinstance(value, bool) else f" {value}")
    if getattr(args, "no_progress", False):
        over["progress"] = False
        sources["progress"] = "--no-progress"
    for item in getattr(args, "set", None) or []:
        if "=" not in item:
            raise UsageError(f"--set expects FIELD=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        k = k.strip()
        over[k] = parse_field_value(k, v)
        sources[k] = f"--set {item}"
    try:
        return cfg.replace(**over), sources
    except ConfigError as e:
        src = sources.get(e.field) or (f"--config {args.config}" if args.config else "the default config")
        raise UsageError(f"{src}: {e}") from None


def _field_names() -> dict:
    from nc_jax.train import field_types

    names = {f: f"{f} ({flag})" for f, flag in FIELD_FLAGS.items()}
    for f in field_types():
        names.setdefault(f, f"{f} (--set {f}=...)")
    return names


# ----------------------------------------------------------------------------- run


def run(args) -> int:
    from nc_jax import data as data_lib
    from nc_jax import distributed
    from nc_jax import train as train_lib
    from nc_jax.io import check_workdir, make_workdir, remove_if_empty

    distributed.check_flags(args)
    cfg, sources = config_from_args(args)
    names = _field_names()

    def named(err):  # a ConfigError from the checks below, with the responsible argument
        src = sources.get(err.field) or names.get(err.field, err.field)
        return UsageError(f"{src}: {err}")

    if "samples_per_class" in sources and cfg.dataset == "synthetic":
        raise UsageError(f"{sources['samples_per_class']}: the synthetic dataset's size is set by "
                         f"--set synthetic_samples_per_class=N (--samples-per-class applies to the other datasets)")
    check_workdir(args.workdir)
    if args.workdir is not None:
        try:
            train_lib.check_resume(cfg, args.workdir, names=names, flag="--workdir")
        except train_lib.ConfigError as e:
            raise UsageError(str(e)) from None
    data_src = "--data-dir" if cfg.data_dir is not None else f"--dataset {cfg.dataset}"
    try:
        data_lib.check_data_dir(cfg.dataset, cfg.data_dir)
    except data_lib.DataError as e:
        raise UsageError(f"{data_src}: {e}") from None
    distributed.initialize_from_args(args)  # before the first JAX call (check_fits asks for the devices)
    train_lib.check_fits(cfg, what=f"--width {cfg.width} with --batch-size {cfg.batch_size}")
    try:
        train_ds, test_ds = train_lib.load_data(cfg)
    except data_lib.DataError as e:
        raise UsageError(f"{data_src}: {e}") from None
    except train_lib.ConfigError as e:
        raise named(e) from None
    if args.workdir is not None:
        try:
            train_lib.check_resume(cfg, args.workdir, names=names, flag="--workdir",
                                   data=train_lib.data_summary(train_ds, test_ds))
        except train_lib.ConfigError as e:
            raise UsageError(str(e)) from None

    existed = args.workdir is not None and os.path.exists(args.workdir)
    stem = Path(args.config).stem if args.config else "digits"
    primary = distributed.is_primary()
    # process 0 names the folder (a default name comes from its clock); the others use that name
    workdir = make_workdir(args.workdir, f"train-{stem}") if primary else args.workdir
    workdir = Path(distributed.broadcast_string(str(workdir)))
    print(f"workdir: {workdir.absolute()}", flush=True)
    try:
        res = train_lib.train_and_evaluate(cfg, workdir, datasets=(train_ds, test_ds))
    except BaseException:
        if not existed and primary:
            remove_if_empty(workdir)
        raise
    if res.get("status") == "diverged" and not primary:
        return int(ExitCode.DIVERGED)
    if res.get("status") == "diverged":
        d = res["diverged"]
        where = f"epoch {d['epoch']}" + (f", step {d['step']}" if d.get("step") else " (evaluation)")
        print(f"nc-jax train: training diverged: the loss became {d['value']} at {where}; stopped there "
              f"(results.json status 'diverged'); try a smaller --lr", file=sys.stderr)
        return int(ExitCode.DIVERGED)
    fin = res.get("final") or {}
    if fin:
        print(f"final: train acc {fin['train_accuracy']:.4f}, test acc {fin.get('test_accuracy', float('nan')):.4f}, "
              f"NC1 {fin['train_nc']['nc1']:.4g}, {res['wall_time_s']:.1f}s")
    return int(ExitCode.OK)
