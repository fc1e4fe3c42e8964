"""Resuming a workdir: what it already holds, and whether a config may continue it.

Owns the workdir's record (``config.json``: configuration, data sizes, epoch extensions),
:func:`completed_epochs` and :func:`check_resume`; nothing here loads a checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Optional

from nc_jax.io import to_jsonable

from ._config import ConfigError, TrainConfig

# Fields that do not change the training trajectory: a resumed workdir may differ in them.
RESUME_FREE_FIELDS = ("progress", "plots", "data_dir", "keep_checkpoints", "hessian", "hessian_matvecs",
                      "hessian_batch_size", "hessian_restarts", "hessian_probes")
RECORD_FILE = "config.json"


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def completed_epochs(workdir) -> int:
    """Epochs a workdir already holds: its latest orbax checkpoint or its results.json history."""
    workdir = Path(workdir)
    ckpt = workdir / "checkpoints"
    steps = [int(p.name) for p in ckpt.iterdir() if p.is_dir() and p.name.isdigit()] if ckpt.is_dir() else []
    res = _read_json(workdir / "results.json")
    hist = len(res.get("history") or []) if isinstance(res, dict) else 0
    return max(steps + [hist])


def _old_record(workdir: Path, done: int, flag: str) -> dict:
    """The record of a workdir with ``done`` epochs: ``config.json``, else what results.json holds."""
    old = _read_json(workdir / RECORD_FILE)
    if not (isinstance(old, dict) and isinstance(old.get("config"), dict)):
        res = _read_json(workdir / "results.json")
        old = {"config": res.get("config"),
               "data": {k: res[k] for k in ("num_train", "num_test", "num_classes") if k in res}
               } if isinstance(res, dict) else None
    if not (isinstance(old, dict) and isinstance(old.get("config"), dict)):
        raise ConfigError(f"{flag} {str(workdir)!r} holds {done} trained epoch(s) but no readable {RECORD_FILE} "
                          f"or results.json with its configuration: cannot check that it is the same run; "
                          f"use a new workdir")
    return old


def _config_diffs(config: TrainConfig, old_cfg: dict, done: int, label) -> list[tuple[str, str]]:
    """``(field, message)`` of every field that would change the run (see :func:`check_resume`)."""
    new_cfg = to_jsonable(config.to_dict())
    defaults = to_jsonable(TrainConfig().to_dict())
    diffs = []
    for f in dataclasses.fields(TrainConfig):
        if f.name in RESUME_FREE_FIELDS or f.name == "num_epochs":
            continue
        before, after = old_cfg.get(f.name, defaults[f.name]), new_cfg[f.name]
        if before != after:
            diffs.append((f.name, f"{label(f.name)} {before!r} -> {after!r}"))
    if config.num_epochs < done:
        diffs.append(("num_epochs", f"{label('num_epochs')} {config.num_epochs} is fewer than the {done} epoch(s) "
                                    f"already trained (it may only grow, or stay at least {done})"))
    return diffs


def check_resume(config: TrainConfig, workdir, *, names: Optional[dict] = None, data: Optional[dict] = None,
                 flag: str = "workdir") -> dict:
    """Refuse to resume ``workdir`` with settings that change its run; return its new record.

    A workdir records its configuration in ``config.json`` (older ones: in ``results.json``).
    Once it holds a completed epoch, every field must match except:

    * ``num_epochs``, which may change as long as it is not below the epochs already done;
      each change is appended to the record's ``epoch_extensions`` as
      ``{"from_epochs", "to_epochs"}`` (the schedules depend on the epoch, not on the total,
      so extending a run gives the same trajectory as training the longer run at once);
    * :data:`RESUME_FREE_FIELDS`, which do not change the trajectory: progress display,
      plots, the checkpoints kept, the post-training Hessian analysis and ``data_dir`` (the
      data may move; ``data``, the sizes of what was loaded, must then still match).

    This reads two small JSON files and lists folders: nothing is loaded from checkpoints.

    Args:
      names: display names of fields (e.g. ``{"learning_rate": "learning_rate (--lr)"}``).
      data: ``{"num_train", "num_test", "num_classes", "image_shape"}`` of the loaded data, to
        compare with the record's.
      flag: how messages name the workdir (``"--workdir"`` on the command line).

    Raises:
      ConfigError: a differing field (old and new value of each), too few epochs, or a workdir
        with checkpoints but no readable configuration.
    """
    workdir = Path(workdir)
    label = lambda f: (names or {}).get(f, f)  # noqa: E731
    record = {"config": to_jsonable(config.to_dict()), "epoch_extensions": [], "data": data}
    if not workdir.is_dir():
        return record
    done = completed_epochs(workdir)
    if done == 0:
        return record  # nothing trained yet: the record is replaced
    old = _old_record(workdir, done, flag)
    diffs = _config_diffs(config, old["config"], done, label)
    if diffs:
        raise ConfigError(f"{flag} {str(workdir)!r} holds a run ({done} epoch(s) trained) with different settings; "
                          f"refusing to resume it: " + "; ".join(d for _, d in diffs)
                          + ". Use a new workdir, or the workdir's settings (only the number of epochs may grow)",
                          field=diffs[0][0])
    old_data = old.get("data")
    if data is not None and isinstance(old_data, dict):
        dd = [f"{k} {old_data.get(k)!r} -> {v!r}" for k, v in to_jsonable(data).items()
              if k in old_data and old_data[k] != v]
        if dd:
            raise ConfigError(f"{flag} {str(workdir)!r} was trained on different data; refusing to resume it: "
                              + "; ".join(dd) + f" (check {label('data_dir')})", field="data_dir")
    old_epochs = old["config"].get("num_epochs", done)
    ext = list(old.get("epoch_extensions") or [])
    if config.num_epochs != old_epochs:
        ext.append({"from_epochs": old_epochs, "to_epochs": config.num_epochs})
    record.update(epoch_extensions=ext, data=data if data is not None else old_data)
    return record
