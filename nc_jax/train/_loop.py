"""The training loop: :func:`train_and_evaluate` and the small steps it is composed of.

Owns the epoch loop (data-parallel steps over a one-axis mesh, evaluation and neural-collapse
metrics after every epoch, orbax checkpoints for exact resume, the divergence stop) and the
run's outputs (results.json, final_features.npz, plots).

With several processes (:mod:`nc_jax.distributed`) the mesh spans the devices of all of
them: every process draws the same permutation, places its own rows of each batch, gets
the replicated metrics and takes the same decisions; only process 0 writes the outputs and
prints (orbax checkpoints are saved and restored by all, as orbax requires).
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple, Optional

import jax
import numpy as np

from nc_jax import data as data_lib
from nc_jax import distributed, models
from nc_jax.io import write_json_atomic

from ._analysis import _hessian_summary
from ._checkpoint import _Checkpoints
from ._config import TrainConfig
from ._data import data_summary, load_data
from ._display import _progress
from ._eval import _collapse, _collapse_fn, _evaluate, _final_features, _put_rows
from ._losses import make_loss_fn
from ._memory import check_fits
from ._optim import create_optimizer, learning_rate_schedule
from ._resume import RECORD_FILE, check_resume
from ._step import TrainState, create_model, create_train_state, eval_step, train_step, weight_decay_penalty


class _Run(NamedTuple):
    """What a run compiles once: the model, the jitted functions, the data sharding and batch sizes."""

    model: models.ResNet18
    loss_fn: Callable
    schedule: Callable
    train_step: Callable
    eval_step: Callable
    eval_loss: Callable
    penalty: Callable
    report_train: Callable
    report_test: Callable
    data_sharding: Any
    batch: int
    eval_batch: int
    steps_per_epoch: int


class _Diverged(NamedTuple):
    """A non-finite training loss: in ``epoch`` (0-based) at ``step`` (``None``: the evaluation after it)."""

    epoch: int
    step: Optional[int]
    value: float


def train_and_evaluate(config: TrainConfig, workdir, *, verbose: bool = True,
                       datasets: Optional[tuple[data_lib.Dataset, data_lib.Dataset]] = None) -> dict:
    """Train ``config`` in ``workdir`` (resuming from its latest checkpoint) and return the results.

    Before anything is created or loaded from checkpoints: :func:`check_resume` (a workdir
    holding a run with other settings is refused), :func:`check_fits` (memory), the data
    (``datasets``, a pre-loaded ``(train, test)`` pair of :func:`load_data`, or loaded here).
    Writes ``workdir/config.json`` (the configuration, the data sizes and the epoch
    extensions), ``workdir/results.json`` after every epoch (atomically), ``checkpoints/``
    (orbax, every epoch), ``final_features.npz`` (training features, labels, W, b, sorted
    cosine margins) and ``*.png`` plots at the end.

    If the training loss turns non-finite the run stops in that epoch: results.json gets
    ``status: "diverged"`` and ``diverged: {epoch, step, global_step}`` (step ``None`` when
    only the evaluation after the epoch found it), the epoch is not checkpointed, and the
    returned dict has ``status == "diverged"``. Otherwise ``status == "done"``.

    With several processes call it in all of them with the same arguments (a work directory
    on a file system they share, for the checkpoints); only process 0 writes the JSON,
    features and plots and prints.
    """
    primary = distributed.is_primary()
    log = print if verbose and primary else (lambda *a, **k: None)
    write = write_json_atomic if primary else (lambda *a, **k: None)
    workdir = Path(workdir)
    # Validate everything before any heavy work, and before touching the checkpoints.
    check_resume(config, workdir)
    data_lib.check_data_dir(config.dataset, config.data_dir)
    check_fits(config)
    t_start = time.perf_counter()
    train_ds, test_ds = datasets if datasets is not None else load_data(config)
    record = check_resume(config, workdir, data=data_summary(train_ds, test_ds))
    distributed.barrier("nc_jax.train.resume_checked")  # every process read the workdir before 0 writes it
    workdir.mkdir(parents=True, exist_ok=True)
    write(workdir / RECORD_FILE, record)

    run, state = _compile(config, train_ds, test_ds)
    ckpt = _Checkpoints(workdir / "checkpoints", config.keep_checkpoints, enabled=config.checkpoint)
    state, history, start_epoch = ckpt.restore(state, log)
    meta = _metadata(config, record, run, state, train_ds, test_ds, log)
    results = functools.partial(_results, meta, history, t_start)

    for epoch in range(start_epoch, config.num_epochs):
        state, outcome = _run_epoch(run, config, state, epoch, train_ds, test_ds,
                                    show=config.progress and verbose and primary)
        if isinstance(outcome, _Diverged):
            ckpt.close()
            return _write_diverged(workdir, results("diverged"), outcome, run, config, log, write)
        history.append(outcome)
        ckpt.save(epoch + 1, state, history)
        write(workdir / "results.json", results("running"))
        log(_epoch_line(config, outcome))
    ckpt.close()
    return _finish(config, workdir, run, state, train_ds, results("done"), t_start, log, primary)


# ----------------------------------------------------------------------------- setup


def _round_batch(batch: int, n_samples: int, n_devices: int, what: str) -> int:
    b = min(int(batch), int(n_samples))
    b -= b % n_devices
    if b < n_devices:
        raise ValueError(f"{what}: {n_samples} samples cannot fill one batch on {n_devices} devices")
    return b


def _compile(config: TrainConfig, train_ds, test_ds) -> tuple[_Run, TrainState]:
    """The run's jitted functions over a ``("data",)`` mesh of all devices (of all processes),
    and its initial state.

    Batches are sharded along the mesh, parameters and optimizer state replicated; XLA inserts
    the all-reduces (BatchNorm statistics are over the global batch).
    """
    k, devices = train_ds.num_classes, jax.devices()
    mesh = jax.sharding.Mesh(np.asarray(devices), ("data",))
    data_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    batch = _round_batch(config.batch_size, train_ds.size, len(devices), "batch_size")
    eval_batch = _round_batch(config.eval_batch_size, max(train_ds.size, test_ds.size), len(devices),
                              "eval_batch_size")
    steps_per_epoch = train_ds.size // batch
    model = create_model(config, k)
    if config.fixed_etf:
        models.etf_classifier(k, model.d)  # validates d >= K-1 early
    tx = create_optimizer(config, steps_per_epoch)
    loss_fn = make_loss_fn(config, k)
    init_fn = functools.partial(create_train_state, model, tx, train_ds.images.shape[1:])
    # The initialisation key is an RBG key: XLA:CPU compiles threefry draws for ~60 parameter
    # tensors in 20-60 s, RngBitGenerator in ~2 s. Deterministic given (seed, backend).
    state = jax.jit(lambda key: init_fn(key=key), out_shardings=replicated)(jax.random.key(config.seed, impl="rbg"))
    step_fn = functools.partial(
        train_step, model=model, tx=tx, loss_fn=loss_fn, weight_decay=config.weight_decay,
        augment_seed=config.seed if config.augment else None,
        lbfgs_inner_steps=config.lbfgs_inner_steps if config.optimizer == "lbfgs" else None)
    run = _Run(
        model=model, loss_fn=loss_fn, schedule=learning_rate_schedule(config, steps_per_epoch),
        train_step=jax.jit(step_fn, out_shardings=(replicated, replicated)),
        eval_step=jax.jit(functools.partial(eval_step, model=model), out_shardings=(replicated, replicated)),
        eval_loss=jax.jit(loss_fn),
        penalty=jax.jit(functools.partial(weight_decay_penalty, weight_decay=config.weight_decay)),
        report_train=_collapse_fn(train_ds.labels, k), report_test=_collapse_fn(test_ds.labels, k),
        data_sharding=data_sharding, batch=batch, eval_batch=eval_batch, steps_per_epoch=steps_per_epoch)
    return run, state


def _metadata(config, record, run: _Run, state, train_ds, test_ds, log) -> dict:
    """The run's fixed results.json entries (configuration, devices, sizes), logged in one line."""
    devices = jax.devices()
    n_params = int(sum(np.size(p) for p in jax.tree.leaves(state.params)))
    meta = dict(config=config.to_dict(), epoch_extensions=record["epoch_extensions"], num_devices=len(devices),
                num_processes=jax.process_count(), device_kind=devices[0].device_kind, num_train=train_ds.size,
                num_test=test_ds.size, num_classes=train_ds.num_classes, feature_dim=run.model.d, batch_size=run.batch,
                steps_per_epoch=run.steps_per_epoch, trainable_parameters=n_params)
    log(f"{config.dataset}: {train_ds.size} train / {test_ds.size} test, K={train_ds.num_classes}, "
        f"d={run.model.d}, {n_params} trainable parameters, {len(devices)} device(s)"
        + (f" in {jax.process_count()} processes" if jax.process_count() > 1 else "") + f", batch {run.batch}")
    return meta


