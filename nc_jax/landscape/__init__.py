"""Landscape explorer: is THIS landscape benign? Multistart descent, refinement,
certified classification and a verdict that needs evidence, for any objective.

* :class:`Model`: an objective, an init and optional hooks (known optimum, variable
  projection, a faster descent, measurements, an invariant, constructed critical points).
  The built-in UFM is one (:func:`ufm_model`); ``explore(problem)`` takes the same road.
* :func:`explore`: descent (the model's hook, GD or any optax optimizer) from many inits
  -> trust-region Newton-CG refinement -> second-order certificate -> :class:`RunClass`.
* :func:`summarize`: counts, minimum levels, and the :class:`Verdict` the runs support
  (INCONCLUSIVE unless enough runs converged and were certified).
* :func:`write_report`: report.md, results.json and a picture for one exploration.
* :func:`memory_estimate`: bytes an exploration needs, checked before any allocation.
* :func:`saddle_probe`: start at a constructed strict saddle, step along its certified
  negative-curvature direction, descend, and report where it lands.
* UFM engines: :func:`multistart_descent` (exact sufficient-statistics GD for the MSE),
  :func:`reduced_objective` (features eliminated in closed form), :func:`refine`,
  :func:`classify`.
"""

from nc_jax.landscape._classify import CLASS_NAMES, Classification, RunClass, certify_point, class_names
from nc_jax.landscape._descent import (
    DESCENT_STATUS_NAMES,
    DescentResult,
    default_scales,
    gradient_descent,
    gram_gradient_descent,
    default_batch_size,
    descent_from_keys,
    init_batch,
    multistart_descent,
    run_batched,
)
from nc_jax.landscape._explore import (
    ExplorationResult,
    classify,
    default_learning_rate,
    descend,
    explore,
    memory_estimate,
    num_parameters,
    refine,
)
from nc_jax.landscape._model import Model, Reduction
from nc_jax.landscape._probes import ProbeResult, saddle_probe
from nc_jax.landscape._reduced import ReducedParams, lift, optimal_features, reduced_objective
from nc_jax.landscape._report import exploration_row, write_report
from nc_jax.landscape._summary import DEFAULT_MIN_CERTIFIED_SHARE, Summary, Verdict, group_levels, summarize
from nc_jax.landscape._ufm_model import ufm_model
from nc_jax.solvers import DescentStatus, RefineResult, trust_region_newton

__all__ = [
    "Model",
    "Reduction",
    "ufm_model",
    "explore",
    "descend",
    "ExplorationResult",
    "summarize",
    "Summary",
    "Verdict",
    "DEFAULT_MIN_CERTIFIED_SHARE",
    "group_levels",
    "write_report",
    "exploration_row",
    "memory_estimate",
    "num_parameters",
    "RunClass",
    "CLASS_NAMES",
    "Classification",
    "certify_point",
    "class_names",
    "classify",
    "refine",
    "default_learning_rate",
    "default_scales",
    "default_batch_size",
    "DescentStatus",
    "DESCENT_STATUS_NAMES",
    "DescentResult",
    "gradient_descent",
    "gram_gradient_descent",
    "init_batch",
    "multistart_descent",
    "descent_from_keys",
    "run_batched",
    "ProbeResult",
    "saddle_probe",
    "ReducedParams",
    "lift",
    "optimal_features",
    "reduced_objective",
    "RefineResult",
    "trust_region_newton",
]
