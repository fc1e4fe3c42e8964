"""Neural-collapse metrics on plain arrays (Appendix A and Section 4 of the paper).

This package knows nothing of the unconstrained feature model: every function takes a
feature matrix ``features`` of shape ``(d, N)`` (one column per sample, as ``H`` in the
paper), integer ``labels`` of shape ``(N,)`` with values in ``[0, num_classes)``, and,
where needed, a classifier ``W`` of shape ``(K, d)`` (rows ``w^k``) and a bias ``b`` of
shape ``(K,)`` or ``None``.

Conventions (documented once here, used by every function):

* **dtype follows the inputs.** Features and classifier must share one floating dtype
  (float32 or float64); every intermediate is built in that dtype and the cutoffs use
  that dtype's machine epsilon.
* **Unbalanced labels.** With ``n_k`` samples in class ``k`` and ``N = sum_k n_k``:
  class means ``hbar_k`` are per-class averages; the within-class covariance is
  ``Sigma_W = (1/N) sum_i (h_i - hbar_{y_i})(h_i - hbar_{y_i})^T`` (the paper's
  ``1/(nK)`` with ``N = nK``); class means are centered at the *unweighted* mean of the
  class means ``mu = (1/K) sum_k hbar_k``, so ``Sigma_B = (1/K) sum_k (hbar_k - mu)
  (hbar_k - mu)^T`` and ``Hbar = [hbar_1 - mu, ..., hbar_K - mu]``. For balanced labels
  ``mu`` is the global mean ``h_G`` and everything reduces to Appendix A exactly; for
  unbalanced labels this choice keeps ``Hbar 1 = 0``, hence ``rank(Sigma_B) <= K - 1``,
  which the pseudo-inverse in :func:`nc1` relies on. The cosine margin (Section 4) is a
  per-sample quantity and uses the global feature mean ``h_G`` as the paper defines it.
* **Every class must be present.** When ``labels`` are concrete this is checked
  (``ValueError``); under ``jax.jit`` an empty class silently gets a zero mean.
* **``num_classes``** is a static Python int. It may be omitted only when ``labels`` are
  concrete (it is then ``max(labels) + 1``); under ``jax.jit`` pass it explicitly (bind
  it with ``functools.partial``).
* **Undefined values are NaN**: e.g. ``nc2`` of ``W = 0``, ``nc1`` when all class means
  coincide, the numerical rank of an all-zero class.
* **No ``jax.jit`` inside**: callers jit, e.g.
  ``jax.jit(functools.partial(collapse_report, num_classes=10))``.

Streaming (data sets that do not fit in memory; optax-style pure state updates):
``stats = collapse_stats_init(K, d)``, then ``stats = collapse_stats_update(stats,
features, labels, mask)`` per batch, then ``collapse_report_from_stats(stats, W, b)``.
**The streaming functions take batches as rows, ``(N_batch, d)``** (a Flax model's
output), unlike the ``(d, N)`` functions above; ``feature_axis=0`` accepts columns. The
state holds per-class counts and means and the pooled within-class scatter (``d^2 + dK``
numbers, independent of N); NC1, NC2, NC3 follow from it. Accuracy, NC4 and the cosine
margin need a second pass (:func:`sample_stats_update`); the numerical rank is not
available from streamed statistics. :func:`nc1_from_scatter` is NC1 from class means and
a within-class scatter, the same rule as :func:`nc1`.

d < K - 1 (Theorem 3.1, case 1). The global minimizer then has ``Hbar^T Hbar = C_1
P_d(I - 11^T/K)``, and ``P_d`` (best rank-d approximation) is *not unique*: ``I - 11^T/K``
is the orthogonal projector onto ``1^perp`` whose eigenvalue 1 has multiplicity ``K-1``,
so every rank-d orthogonal projector ``Q`` with ``range(Q)`` inside ``1^perp`` is a best
rank-d approximation. The rank-d analogue of eqs. (7) and (8) used here is therefore the
distance to the nearest such target, ``min_Q || A/||A||_F - Q/sqrt(d) ||_F`` (``Q/sqrt(d)``
has unit Frobenius norm, as ``(I - 11^T/K)/sqrt(K-1)`` does in eq. (7)). Since
``||A/||A||_F - Q/sqrt(d)||_F^2 = 2 - (2/sqrt(d)) tr(sym(A) Q)/||A||_F``, the minimizing
``Q`` projects onto the top-d eigenvectors of ``J sym(A) J`` restricted to ``1^perp``
(Ky Fan), ``J = I - 11^T/K``. We compute that ``Q`` and then evaluate the distance
directly (not through the ``sqrt(2 - 2x)`` form, which loses half the digits), so an
exactly collapsed optimum gives 0 to machine precision. For ``d = K - 1`` the only such
``Q`` is ``J`` and the metric is exactly eq. (7)/(8).

Layout (each idea has one home; the public names are re-exported here):

* ``_checks``: argument validation (``ValueError`` naming argument, value and range).
* ``_collapse``: class means, NC1 (one rule for features and for scatter statistics),
  NC4's classifier and nearest-class-center decisions.
* ``_etf``: NC2, NC2 of the class means, NC3 (distance to the simplex ETF Gram).
* ``_geometry``: numerical rank, cosine margin, PCM.
* ``_streaming``: :class:`CollapseStats`, :class:`SampleStats` and their updates.
* ``_report``: :class:`CollapseReport` from features or from streamed statistics.
"""

from __future__ import annotations

from nc_jax.metrics._collapse import class_means, nc1, nc1_from_scatter, nc4
from nc_jax.metrics._etf import nc2, nc2_means, nc3
from nc_jax.metrics._geometry import cosine_margin, numerical_rank, pcm
from nc_jax.metrics._report import CollapseReport, collapse_report, collapse_report_from_stats
from nc_jax.metrics._streaming import (
    CollapseStats,
    SampleStats,
    collapse_stats_init,
    collapse_stats_update,
    sample_stats_init,
    sample_stats_update,
)

__all__ = [
    "CollapseReport",
    "CollapseStats",
    "SampleStats",
    "class_means",
    "collapse_report",
    "collapse_report_from_stats",
    "collapse_stats_init",
    "collapse_stats_update",
    "cosine_margin",
    "nc1",
    "nc1_from_scatter",
    "nc2",
    "nc2_means",
    "nc3",
    "nc4",
    "numerical_rank",
    "pcm",
    "sample_stats_init",
    "sample_stats_update",
]