# ----------------------------------------------------------------------------- one epoch


def _evaluate_state(run: _Run, state: TrainState, ds) -> tuple[np.ndarray, float, float]:
    """``(features, loss, accuracy)`` of ``state`` on the whole dataset ``ds``."""
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    return _evaluate(run.eval_step, run.eval_loss, variables, ds, run.eval_batch, run.data_sharding)


def _train_epoch(run: _Run, config, state, epoch: int, train_ds, show: bool) -> tuple[TrainState, list]:
    """One pass over the epoch's permutation of the training set; the host copies of the step metrics."""
    perm = data_lib.epoch_permutation(train_ds.size, seed=config.seed, epoch=epoch)
    bar = _progress(run.steps_per_epoch, f"epoch {epoch + 1}/{config.num_epochs}", show)
    step_metrics = []
    for s in range(run.steps_per_epoch):
        idx = perm[s * run.batch:(s + 1) * run.batch]
        b = {"image": _put_rows(train_ds.images, idx, run.data_sharding),
             "label": _put_rows(train_ds.labels, idx, run.data_sharding)}
        state, m = run.train_step(state, b)
        step_metrics.append(m)
        if bar is not None:
            bar.update(1, metrics=m)
    if bar is not None:
        bar.close()
    return state, jax.device_get(step_metrics)


