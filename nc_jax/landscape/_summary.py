"""What an exploration shows, and whether it is evidence: counts, minimum levels, verdict.

A verdict needs evidence. The rule (``summarize``):

* a run is *certified* when it converged (refined to the gradient tolerance) and its
  second-order certificate decided (a certified direction of negative curvature, or a
  Hessian positive semidefinite to the certificate's threshold);
* a configuration supports a verdict only when at least ``min_certified_share`` of its
  runs are certified and at least one of them is a certified minimum; otherwise it is
  ``INCONCLUSIVE`` (diverged, unconverged or undecided runs prove nothing);
* one certified minimum whose value differs from the known optimum is a finding on its
  own (``SPURIOUS``), whatever the share; without a known optimum, certified minima at
  two or more distinct values (``MULTIPLE_LEVELS``) show that the higher ones are not
  global.

Second-order certificates prove what they say at the point they were computed: a
negative Rayleigh quotient beyond rounding proves a strict saddle; a PSD Hessian at a
refined critical point proves a second-order critical point, which is a local minimum
when its Hessian is positive definite on the complement of the symmetry orbits (the
UFM's rotations W -> W Q leave flat directions). Neither says anything about points the
descent never reached: counts are evidence, not proof.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

import numpy as np

from nc_jax.landscape._classify import CLASS_NAMES

__all__ = ["Verdict", "Summary", "summarize", "DEFAULT_MIN_CERTIFIED_SHARE"]

DEFAULT_MIN_CERTIFIED_SHARE = 0.5

_CERTIFIED = ("global_minimum", "strict_saddle", "spurious_local_minimum", "below_closed_form", "local_minimum",
              "degenerate")
# second-order points whose values form the levels (degenerate ones are not certified
# minima, but with a continuous symmetry every minimum is degenerate)
_MINIMA = ("global_minimum", "spurious_local_minimum", "below_closed_form", "local_minimum", "degenerate")


class Verdict(enum.IntEnum):
    """What one exploration supports."""

    BENIGN = 0           # known optimum; enough certified runs; every certified minimum at it
    SINGLE_LEVEL = 1     # no known optimum; enough certified runs; all certified minima at one value
    SPURIOUS = 2         # a certified minimum with a value other than the known optimum
    MULTIPLE_LEVELS = 3  # no known optimum; certified minima at two or more values
    INCONCLUSIVE = 4     # too few converged, certified runs to support any verdict


class Summary(NamedTuple):
    """Host-side summary of one exploration.

    Attributes:
      counts: class name -> number of runs (every class in ``CLASS_NAMES``).
      num_runs, num_converged, num_certified: runs in all; refined to the gradient
        tolerance with a finite value; converged and decided by the certificate.
      certified_share: num_certified / num_runs.
      minimum_values: sorted distinct values of the second-order points (certified minima
        and degenerate points), grouped when they agree within ``value_rtol * max(1, |v|)``.
      minimum_counts: runs per value in ``minimum_values``.
      verdict: a :class:`Verdict`.
      reasons: one line per fact behind the verdict.
      min_certified_share: the evidence threshold used.
    """

    counts: dict
    num_runs: int
    num_converged: int
    num_certified: int
    certified_share: float
    minimum_values: tuple
    minimum_counts: tuple
    verdict: Verdict
    reasons: tuple
    min_certified_share: float


def group_levels(values, rtol: float) -> tuple[tuple, tuple]:
    """Sorted distinct levels of ``values`` (agreeing within rtol * max(1, |v|)) and their counts."""
    levels, counts = [], []
    for v in np.sort(np.asarray(values, dtype=float)):
        if levels and abs(v - levels[-1]) <= rtol * max(1.0, abs(levels[-1])):
            counts[-1] += 1
        else:
            levels.append(float(v))
            counts.append(1)
    return tuple(levels), tuple(counts)


def summarize(result, *, min_certified_share: float = DEFAULT_MIN_CERTIFIED_SHARE,
              value_rtol: float = 1e-9) -> Summary:
    """Counts, minimum levels and the verdict an ``ExplorationResult`` supports (see module doc)."""
    if not (0.0 < min_certified_share <= 1.0):
        raise ValueError(f"min_certified_share must be in (0, 1]; got {min_certified_share!r}")
    labels = np.asarray(result.classification.label).reshape(-1)
    names = np.asarray(CLASS_NAMES)[labels]
    counts = {c: int(np.sum(names == c)) for c in CLASS_NAMES}
    values = np.asarray(result.value).reshape(-1)
    num_runs = int(labels.size)
    num_converged = num_runs - counts["not_converged"] - counts["diverged"]
    num_certified = sum(counts[c] for c in _CERTIFIED)
    share = num_certified / num_runs if num_runs else 0.0
    minima = np.isin(names, _MINIMA)
    levels, level_counts = group_levels(values[minima], value_rtol)
    reasons = []
    wrong = counts["spurious_local_minimum"] + counts["below_closed_form"]
    # with a known optimum a degenerate point is above it (at it, the value decides: global)
    flat_above = counts["degenerate"] if result.f_star is not None else 0
    if wrong or flat_above:
        verdict = Verdict.SPURIOUS
        if wrong:
            reasons.append(f"{wrong} certified minimum/minima at a value other than the known optimum "
                           f"f* = {result.f_star:.12g}")
        if flat_above:
            reasons.append(f"{flat_above} second-order critical point(s) above f* = {result.f_star:.12g} with no "
                           f"negative curvature beyond the threshold (not certified minima, but counterexamples "
                           f"to a strict-saddle claim)")
    elif result.f_star is None and len(levels) > 1:
        verdict = Verdict.MULTIPLE_LEVELS
        reasons.append(f"certified minima at {len(levels)} distinct values: " + ", ".join(f"{v:.12g}" for v in levels))
    elif share < min_certified_share or not np.any(minima):
        verdict = Verdict.INCONCLUSIVE
        if share < min_certified_share:
            reasons.append(
                f"only {num_certified} of {num_runs} runs converged and were certified "
                f"({share:.0%} < the {min_certified_share:.0%} required): "
                f"{counts['diverged']} diverged, {counts['not_converged']} not converged, "
                f"{counts['inconclusive']} undecided certificates"
            )
        if not np.any(minima):
            reasons.append("no run reached a certified minimum")
    else:
        verdict = Verdict.BENIGN if result.f_star is not None else Verdict.SINGLE_LEVEL
        reasons.append(f"{num_certified} of {num_runs} runs certified ({share:.0%}); "
                       f"{int(minima.sum())} second-order points, all at "
                       + (f"f* = {result.f_star:.12g}" if result.f_star is not None else f"one value {levels[0]:.12g}")
                       + (f" ({counts['degenerate']} degenerate: PSD with |lambda_min| <= tau)"
                          if counts["degenerate"] else ""))
    return Summary(counts, num_runs, num_converged, num_certified, share, levels, level_counts,
                   verdict, tuple(reasons), float(min_certified_share))
