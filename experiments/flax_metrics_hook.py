"""Neural-collapse metrics inside your own Flax + optax training loop.

A small MLP on scikit-learn's digits (1797 images 8x8, 10 classes, bundled offline)
trained with the MSE loss; every few epochs one jitted pass over the training set in
batches streams the penultimate features into ``nc_jax.metrics`` and prints NC1, NC2,
NC3 and the accuracy. The metric code is the ``collapse_metrics`` function below: copy
it next to your own model.

    python -m experiments.flax_metrics_hook                  # 200 epochs, ~15-30 s on 2 cores
    python -m experiments.flax_metrics_hook --quick          # 60 epochs (CI)
    python -m experiments.flax_metrics_hook --workdir runs/hook   # + metrics_history.json

On a 2-core CPU most of the time is importing JAX and compiling the two jitted
functions (about 5 s each); the 200 epochs themselves take a few seconds.

Layout: a Flax model returns features as rows, ``(batch, d)``, which is what the
streaming API takes; ``collapse_report`` takes ``(d, N)`` columns instead.

This example uses only the public ``nc_jax`` API (not ``experiments.harness``) so it can be
copied as it is; for the same reason ``python experiments/flax_metrics_hook.py`` runs it too.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.datasets import load_digits

from nc_jax import metrics
from nc_jax.io import ExitCode, UsageError, check_workdir, make_workdir, write_json_atomic


class MLP(nn.Module):
    """ReLU MLP that returns ``(logits, penultimate features)``."""

    hidden: Sequence[int]
    num_classes: int

    @nn.compact
    def __call__(self, x):
        for width in self.hidden:
            x = nn.relu(nn.Dense(width)(x))
        return nn.Dense(self.num_classes, name="head")(x), x


def batched(x, y, batch_size):
    """Stacks (N, ...) data into (num_batches, batch_size, ...) with a mask; the last
    batch is zero-padded so every batch has one shape (one compiled step)."""
    n = x.shape[0]
    num_batches = -(-n // batch_size)
    pad = num_batches * batch_size - n
    x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
    y = np.concatenate([y, np.zeros(pad, y.dtype)])
    mask = np.arange(num_batches * batch_size) < n
    shape = (num_batches, batch_size)
    return x.reshape(*shape, *x.shape[1:]), y.reshape(shape), mask.reshape(shape)


def make_collapse_metrics(model, num_classes, feature_dim):
    """The hook: a jitted pass over batched data -> ``metrics.CollapseReport``."""

    @jax.jit
    def collapse_metrics(params, xs, ys, masks):
        def features(x):
            return model.apply({"params": params}, x)[1]  # (batch, d) rows

        # Pass 1: class counts, means and within-class scatter (NC1, NC2, NC3).
        def pass1(stats, batch):
            x, y, m = batch
            return metrics.collapse_stats_update(stats, features(x), y, m), None

        dtype = jnp.result_type(float)  # float64 under jax_enable_x64, else float32
        init = metrics.collapse_stats_init(num_classes, feature_dim, dtype)
        stats, _ = jax.lax.scan(pass1, init, (xs, ys, masks))
        # Pass 2 (optional): accuracy, NC4, cosine margin need the final class means.
        W, b = params["head"]["kernel"].T, params["head"]["bias"]  # Dense kernel is (d, K)

        def pass2(acc, batch):
            x, y, m = batch
            return metrics.sample_stats_update(acc, stats, W, b, features(x), y, m), None

        per_sample, _ = jax.lax.scan(pass2, metrics.sample_stats_init(dtype), (xs, ys, masks))
        return metrics.collapse_report_from_stats(stats, W, b, per_sample)

    return collapse_metrics


def make_train_epoch(model, tx, num_classes, loss_name, batch_size):
    """One jitted epoch: shuffle, then ``lax.scan`` over full minibatches."""

    def loss_fn(params, x, y):
        logits, _ = model.apply({"params": params}, x)
        if loss_name == "mse":
            target = jax.nn.one_hot(y, num_classes, dtype=logits.dtype)
            return jnp.mean(jnp.sum((logits - target) ** 2, axis=1)) / 2
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))

    @jax.jit
    def train_epoch(params, opt_state, x, y, key):
        steps = x.shape[0] // batch_size
        perm = jax.random.permutation(key, x.shape[0])
        idx = perm[: steps * batch_size].reshape(steps, batch_size)  # drop the remainder

        def step(carry, i):
            params, opt_state = carry
            loss, grads = jax.value_and_grad(loss_fn)(params, x[i], y[i])
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), idx)
        return params, opt_state, jnp.mean(losses)

    return train_epoch


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--epochs", type=int, default=200, help="training epochs")
    p.add_argument("--eval-every", type=int, default=20, help="epochs between metric passes")
    p.add_argument("--batch-size", type=int, default=128, help="training minibatch size")
    p.add_argument("--eval-batch-size", type=int, default=256,
                   help="metric-pass batch size (the last batch is padded and masked)")
    p.add_argument("--hidden", type=int, nargs="+", default=[256, 256, 64],
                   help="hidden widths; the last one is the feature dimension d")
    p.add_argument("--loss", choices=("mse", "ce"), default="mse", help="training loss")
    p.add_argument("--lr", type=float, default=0.05, help="SGD learning rate (momentum 0.9)")
    p.add_argument("--weight-decay", type=float, default=5e-4, help="decoupled weight decay")
    p.add_argument("--seed", type=int, default=0, help="PRNG seed")
    p.add_argument("--quick", action="store_true",
                   help="a few seconds: 60 epochs, metrics every 20 (for CI)")
    p.add_argument("--workdir", default=None,
                   help="folder for metrics_history.json; nothing is written without it")
    args = p.parse_args(argv)
    if args.quick:
        args.epochs, args.eval_every = 60, 20
    for name in ("epochs", "eval_every", "batch_size", "eval_batch_size"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1")
    if min(args.hidden) < 1:
        raise UsageError("--hidden widths must be >= 1")
    check_workdir(args.workdir)
    return args


def main(argv=None) -> int:
    try:
        args = parse_args(argv)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return ExitCode.USAGE
    start = time.perf_counter()
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int32)
    num_classes, feature_dim = 10, args.hidden[-1]
    if args.batch_size > x.shape[0]:
        print(f"error: --batch-size must be <= {x.shape[0]}", file=sys.stderr)
        return ExitCode.USAGE

    model = MLP(hidden=tuple(args.hidden), num_classes=num_classes)
    key, init_key = jax.random.split(jax.random.key(args.seed))
    params = model.init(init_key, jnp.zeros((1, x.shape[1]), jnp.float32))["params"]
    tx = optax.chain(optax.add_decayed_weights(args.weight_decay), optax.sgd(args.lr, momentum=0.9))
    opt_state = tx.init(params)
    train_epoch = make_train_epoch(model, tx, num_classes, args.loss, args.batch_size)
    collapse_metrics = make_collapse_metrics(model, num_classes, feature_dim)
    xs, ys, masks = batched(x, y, args.eval_batch_size)
    x_dev, y_dev = jnp.asarray(x), jnp.asarray(y)

    print(f"digits N={x.shape[0]} K={num_classes} d={feature_dim}, {args.loss} loss, "
          f"metrics every {args.eval_every} epochs over {xs.shape[0]} batches of {xs.shape[1]}")
    history = []
    loss = jnp.nan
    for epoch in range(args.epochs + 1):
        if epoch % args.eval_every == 0 or epoch == args.epochs:
            rep = collapse_metrics(params, xs, ys, masks)
            row = {"epoch": epoch, "loss": float(loss),
                   **{f: float(v) for f, v in rep._asdict().items()}}
            history.append(row)
            loss_text = f"{row['loss']:.4f}" if epoch else "   -  "
            print(f"epoch {epoch:4d}  loss {loss_text}  NC1 {row['nc1']:.4e}  "
                  f"NC2 {row['nc2']:.4f}  NC3 {row['nc3']:.4f}  NC4 {row['nc4']:.4f}  "
                  f"acc {row['accuracy']:.4f}", flush=True)
        if epoch == args.epochs:
            break
        key, sub = jax.random.split(key)
        params, opt_state, loss = train_epoch(params, opt_state, x_dev, y_dev, sub)
        if not np.isfinite(float(loss)):
            print(f"training loss became non-finite at epoch {epoch + 1}", file=sys.stderr)
            return ExitCode.DIVERGED
    seconds = time.perf_counter() - start
    print(f"NC1 {history[0]['nc1']:.4e} -> {history[-1]['nc1']:.4e} in {seconds:.1f} s")
    if args.workdir is not None:
        path = make_workdir(args.workdir, "flax_metrics_hook") / "metrics_history.json"
        config = {k: v for k, v in vars(args).items() if k != "workdir"}
        write_json_atomic(path, {"config": config, "seconds": seconds, "history": history})
        print(f"wrote {path}")
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
