"""The explorer's contract: a :class:`Model` is an objective, an init, and optional hooks.

``explore(model, *args)`` needs only ``objective(params, *args) -> scalar`` and
``init(key, scale, *args) -> params`` (params: any pytree of float arrays). Everything
else is optional and only makes the exploration faster or more informative:

* ``global_value``: the known optimal value (a float, or a function of ``*args``); with
  it a certified minimum above it is a spurious local minimum; without it the explorer
  reports levels, not verdicts.
* ``reduction``: variable projection (:class:`Reduction`): some variables eliminated in
  closed form, so refinement and certificates run in fewer variables.
* ``descend``: a faster descent engine for this model (same iterates as plain GD), called
  as ``descend(*, keys, scales, num_steps, learning_rate, optimizer, grad_tol, engine,
  batch_size, divergence_threshold, dtype, args)`` with one key and one init scale per run
  (run i of an exploration: key i of ``split(key, num_inits)``, ``scales[i % len(scales)]``);
  it returns ``(endpoints, refinement starts, extra measurements)``. A run must depend on
  its own key and scale only: the explorer may hand each process a block of the runs.
* ``measure(params, *args)``: measurements of a refined point (a pytree of arrays),
  e.g. neural-collapse metrics.
* ``invariant(params, *args)``: a small array that tells minima at one value apart.
* ``critical_point(key, kept, *args)``: a constructed critical point, for saddle probes.
* ``scales``: default init scales (a tuple, or a function of ``*args``); init i uses
  ``scales[i % len(scales)]``.

A Model is hashable by identity: build it once (at module level) and reuse it, so the
explorer's compiled programs are reused too.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

__all__ = ["Model", "Reduction"]


class Reduction(NamedTuple):
    """Variable projection: ``objective(reduce(params), *args) = min over the eliminated
    variables of the full objective``, attained at ``lift(x, *args)``."""

    objective: Callable[..., Any]
    reduce: Callable[..., Any]
    lift: Callable[..., Any]


@dataclasses.dataclass(frozen=True, eq=False)
class Model:
    """An objective the landscape explorer can explore (see the module docstring)."""

    objective: Callable[..., Any]
    init: Callable[..., Any]
    global_value: float | Callable[..., Any] | None = None
    reduction: Reduction | None = None
    descend: Callable[..., Any] | None = None
    measure: Callable[..., Any] | None = None
    invariant: Callable[..., Any] | None = None
    critical_point: Callable[..., Any] | None = None
    scales: tuple | Callable[..., Any] = (0.1, 1.0)
    name: str = "model"

    def __post_init__(self):
        for field in ("objective", "init"):
            if not callable(getattr(self, field)):
                raise TypeError(f"Model.{field} must be a function; got {type(getattr(self, field)).__name__}")
        for field in ("descend", "measure", "invariant", "critical_point"):
            value = getattr(self, field)
            if value is not None and not callable(value):
                raise TypeError(f"Model.{field} must be a function or None; got {type(value).__name__}")
        if self.reduction is not None and not isinstance(self.reduction, Reduction):
            raise TypeError(f"Model.reduction must be a Reduction(objective, reduce, lift) or None; "
                            f"got {type(self.reduction).__name__}")
        gv = self.global_value
        if gv is not None and not callable(gv) and not isinstance(gv, (int, float)):
            raise TypeError(f"Model.global_value must be a number, a function of *args, or None; got {gv!r}")

    def default_scales(self, *args) -> tuple:
        return tuple(self.scales(*args) if callable(self.scales) else self.scales)

    def optimum(self, *args) -> Any:
        """The known optimal value for these arguments, or None."""
        if self.global_value is None:
            return None
        return self.global_value(*args) if callable(self.global_value) else self.global_value
