"""Closed forms of the paper: Theorem 3.1, Lemma B.2 and Appendix C's polar model.

One home for every closed form; numerics elsewhere are checked against these.

* :mod:`._global` - Theorem 3.1: :class:`Regime`, :func:`global_minimum`,
  :func:`nc_predictions` (the derivation and the extreme-lambda handling are in its
  docstring).
* :mod:`._critical` - Lemma B.2: :func:`factorization_critical_point` and its exact
  Hessian spectrum, :func:`lemma_b2_critical_point`, :func:`ufm_critical_point`.
* :mod:`._imbalanced` - the class-imbalanced UFM without bias: :func:`imbalanced_global_minimum`
  (value, minimizer, which classes survive), :func:`minority_collapse_threshold`.
* :mod:`._predictions` - :func:`prediction_errors`: a point's distance to the predictions.
* :mod:`._memory` - :func:`memory_estimate`: bytes the closed forms allocate.
* :mod:`._polar` - Appendix C's polar ``(s, theta)`` model: eqs. (28)-(35), the simplex-ETF
  classifier, :func:`proposition_c1_check` (float64 numpy).

Imports run downward: this package uses :mod:`nc_jax.ufm`, :mod:`nc_jax.losses` and
:mod:`nc_jax.metrics` only.
The private modules have no ``__all__``: this package's ``__all__`` is the public surface.
"""

from nc_jax.theory._critical import (
    CriticalPoint,
    factorization_critical_point,
    lemma_b2_critical_point,
    ufm_critical_point,
)
from nc_jax.theory._global import (
    REGIME_NAMES,
    GlobalMinimum,
    NCPrediction,
    Regime,
    global_minimum,
    nc_predictions,
    regime_name,
)
from nc_jax.theory._imbalanced import imbalanced_global_minimum, minority_collapse_threshold
from nc_jax.theory._memory import memory_estimate
from nc_jax.theory._polar import (
    figure2_panels,
    figure8_panels,
    polar_ce_grad,
    polar_ce_grad_limit,
    polar_ce_grad_paper_eq35,
    polar_ce_grad_two_class,
    polar_ce_loss,
    polar_feature,
    polar_mse_grad,
    polar_mse_grad_limit,
    polar_mse_loss,
    polar_mse_loss_limit,
    polar_outputs,
    proposition_c1_check,
    simplex_etf_classifier,
)
from nc_jax.theory._predictions import prediction_errors

__all__ = [
    "Regime",
    "REGIME_NAMES",
    "regime_name",
    "GlobalMinimum",
    "global_minimum",
    "NCPrediction",
    "nc_predictions",
    "prediction_errors",
    "imbalanced_global_minimum",
    "minority_collapse_threshold",
    "CriticalPoint",
    "factorization_critical_point",
    "lemma_b2_critical_point",
    "ufm_critical_point",
    "memory_estimate",
    "figure2_panels",
    "figure8_panels",
    "polar_ce_grad",
    "polar_ce_grad_limit",
    "polar_ce_grad_paper_eq35",
    "polar_ce_grad_two_class",
    "polar_ce_loss",
    "polar_feature",
    "polar_mse_grad",
    "polar_mse_grad_limit",
    "polar_mse_loss",
    "polar_mse_loss_limit",
    "polar_outputs",
    "proposition_c1_check",
    "simplex_etf_classifier",
]
