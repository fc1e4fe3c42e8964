"""Landscape explorer: multistart descent, refinement, certified classification.

* :func:`multistart_descent`: GD (exact sufficient-statistics engine for the MSE) or any
  optax optimizer from many inits, chunked and split across devices.
* :func:`refine`: trust-region Newton-CG to gradient norm 1e-10, in the reduced variables
  (W, b) when the features can be eliminated (:func:`reduced_objective`).
* :func:`classify`, :func:`explore`: certificates and classes of every run.
* :func:`summarize`: counts, minimum levels, and the :class:`Verdict` the runs support
  (INCONCLUSIVE unless enough runs converged and were certified).
* :func:`memory_estimate`: bytes an exploration needs, checked before any allocation.
* :func:`saddle_probe`: start at a constructed strict saddle, step along its certified
  negative-curvature direction, descend, and report where it lands.
"""

from nc_jax.landscape._descent import (
    CONVERGED,
    DESCENT_STATUS_NAMES,
    DIVERGED,
    MAX_STEPS,
    DescentResult,
    gradient_descent,
    gram_gradient_descent,
    init_batch,
    multistart_descent,
    run_batched,
)
from nc_jax.landscape._explore import (
    BELOW_CLOSED_FORM,
    CLASS_NAMES,
    DIVERGED_RUN,
    GLOBAL_MINIMUM,
    INCONCLUSIVE,
    LOCAL_MINIMUM,
    NOT_CONVERGED,
    SPURIOUS_LOCAL_MINIMUM,
    STRICT_SADDLE,
    Classification,
    ExplorationResult,
    class_names,
    classify,
    default_learning_rate,
    default_scales,
    explore,
    memory_estimate,
    refine,
)
from nc_jax.landscape._probes import ProbeResult, saddle_probe
from nc_jax.landscape._reduced import ReducedParams, lift, optimal_features, reduced_objective
from nc_jax.landscape._refine import RefineResult, trust_region_newton
from nc_jax.landscape._summary import DEFAULT_MIN_CERTIFIED_SHARE, Summary, Verdict, group_levels, summarize

__all__ = [
    "DEFAULT_MIN_CERTIFIED_SHARE",
    "Summary",
    "Verdict",
    "group_levels",
    "summarize",
    "memory_estimate",
    "default_learning_rate",
    "ProbeResult",
    "saddle_probe",
    "ReducedParams",
    "lift",
    "optimal_features",
    "reduced_objective",
    "RefineResult",
    "trust_region_newton",
    "BELOW_CLOSED_FORM",
    "CLASS_NAMES",
    "CONVERGED",
    "Classification",
    "DESCENT_STATUS_NAMES",
    "DIVERGED",
    "DIVERGED_RUN",
    "DescentResult",
    "ExplorationResult",
    "GLOBAL_MINIMUM",
    "INCONCLUSIVE",
    "LOCAL_MINIMUM",
    "MAX_STEPS",
    "NOT_CONVERGED",
    "SPURIOUS_LOCAL_MINIMUM",
    "STRICT_SADDLE",
    "class_names",
    "classify",
    "default_scales",
    "explore",
    "gradient_descent",
    "gram_gradient_descent",
    "init_batch",
    "multistart_descent",
    "refine",
    "run_batched",
]
