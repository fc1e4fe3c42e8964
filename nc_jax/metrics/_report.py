"""The CollapseReport of one configuration, from the features or from streamed statistics.

Owns :class:`CollapseReport` and the two ways to fill it: :func:`collapse_report` calls
every one-shot metric; :func:`collapse_report_from_stats` reads the streaming states,
through the same NC1 / ETF rules, and leaves NaN what the statistics do not define.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from nc_jax.metrics._checks import _check_bias, _check_empty_classes, _check_labelled, _concrete
from nc_jax.metrics._collapse import _center, _predict, nc1, nc1_from_scatter, nc4
from nc_jax.metrics._etf import _distance_to_etf_gram, nc2, nc2_means, nc3
from nc_jax.metrics._geometry import cosine_margin, numerical_rank
from nc_jax.metrics._streaming import CollapseStats, SampleStats, _stats_classifier


class CollapseReport(NamedTuple):
    """All metrics of one (W, b, H, labels) configuration; scalars in the features' dtype.

    Attributes:
      nc1: ``tr(Sigma_W Sigma_B^+)/K`` (eq. 6).
      nc1_trace: ``tr(Sigma_W)/tr(Sigma_B)``.
      nc2: eq. (7) for ``W`` (uncentered; rank-d analogue when ``d < K-1``).
      nc2_means: eq. (7) for ``Hbar^T Hbar``.
      nc3: eq. (8).
      nc4: classifier vs nearest-class-center disagreement rate.
      numerical_rank: Section 4 numerical rank.
      cosine_margin_mean: mean cosine margin (Section 4).
      cosine_margin_min: minimum cosine margin.
      accuracy: fraction with ``argmax(W h + b) == label``.
    """

    nc1: jax.Array
    nc1_trace: jax.Array
    nc2: jax.Array
    nc2_means: jax.Array
    nc3: jax.Array
    nc4: jax.Array
    numerical_rank: jax.Array
    cosine_margin_mean: jax.Array
    cosine_margin_min: jax.Array
    accuracy: jax.Array


def collapse_report(W, b, features, labels, *, num_classes: int | None = None,
                    max_class_size: int | None = None) -> CollapseReport:
    """Computes every metric of this package at once.

    jit it at the call site with the static settings bound:
    ``jax.jit(functools.partial(collapse_report, num_classes=K))``.

    Args:
      W: ``(K, d)`` classifier.
      b: ``(K,)`` bias or ``None``.
      features: ``(d, N)`` float array ``H``.
      labels: ``(N,)`` integer labels.
      num_classes: static ``K`` (``None``: taken from ``W``).
      max_class_size: forwarded to :func:`numerical_rank`.

    Returns:
      A :class:`CollapseReport`.
    """
    W, features, labels, K = _check_labelled(W, features, labels, num_classes)
    b = _check_bias(b, W)
    cm = cosine_margin(W, b, features, labels, num_classes=K)
    pred = _predict(W, b, features)
    correct = pred == labels.astype(pred.dtype)
    return CollapseReport(
        nc1=nc1(features, labels, num_classes=K),
        nc1_trace=nc1(features, labels, num_classes=K, variant="trace"),
        nc2=nc2(W),
        nc2_means=nc2_means(features, labels, num_classes=K),
        nc3=nc3(W, features, labels, num_classes=K),
        nc4=nc4(W, b, features, labels, num_classes=K),
        numerical_rank=numerical_rank(features, labels, num_classes=K,
                                      max_class_size=max_class_size),
        cosine_margin_mean=jnp.mean(cm),
        cosine_margin_min=jnp.min(cm),
        accuracy=jnp.mean(correct.astype(features.dtype)),
    )


def _sample_fields(sample_stats: SampleStats, dtype) -> dict:
    """The report fields of a second pass: per-sample averages (NaN before any sample)."""
    nan = jnp.array(jnp.nan, dtype=dtype)
    m = sample_stats.num_samples.astype(dtype)
    safe_m = jnp.where(m > 0, m, jnp.ones_like(m))

    def ratio(x):
        return jnp.where(m > 0, x.astype(dtype) / safe_m, nan)

    return dict(
        nc4=ratio(sample_stats.num_ncc_mismatch),
        accuracy=ratio(sample_stats.num_correct),
        cosine_margin_mean=ratio(sample_stats.margin_sum),
        cosine_margin_min=jnp.where(m > 0, sample_stats.margin_min.astype(dtype), nan),
    )


def collapse_report_from_stats(stats: CollapseStats, W=None, b=None,
                               sample_stats: SampleStats | None = None) -> CollapseReport:
    """The :class:`CollapseReport` of streamed data, as far as the statistics define it.

    From :class:`CollapseStats` alone: ``nc1``, ``nc1_trace`` and ``nc2_means``; with
    ``W`` also ``nc2`` and ``nc3``; with the second pass's :class:`SampleStats` also
    ``nc4``, ``cosine_margin_mean``, ``cosine_margin_min`` and ``accuracy``. Fields
    without their inputs are NaN. ``numerical_rank`` is always NaN: it needs the
    singular values of every class block, which no per-class sums determine (the
    per-class Gram matrices, ``K d^2`` numbers, would; too large at K=1000, d=2048).
    On the same data every defined field equals :func:`collapse_report` up to rounding.

    Every class must have been seen: checked when ``stats`` are concrete
    (``ValueError``); under ``jax.jit`` an unseen class counts as a zero mean.

    Args:
      stats: :class:`CollapseStats` after a full pass.
      W: optional ``(K, d)`` classifier, cast to the statistics' dtype.
      b: optional ``(K,)`` bias; accepted for a uniform signature with
        :func:`collapse_report` (only the per-sample fields use it, through
        :func:`sample_stats_update`).
      sample_stats: optional :class:`SampleStats` of a second pass.

    Returns:
      A :class:`CollapseReport` in the statistics' dtype.
    """
    d, K = stats.means.shape
    dtype = stats.means.dtype
    concrete = _concrete(stats.counts)
    if concrete is not None:
        _check_empty_classes(concrete, K)
    n = jnp.sum(stats.counts)
    hbar = _center(stats.means)
    rank = min(d, K - 1)
    nan = jnp.array(jnp.nan, dtype=dtype)
    report = CollapseReport(*([nan] * len(CollapseReport._fields)))._replace(
        nc1=nc1_from_scatter(stats.means, stats.within_scatter, n),
        nc1_trace=nc1_from_scatter(stats.means, stats.within_scatter, n, variant="trace"),
        nc2_means=_distance_to_etf_gram(hbar.T @ hbar, rank),
    )
    if W is not None:
        W, _ = _stats_classifier(W, b, stats)
        report = report._replace(nc2=nc2(W), nc3=_distance_to_etf_gram(W @ hbar, rank))
    if sample_stats is not None:
        report = report._replace(**_sample_fields(sample_stats, dtype))
    return report
