"""Figures 3-7 of Zhou et al. on a full ResNet18: one command each.

    python -m experiments.figures --figure 5            # CPU default (digits), minutes
    python -m experiments.figures --figure 3 --epochs-for LBFGS=3   # L-BFGS: minutes per epoch
    python -m experiments.figures --figure 3 --paper --data-dir DATA   # the paper's setting (GPU)
    python -m experiments.figures --figure 5 --dataset fashion_mnist --samples-per-class 50 --epochs 10

or the thin wrappers ``python -m experiments.figure3_optimizers`` ... ``figure7_features3d``.
The variants start from the configs of :mod:`experiments.configs`.
Each variant is trained by :func:`nc_jax.train.train_and_evaluate` in ``WORKDIR/<variant>``
(so an interrupted figure resumes), and the figure writes ``WORKDIR/figureN.json`` (final
metrics and histories of all variants) and ``WORKDIR/figureN.png``.

* Fig. 3: SGD vs Adam vs L-BFGS (vanilla MSE).
* Fig. 4: feature dimension d < K-1 vs d >= K-1, MSE vs CE.
* Fig. 5: learned vs fixed simplex-ETF classifier at d = K.
* Fig. 6: rescaled MSE, sweeping alpha (M = 1) and M (alpha = 1).
* Fig. 7: d = 3 features, MSE vs CE, 3-D scatter of the training features.

``--dataset fashion_mnist`` swaps the CPU default's digits for a class-balanced Fashion-MNIST
subset (the data settings of ``configs/fashion_mnist.py``: 200 training and 100 test images
per class unless ``--samples-per-class`` / ``--test-samples-per-class`` say otherwise; Debian's
``/usr/share/datasets/fashion-mnist`` unless ``--data-dir``). Results of the reproduction at
CPU scale: ``docs/reproduction.md``. Figures 3 and 6 use the paper's MSE normalisation
(``mse_reduction="mean"``): SGD on the digits default's eq. (2) scaling at d = 128 blew up in
the first epoch. L-BFGS takes minutes per epoch here, hence ``--epochs-for LBFGS=3``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from experiments import harness


DATASETS = ("digits", "fashion_mnist")  # the CPU runs' datasets (--dataset)


def cpu_base(dataset: str = "digits"):
    """The CPU runs' base ``TrainConfig``: the digits default at width 16, or its Fashion-MNIST
    variant (data settings of ``configs/fashion_mnist.py``, everything else as the digits run)."""
    # at width 8 the MSE runs with d <= K lose a class early (train accuracy stalls at 0.9)
    # and Fig. 5's comparison is meaningless
    base = harness.train_config("default").replace(width=16)
    if dataset == "fashion_mnist":
        fm = harness.train_config("fashion_mnist")
        base = base.replace(dataset=fm.dataset, data_dir=fm.data_dir, samples_per_class=fm.samples_per_class,
                            test_samples_per_class=fm.test_samples_per_class)
    elif dataset != "digits":
        raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")
    return base


def variants(figure: int, paper: bool, dataset: str = "digits") -> dict:
    """``{variant name: TrainConfig}`` of one figure (CPU default on ``dataset``, or the paper's)."""
    base = harness.train_config("cifar10") if paper else cpu_base(dataset)
    if figure == 3:
        if paper:
            return {"SGD": harness.train_config("cifar10_sgd"), "Adam": harness.train_config("cifar10_adam"), "LBFGS": harness.train_config("cifar10_lbfgs")}
        # the paper's MSE normalisation (mean over samples and classes): with the digits
        # default's eq. (2) scaling, K/2 = 5 times larger, SGD at lr 0.05 blew up in epoch 1
        base = base.replace(mse_reduction="mean")
        return {"SGD": base, "Adam": base.replace(optimizer="adam", learning_rate=1e-3),
                "LBFGS": base.replace(optimizer="lbfgs", learning_rate=0.1, lbfgs_memory=10, lbfgs_inner_steps=5,
                                      batch_size=500, schedule="constant")}
    if figure == 4:
        dims = (5, 8, 9, 10, 512) if paper else (5, 9, 10, 64)
        return {f"{loss.upper()} d={d}": base.replace(loss=loss, feature_dim=d)
                for loss in ("mse", "ce") for d in dims}
    if figure == 5:
        k = 10
        return {"learned W, d=K": base.replace(feature_dim=k),
                "fixed ETF W, d=K": base.replace(feature_dim=k, fixed_etf=True)}
    if figure == 6:
        # CPU: the paper's MSE normalisation, as Fig. 3
        base6 = (harness.train_config("miniimagenet") if paper
                 else base.replace(loss="rescaled_mse", mse_reduction="mean"))
        alphas, ms = ((1, 5, 15, 20), (3, 5, 7, 10)) if paper else ((1, 5, 15), (3, 10))
        out = {f"alpha={a}, M=1": base6.replace(loss="rescaled_mse", rescale_alpha=float(a), rescale_m=1.0)
               for a in alphas}
        out.update({f"alpha=1, M={m}": base6.replace(loss="rescaled_mse", rescale_alpha=1.0, rescale_m=float(m))
                    for m in ms})
        return out
    if figure == 7:
        return {"MSE d=3": base.replace(loss="mse", feature_dim=3), "CE d=3": base.replace(loss="ce", feature_dim=3)}
    raise ValueError(f"figure must be 3, 4, 5, 6 or 7, got {figure}")


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).strip("_")