def _run_epoch(run: _Run, config, state, epoch: int, train_ds, test_ds, *, show: bool):
    """Train one epoch and measure it: ``(state, history record)``, or ``(state, _Diverged)``."""
    t0 = time.perf_counter()
    state, step_metrics = _train_epoch(run, config, state, epoch, train_ds, show)
    losses = np.asarray([m["loss"] for m in step_metrics])
    if not np.all(np.isfinite(losses)):
        bad = int(np.argmin(np.isfinite(losses)))
        return state, _Diverged(epoch, bad, losses[bad])
    ftr, tr_loss, tr_acc = _evaluate_state(run, state, train_ds)
    if not np.isfinite(tr_loss):
        return state, _Diverged(epoch, None, tr_loss)
    record = dict(
        epoch=epoch + 1,
        learning_rate=float(run.schedule(epoch * run.steps_per_epoch)),
        train_objective=float(np.mean(losses)),
        train_batch_accuracy=float(np.mean([m["accuracy"] for m in step_metrics])),
        train_loss=tr_loss, train_accuracy=tr_acc,
        weight_decay_term=float(run.penalty(state.params)),
        train_nc=_collapse(run.report_train, run.model, state.params, ftr, train_ds.labels),
    )
    if config.eval_test:
        fte, te_loss, te_acc = _evaluate_state(run, state, test_ds)
        record.update(test_loss=te_loss, test_accuracy=te_acc,
                      test_nc=_collapse(run.report_test, run.model, state.params, fte, test_ds.labels))
    record["epoch_time_s"] = time.perf_counter() - t0
    return state, record


def _epoch_line(config, record: dict) -> str:
    return (f"epoch {record['epoch']:4d}/{config.num_epochs}  lr {record['learning_rate']:.3g}  "
            f"loss {record['train_loss']:.4f}  train acc {record['train_accuracy']:.4f}"
            + (f"  test acc {record['test_accuracy']:.4f}" if config.eval_test else "")
            + f"  NC1 {record['train_nc']['nc1']:.4g}  ({record['epoch_time_s']:.1f}s)")


# ----------------------------------------------------------------------------- outputs


def _results(meta: dict, history: list, t_start: float, status: str) -> dict:
    return dict(meta, status=status, history=history, final=history[-1] if history else None,
                wall_time_s=time.perf_counter() - t_start)


def _write_diverged(workdir: Path, out: dict, div: _Diverged, run: _Run, config, log, write) -> dict:
    """``out`` (results with ``status: "diverged"``) with where it diverged, written to results.json."""
    spe, history = run.steps_per_epoch, out["history"]
    global_step = None if div.step is None else div.epoch * spe + div.step + 1
    where = f"epoch {div.epoch + 1}/{config.num_epochs}" + (
        f", step {div.step + 1}/{spe} (global step {global_step})"
        if div.step is not None else ", in the evaluation after its last step")
    out["diverged"] = dict(epoch=div.epoch + 1, step=None if div.step is None else div.step + 1,
                           global_step=global_step, value=str(div.value),
                           last_finite_epoch=history[-1]["epoch"] if history else None)
    write(workdir / "results.json", out)
    log(f"diverged: the training loss became {div.value} at {where} (learning rate "
        f"{float(run.schedule(div.epoch * spe)):.3g}); stopped, that epoch is not checkpointed; "
        f"results: {workdir / 'results.json'}")
    return out


def _finish(config, workdir: Path, run: _Run, state, train_ds, out: dict, t_start: float, log,
            primary: bool = True) -> dict:
    """``out`` (results with ``status: "done"``) with the cosine margins (PCM), the optional
    Hessian summary and the plots; writes final_features.npz, results.json and the PNGs
    (``primary``; the other processes compute the same results and write nothing)."""
    ftr, _, _ = _evaluate_state(run, state, train_ds)
    cm = _final_features(workdir / "final_features.npz" if primary else None, run.model, state.params, ftr,
                         train_ds.labels, train_ds.num_classes)
    out["pcm_quantiles"] = np.quantile(cm, np.linspace(0, 1, 101)).tolist() if cm.size else []
    if config.hessian:
        out["hessian"] = _hessian_summary(config, run.model, state, train_ds, run.loss_fn)
    out["wall_time_s"] = time.perf_counter() - t_start
    if not primary:
        return out
    write_json_atomic(workdir / "results.json", out)
    if config.plots and out["history"]:
        from nc_jax import plotting  # matplotlib: imported only when plotting

        out["plots"] = plotting.plot_run(out, workdir, cm)
        write_json_atomic(workdir / "results.json", out)
    log(f"results: {workdir / 'results.json'}")
    return out
