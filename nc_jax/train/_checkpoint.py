"""Run state on disk: orbax checkpoints for exact resume.

Owns :class:`_Checkpoints` (``(state, history)`` after every epoch in ``workdir/checkpoints``).
"""

from __future__ import annotations

from pathlib import Path

import jax

from ._step import TrainState


class _Checkpoints:
    """Orbax checkpoints of ``(state, history)`` after every epoch; does nothing when disabled."""

    def __init__(self, directory: Path, keep: int, *, enabled: bool):
        self.directory = directory
        self.ocp = self.mngr = None
        if enabled:
            try:
                import orbax.checkpoint as ocp
            except ImportError as e:  # pragma: no cover
                raise ImportError("checkpointing needs orbax-checkpoint: pip install orbax-checkpoint "
                                  "(or set checkpoint=False)") from e
            options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=False)
            self.ocp, self.mngr = ocp, ocp.CheckpointManager(directory.absolute(), options=options)

    def restore(self, state: TrainState, log) -> tuple[TrainState, list, int]:
        """``(state, history, epochs done)`` of the latest checkpoint, or ``(state, [], 0)``.

        ``state`` gives the shapes, dtypes and shardings to restore into.
        """
        latest = None if self.mngr is None else self.mngr.latest_step()
        if latest is None:
            return state, [], 0
        ocp = self.ocp
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
        restored = self.mngr.restore(latest, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), history=ocp.args.JsonRestore()))
        log(f"resumed from epoch {int(latest)} in {self.directory}")
        return TrainState(*restored["state"]), list(restored["history"]["epochs"])[:latest], int(latest)

    def save(self, epoch: int, state: TrainState, history: list) -> None:
        """Checkpoint ``epoch`` (1-based) synchronously."""
        if self.mngr is not None:
            ocp = self.ocp
            self.mngr.save(epoch, args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), history=ocp.args.JsonSave({"epochs": history})))
            self.mngr.wait_until_finished()

    def close(self) -> None:
        if self.mngr is not None:
            self.mngr.close()