def _plot(figure: int, runs: dict, workdir: Path, dpi: int = 110) -> list[Path]:
    import numpy as np

    from nc_jax import plotting

    getters = {"epoch": lambda h: h["epoch"], "NC1": lambda h: h["train_nc"]["nc1"],
               "NC2": lambda h: h["train_nc"]["nc2"], "NC3": lambda h: h["train_nc"]["nc3"],
               "train accuracy": lambda h: h["train_accuracy"],
               "test accuracy": lambda h: h.get("test_accuracy", np.nan)}
    columns = {name: {key: [get(h) for h in res["history"]] for key, get in getters.items()}
               for name, res in runs.items()}
    paths = [workdir / f"figure{figure}.png"]
    plotting.plot_variant_curves(columns, metrics=("NC1", "NC2", "NC3", "train accuracy", "test accuracy"),
                                 log_names=("NC1", "NC2", "NC3"),
                                 pcm={name: res.get("pcm_quantiles") or [] for name, res in runs.items()},
                                 title=f"Figure {figure}", path=paths[0], dpi=dpi)
    if figure == 7:
        scatters = {}
        for name in runs:
            z = np.load(workdir / _slug(name) / "final_features.npz")
            scatters[name] = (z["features"].T, z["labels"], z["W"])  # features stored as (N, 3)
        paths.append(workdir / "figure7_features3d.png")
        plotting.plot_features_3d_panels(scatters, path=paths[1], dpi=dpi)
    return paths


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--figure", type=int, required=True, choices=(3, 4, 5, 6, 7))
    parser.add_argument("--paper", action="store_true", help="the paper's setting (CIFAR-10 / miniImageNet, GPU)")
    harness.add_workdir_arg(parser, "figureN")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--dataset", choices=DATASETS, default="digits",
                        help="CPU runs: digits (default) or a class-balanced Fashion-MNIST subset (not with --paper)")
    parser.add_argument("--samples-per-class", type=int, default=None, help="class-balanced training subset size")
    parser.add_argument("--test-samples-per-class", type=int, default=None,
                        help="class-balanced test subset size")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--epochs-for", action="append", default=None, metavar="VARIANT=N",
                        help="epochs of one variant (after --epochs; repeatable), e.g. LBFGS=3")
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--dpi", type=int, default=110, help="PNG resolution (dots per inch)")
    parser.add_argument("--set", action="append", default=None, metavar="FIELD=VALUE",
                        help="override a TrainConfig field in every variant, as `nc-jax train --set` (repeatable)")
    parser.add_argument("--only", action="append", default=None, help="train only these variants (repeatable)")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--tiny", action="store_true", help="synthetic data, tiny network (smoke test)")
    args = parser.parse_args(argv)

    from nc_jax import data as data_lib
    from nc_jax.io import UsageError
    from nc_jax.train import ConfigError, parse_field_value, train_and_evaluate

    if args.paper and args.dataset != "digits":
        print("error: --dataset chooses the CPU runs' data; --paper runs use the paper's datasets", file=sys.stderr)
        return 2
    for flag in ("samples_per_class", "test_samples_per_class", "epochs", "width", "dpi"):
        value = getattr(args, flag)
        if value is not None and value < (0 if flag == "epochs" else 1):
            print(f"error: --{flag.replace('_', '-')} must be >= {0 if flag == 'epochs' else 1}; got {value}",
                  file=sys.stderr)
            return 2
    runs_cfg = variants(args.figure, args.paper, args.dataset)
    over = {}
    if args.samples_per_class is not None:
        over["samples_per_class"] = args.samples_per_class
    if args.test_samples_per_class is not None:
        over["test_samples_per_class"] = args.test_samples_per_class
    if args.data_dir is not None:
        over["data_dir"] = args.data_dir
    if args.epochs is not None:
        over["num_epochs"] = args.epochs
    if args.width is not None:
        over["width"] = args.width
    if args.no_progress:
        over["progress"] = False
    if args.tiny:
        over.update(dataset="synthetic", width=2, stage_sizes=(1,), batch_size=16, eval_batch_size=16)
    try:
        for item in args.set or []:
            if "=" not in item:
                raise UsageError(f"--set expects FIELD=VALUE, got {item!r}")
            field, text = item.split("=", 1)
            over[field.strip()] = parse_field_value(field.strip(), text)
        epochs_for = {}
        for item in args.epochs_for or []:
            name, _, text = item.rpartition("=")
            if name not in runs_cfg or not text.strip().isdigit():
                raise UsageError(f"--epochs-for {item}: expected VARIANT=N with N >= 0 and VARIANT one of "
                                 f"{', '.join(runs_cfg)}")
            epochs_for[name] = int(text)
        runs_cfg = {k: v.replace(plots=False, **over) for k, v in runs_cfg.items() if not args.only or k in args.only}
        runs_cfg = {k: v.replace(num_epochs=epochs_for[k]) if k in epochs_for else v for k, v in runs_cfg.items()}
    except (UsageError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for cfg in runs_cfg.values():  # fail fast on a bad data directory
        try:
            data_lib.check_data_dir(cfg.dataset, cfg.data_dir)
        except data_lib.DataError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    try:
        workdir = harness.make_workdir(args.workdir, f"figure{args.figure}")
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    results = {}
    for name, cfg in runs_cfg.items():
        harness.progress(f"=== {name}")
        results[name] = train_and_evaluate(cfg, workdir / _slug(name))
    summary = {
        "figure": args.figure, "paper": args.paper,
        "variants": {name: {"config": r["config"], "status": r.get("status"), "final": r["final"],
                            "wall_time_s": r["wall_time_s"],
                            "pcm_quantiles": r.get("pcm_quantiles"), "history": r["history"]}
                     for name, r in results.items()},
    }
    harness.write_json(workdir / f"figure{args.figure}.json", summary)
    paths = _plot(args.figure, results, workdir, dpi=args.dpi)
    for name, r in results.items():
        f = r["final"]
        if r.get("status") == "diverged" or f is None:
            print(f"{name:22s} DIVERGED at epoch {(r.get('diverged') or {}).get('epoch')}")
            continue
        print(f"{name:22s} train acc {f['train_accuracy']:.4f}  test acc {f.get('test_accuracy', float('nan')):.4f}"
              f"  NC1 {f['train_nc']['nc1']:.4g}  NC2 {f['train_nc']['nc2']:.4g}  NC3 {f['train_nc']['nc3']:.4g}")
    print(f"wrote {workdir / f'figure{args.figure}.json'} and {', '.join(str(p) for p in paths)}")
    diverged = [name for name, r in results.items() if r.get("status") == "diverged"]
    if diverged:
        print(f"error: training diverged for {', '.join(diverged)}", file=sys.stderr)
        return 4  # nc_jax.io.ExitCode.DIVERGED
    return 0


if __name__ == "__main__":
    harness.run(main)
