"""Neural-collapse metrics on plain arrays (Appendix A and Section 4 of the paper).

This module knows nothing of the unconstrained feature model: every function takes a
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
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

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


# ----------------------------------------------------------------------------- helpers

# Full-precision matmuls for accumulated statistics: XLA:GPU may otherwise run float32
# dots in TF32 (10-bit mantissa), which would put a ~1e-3 relative floor under NC1.
_EXACT = jax.lax.Precision.HIGHEST


def _concrete(x) -> np.ndarray | None:
    """Returns ``x`` as a numpy array when it is concrete, ``None`` under tracing."""
    if isinstance(x, jax.core.Tracer):
        return None
    try:
        return np.asarray(x)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def _check_features(features, name: str = "features", layout: str = "(d, N)") -> jax.Array:
    features = jnp.asarray(features)
    if features.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array of shape {layout}; got shape {features.shape}.")
    if not jnp.issubdtype(features.dtype, jnp.floating):
        raise ValueError(f"{name} must be float32 or float64; got dtype {features.dtype}.")
    return features


def _check_labels(labels, num_samples: int, num_classes: int | None) -> tuple[jax.Array, int]:
    """Validates labels; returns (labels, K). Value checks only when labels are concrete."""
    labels_arr = jnp.asarray(labels)
    if labels_arr.shape != (num_samples,):
        raise ValueError(
            f"labels must have shape (N,) = ({num_samples},) to match features; "
            f"got shape {labels_arr.shape}."
        )
    if not jnp.issubdtype(labels_arr.dtype, jnp.integer):
        raise ValueError(f"labels must be integers; got dtype {labels_arr.dtype}.")
    concrete = _concrete(labels)
    if num_classes is None:
        if concrete is None:
            raise ValueError(
                "num_classes=None can only be inferred from concrete labels; under jax.jit "
                "pass num_classes explicitly (a static int >= 2)."
            )
        num_classes = int(concrete.max()) + 1 if concrete.size else 0
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
        raise ValueError(f"num_classes must be a static Python int >= 2; got {num_classes!r}.")
    num_classes = int(num_classes)
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2; got {num_classes}.")
    if concrete is not None:
        lo, hi = int(concrete.min()), int(concrete.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(
                f"labels must lie in [0, num_classes) = [0, {num_classes}); "
                f"got values in [{lo}, {hi}]."
            )
        counts = np.bincount(concrete, minlength=num_classes)
        if np.any(counts == 0):
            missing = np.flatnonzero(counts == 0).tolist()
            raise ValueError(
                f"every class in [0, {num_classes}) needs at least one sample; "
                f"classes {missing} are empty."
            )
    return labels_arr, num_classes


def _check_classifier(W, features: jax.Array, num_classes: int, name: str = "W") -> jax.Array:
    W = jnp.asarray(W)
    d = features.shape[0]
    if W.shape != (num_classes, d):
        raise ValueError(
            f"{name} must have shape (num_classes, d) = ({num_classes}, {d}); got {W.shape}."
        )
    if W.dtype != features.dtype:
        raise ValueError(
            f"{name} and features must share one dtype; got {W.dtype} and {features.dtype}."
        )
    return W


def _check_bias(b, W: jax.Array) -> jax.Array:
    K = W.shape[0]
    if b is None:
        return jnp.zeros((K,), dtype=W.dtype)
    b = jnp.asarray(b)
    if b.shape != (K,):
        raise ValueError(f"b must have shape (K,) = ({K},) or be None; got {b.shape}.")
    if b.dtype != W.dtype:
        raise ValueError(f"b and W must share one dtype; got {b.dtype} and {W.dtype}.")
    return b


def _check_rank(rank: int | None, d: int, num_classes: int) -> int:
    if rank is None:
        return min(d, num_classes - 1)
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)):
        raise ValueError(f"rank must be None or a static int in [1, K-1]; got {rank!r}.")
    if not 1 <= int(rank) <= num_classes - 1:
        raise ValueError(
            f"rank must lie in [1, K-1] = [1, {num_classes - 1}]; got {rank}."
        )
    return int(rank)


def _one_hot(labels: jax.Array, num_classes: int, dtype) -> jax.Array:
    return jax.nn.one_hot(labels, num_classes, dtype=dtype)  # (N, K)


def _means(features: jax.Array, labels: jax.Array, num_classes: int):
    """Returns (class means (d, K), counts (K,)) in the features' dtype."""
    onehot = _one_hot(labels, num_classes, features.dtype)
    counts = jnp.sum(onehot, axis=0)
    sums = features @ onehot
    safe = jnp.where(counts > 0, counts, jnp.ones_like(counts))
    return sums / safe[None, :], counts


def _centered_means(features: jax.Array, labels: jax.Array, num_classes: int) -> jax.Array:
    """``Hbar`` (d, K): class means centered at the unweighted mean of class means."""
    means, _ = _means(features, labels, num_classes)
    return means - jnp.mean(means, axis=1, keepdims=True)


def _safe_normalize_fro(A: jax.Array) -> jax.Array:
    norm = jnp.linalg.norm(A)
    nan = jnp.array(jnp.nan, dtype=A.dtype)
    return jnp.where(norm > 0, A / jnp.where(norm > 0, norm, jnp.ones_like(norm)), nan)


def _distance_to_etf_gram(A: jax.Array, rank: int) -> jax.Array:
    """``min_Q ||A/||A||_F - Q/sqrt(rank)||_F`` over rank-``rank`` projectors in ``1^perp``.

    For ``rank = K - 1`` this is eq. (7)/(8): ``Q = I - 11^T/K``. See the module
    docstring for the rank-d case (Theorem 3.1, d < K - 1).
    """
    K = A.shape[0]
    dtype = A.dtype
    A_hat = _safe_normalize_fro(A)
    eye = jnp.eye(K, dtype=dtype)
    ones = jnp.ones((K, K), dtype=dtype)
    J = eye - ones / K
    if rank == K - 1:
        Q = J
    else:
        S = 0.5 * (A_hat + A_hat.T)
        # Deflate the 1-direction to eigenvalue -K (<= -2 < -||S||_2) so the top-`rank`
        # eigenvectors always lie in 1^perp.
        M = J @ S @ J - ones
        M = 0.5 * (M + M.T)
        M = jnp.where(jnp.isfinite(M), M, jnp.zeros_like(M))
        _, vecs = jnp.linalg.eigh(M)  # ascending
        V = vecs[:, K - rank:]
        Q = V @ V.T
    return jnp.linalg.norm(A_hat - Q / jnp.sqrt(jnp.asarray(rank, dtype=dtype)))


def _trace_ratio(tr_w: jax.Array, hbar: jax.Array) -> jax.Array:
    """``tr(Sigma_W) / tr(Sigma_B)`` with ``tr(Sigma_B) = ||Hbar||_F^2 / K``; NaN if 0."""
    K = hbar.shape[1]
    nan = jnp.array(jnp.nan, dtype=hbar.dtype)
    tr_b = jnp.sum(hbar * hbar) / K
    return jnp.where(tr_b > 0, tr_w / jnp.where(tr_b > 0, tr_b, jnp.ones_like(tr_b)), nan)


def _nc1_pinv(means: jax.Array, within_quadratic, num_samples) -> jax.Array:
    """The one implementation of NC1's pseudo-inverse rule (:func:`nc1`, :func:`nc1_from_scatter`).

    ``means`` (d, K) are centered at their unweighted mean; ``within_quadratic(U)``
    returns ``u_j^T (N Sigma_W) u_j`` for the columns of ``U`` (d, r).
    """
    d, K = means.shape
    dtype = means.dtype
    nan = jnp.array(jnp.nan, dtype=dtype)
    hbar = means - jnp.mean(means, axis=1, keepdims=True)  # (d, K)
    U, S, _ = jnp.linalg.svd(hbar, full_matrices=False)  # U (d, r), S (r,), r = min(d, K)
    eps = jnp.finfo(dtype).eps
    cutoff = max(d, K) * eps * S[0]
    idx = jnp.arange(S.shape[0])
    keep = (idx < K - 1) & (S > cutoff)
    within = within_quadratic(U) / num_samples  # u_j^T Sigma_W u_j
    inv = jnp.where(keep, 1.0 / jnp.where(keep, S * S, jnp.ones_like(S)), jnp.zeros_like(S))
    # (1/K) tr(Sigma_W Sigma_B^+) with Sigma_B^+ = sum_j u_j u_j^T K / S_j^2.
    value = jnp.sum(within * inv)
    return jnp.where(jnp.any(keep), value, nan)


# ----------------------------------------------------------------------------- metrics


def class_means(features, labels, *, num_classes: int | None = None) -> jax.Array:
    """Per-class means ``hbar_k`` (uncentered) as a ``(d, K)`` array (Appendix A).

    Args:
      features: ``(d, N)`` float array.
      labels: ``(N,)`` integer labels in ``[0, num_classes)``.
      num_classes: static ``K >= 2``; inferred only from concrete labels.

    Returns:
      ``(d, K)`` array of class means.
    """
    features = _check_features(features)
    labels, K = _check_labels(labels, features.shape[1], num_classes)
    return _means(features, labels, K)[0]


def nc1(features, labels, *, num_classes: int | None = None, variant: str = "pinv") -> jax.Array:
    """Within-class variability collapse ``NC1 = tr(Sigma_W Sigma_B^+)/K`` (eq. 6).

    ``Sigma_W``, ``Sigma_B`` as in Appendix A (unbalanced labels: see the module
    docstring). ``Sigma_B = Hbar Hbar^T / K`` has rank at most ``K - 1``; its
    pseudo-inverse is taken from the thin SVD ``Hbar = U S V^T`` keeping at most ``K - 1``
    singular directions and only those with ``S_j > max(d, K) * eps * S_1`` (``eps`` of
    the features' dtype). Then ``NC1 = sum_j (u_j^T Sigma_W u_j) / S_j^2`` over kept
    ``j``; ``Sigma_W`` is never formed. This is stable in float32, where a pseudo-inverse
    with a tiny relative cutoff (numpy's default ``rcond=1e-15``) inverts rounding noise in
    the ``d - K + 1`` null directions of ``Sigma_B`` and blows up on nearly collapsed
    features.

    Args:
      features: ``(d, N)`` float array ``H``.
      labels: ``(N,)`` integer labels.
      num_classes: static ``K >= 2`` (required under ``jax.jit``).
      variant: ``"pinv"`` for eq. (6); ``"trace"`` for ``tr(Sigma_W) / tr(Sigma_B)``.

    Returns:
      Scalar in the features' dtype; NaN when all class means coincide.
    """
    features = _check_features(features)
    labels, K = _check_labels(labels, features.shape[1], num_classes)
    if variant not in ("pinv", "trace"):
        raise ValueError(f"variant must be 'pinv' or 'trace'; got {variant!r}.")
    N = features.shape[1]
    means, _ = _means(features, labels, K)
    resid = features - means[:, labels]  # (d, N)
    if variant == "trace":
        hbar = means - jnp.mean(means, axis=1, keepdims=True)  # (d, K)
        return _trace_ratio(jnp.sum(resid * resid) / N, hbar)

    def within_quadratic(U):  # u_j^T (N Sigma_W) u_j from the residuals; Sigma_W never formed
        proj = U.T @ resid  # (r, N)
        return jnp.sum(proj * proj, axis=1)

    return _nc1_pinv(means, within_quadratic, N)


def nc1_from_scatter(class_means, within_scatter, num_samples, *,
                     variant: str = "pinv") -> jax.Array:
    """NC1 (eq. 6) from sufficient statistics: class means and the within-class scatter.

    The same quantity and the same pseudo-inverse rule as :func:`nc1` (one shared
    implementation), for callers that hold statistics instead of the features: the
    streaming accumulator (:func:`collapse_stats_update`) and the sufficient-statistics
    descent of ``nc_jax.landscape``. With ``Sigma_W = within_scatter / num_samples`` and
    the thin SVD ``Hbar = U S V^T`` of the centered class means,
    ``NC1 = sum_j (u_j^T Sigma_W u_j) / S_j^2`` over the kept directions (at most
    ``K - 1``, and only ``S_j > max(d, K) * eps * S_1``). Quadratic forms that rounding
    leaves slightly negative are clamped to 0.

    Accuracy: from the features, :func:`nc1` projects each residual onto ``u_j`` before
    squaring; here ``S`` is already summed, so a quadratic form carries an absolute error
    of about ``eps * ||S||_2``. That only matters in float32 when the within-class spread
    along the class-mean directions is orders of magnitude below the spread in the other
    directions (anisotropic collapse, NC1 ~ 1e-11); prefer :func:`nc1` when the features
    are at hand.

    Args:
      class_means: ``(d, K)`` class means ``hbar_k`` (centered or not: they are centered
        at their unweighted mean here, as in :func:`nc1`).
      within_scatter: ``(d, d)`` within-class scatter
        ``S = sum_i (h_i - hbar_{y_i})(h_i - hbar_{y_i})^T`` (``N Sigma_W``), same dtype.
      num_samples: ``N``, the number of samples summed in ``S``: an int or a scalar array
        (traced values allowed).
      variant: ``"pinv"`` for eq. (6); ``"trace"`` for ``tr(Sigma_W) / tr(Sigma_B)``.

    Returns:
      Scalar in the class means' dtype; NaN when all class means coincide.
    """
    class_means = _check_features(class_means, name="class_means", layout="(d, K)")
    d, K = class_means.shape
    if K < 2:
        raise ValueError(f"class_means must have K >= 2 columns; got shape {class_means.shape}.")
    within_scatter = jnp.asarray(within_scatter)
    if within_scatter.shape != (d, d):
        raise ValueError(
            f"within_scatter must have shape (d, d) = ({d}, {d}) to match class_means; "
            f"got {within_scatter.shape}."
        )
    if within_scatter.dtype != class_means.dtype:
        raise ValueError(
            f"within_scatter and class_means must share one dtype; got "
            f"{within_scatter.dtype} and {class_means.dtype}."
        )
    if variant not in ("pinv", "trace"):
        raise ValueError(f"variant must be 'pinv' or 'trace'; got {variant!r}.")
    concrete = _concrete(num_samples)
    if concrete is not None and (concrete.ndim != 0 or not concrete > 0):
        raise ValueError(f"num_samples must be a positive scalar; got {num_samples!r}.")
    n = jnp.asarray(num_samples).astype(class_means.dtype)
    if variant == "trace":
        hbar = class_means - jnp.mean(class_means, axis=1, keepdims=True)
        return _trace_ratio(jnp.trace(within_scatter) / n, hbar)

    def within_quadratic(U):  # diag(U^T S U), clamped: a summed S may round below 0
        SU = jnp.matmul(within_scatter, U, precision=_EXACT)
        return jnp.maximum(jnp.sum(U * SU, axis=0), 0.0)

    return _nc1_pinv(class_means, within_quadratic, n)


def nc2(W, *, center: bool = False, rank: int | None = None) -> jax.Array:
    """Convergence of the classifier to a simplex ETF (eq. 7).

    ``NC2 = || W W^T / ||W W^T||_F - (I - 11^T/K) / sqrt(K-1) ||_F``.

    For ``rank < K - 1`` (by default ``rank = min(d, K-1)``, so automatic when
    ``d < K - 1``) the target is the nearest normalized best rank-``rank`` approximation
    of ``I - 11^T/K`` (Theorem 3.1, case d < K-1); see the module docstring. Exactly
    collapsed optimal solutions give 0 in every case.

    Args:
      W: ``(K, d)`` classifier, rows ``w^k``.
      center: subtract the row mean ``w_G`` first (as the official code does).
      rank: static target rank in ``[1, K-1]``; ``None`` means ``min(d, K-1)``.

    Returns:
      Scalar in ``W``'s dtype; NaN for ``W = 0``.
    """
    W = _check_features(W, name="W", layout="(K, d)")
    K, d = W.shape
    if K < 2:
        raise ValueError(f"W must have K >= 2 rows; got shape {W.shape}.")
    rank = _check_rank(rank, d, K)
    if center:
        W = W - jnp.mean(W, axis=0, keepdims=True)
    return _distance_to_etf_gram(W @ W.T, rank)


def nc2_means(features, labels, *, num_classes: int | None = None,
              rank: int | None = None) -> jax.Array:
    """Eq. (7) applied to the centered class means: ``Hbar^T Hbar`` against the ETF Gram.

    Theorem 3.1 (NC2) states the collapse for ``Hbar^T Hbar``; this is that statement as
    a metric, with the same rank-d analogue as :func:`nc2` when ``d < K - 1``.

    Args:
      features: ``(d, N)`` float array.
      labels: ``(N,)`` integer labels.
      num_classes: static ``K >= 2`` (required under ``jax.jit``).
      rank: static target rank in ``[1, K-1]``; ``None`` means ``min(d, K-1)``.

    Returns:
      Scalar in the features' dtype.
    """
    features = _check_features(features)
    labels, K = _check_labels(labels, features.shape[1], num_classes)
    rank = _check_rank(rank, features.shape[0], K)
    hbar = _centered_means(features, labels, K)
    return _distance_to_etf_gram(hbar.T @ hbar, rank)


def nc3(W, features, labels, *, num_classes: int | None = None,
        rank: int | None = None) -> jax.Array:
    """Self-duality ``NC3 = || W Hbar / ||W Hbar||_F - (I - 11^T/K)/sqrt(K-1) ||_F`` (eq. 8).

    ``Hbar`` are the centered class means. For ``d < K - 1`` (or an explicit
    ``rank < K - 1``) the target is the nearest normalized rank-``rank`` projector inside
    ``1^perp``, as in :func:`nc2`: at the optimum of Theorem 3.1 ``W`` is proportional to
    ``Hbar^T`` so ``W Hbar`` is proportional to ``C_1 P_d(I - 11^T/K)``.

    Args:
      W: ``(K, d)`` classifier.
      features: ``(d, N)`` float array.
      labels: ``(N,)`` integer labels.
      num_classes: static ``K`` (``None``: inferred from concrete labels or ``W``).
      rank: static target rank in ``[1, K-1]``; ``None`` means ``min(d, K-1)``.

    Returns:
      Scalar in the features' dtype.
    """
    features = _check_features(features)
    if num_classes is None and jnp.ndim(W) == 2:
        num_classes = int(jnp.shape(W)[0])
    labels, K = _check_labels(labels, features.shape[1], num_classes)
    W = _check_classifier(W, features, K)
    rank = _check_rank(rank, features.shape[0], K)
    hbar = _centered_means(features, labels, K)
    return _distance_to_etf_gram(W @ hbar, rank)


def nc4(W, b, features, labels, *, num_classes: int | None = None) -> jax.Array:
    """Fraction of samples where the classifier disagrees with the nearest class center.

    ``NC4 = mean_i [ argmax_k (W h_i + b)_k != argmin_k ||h_i - hbar_k|| ]`` (Papyan et
    al.'s NC4); 0 at collapse. ``labels`` are only used to form the class means.

    Args:
      W: ``(K, d)`` classifier.
      b: ``(K,)`` bias or ``None`` (zero).
      features: ``(d, N)`` float array.
      labels: ``(N,)`` integer labels.
      num_classes: static ``K`` (``None``: taken from ``W``).

    Returns:
      Scalar in ``[0, 1]`` in the features' dtype.
    """
    features = _check_features(features)
    if num_classes is None and jnp.ndim(W) == 2:
        num_classes = int(jnp.shape(W)[0])
    labels, K = _check_labels(labels, features.shape[1], num_classes)
    W = _check_classifier(W, features, K)
    b = _check_bias(b, W)
    means, _ = _means(features, labels, K)
    pred = jnp.argmax(W @ features + b[:, None], axis=0)
    # ||h - m_k||^2 = ||h||^2 - 2 m_k^T h + ||m_k||^2; the ||h||^2 term is common.
    dist = jnp.sum(means * means, axis=0)[:, None] - 2.0 * (means.T @ features)
    ncc = jnp.argmin(dist, axis=0)
    return jnp.mean((pred != ncc).astype(features.dtype))


def _class_singular_values(features: jax.Array, labels: jax.Array, K: int,
                           max_class_size: int) -> jax.Array:
    """Singular values of each class block ``H_k``: ``(K, min(d, m))`` array.

    Zero columns do not change singular values, so each class is zero-padded to
    ``m = max_class_size`` columns (batched SVD); when ``m >= N`` the classes are masked
    in place one at a time with ``lax.map`` instead (memory ``d x N`` per class).
    """
    d, N = features.shape
    if max_class_size >= N:
        def one(k):
            mask = (labels == k).astype(features.dtype)
            return jnp.linalg.svd(features * mask[None, :], compute_uv=False)

        ks = jnp.arange(K, dtype=labels.dtype)
        return jax.lax.map(one, ks)
    onehot = jax.nn.one_hot(labels, K, dtype=labels.dtype)
    pos = jnp.take_along_axis(jnp.cumsum(onehot, axis=0) - 1, labels[:, None], axis=1)[:, 0]
    buf = jnp.zeros((K, max_class_size, d), dtype=features.dtype)
    buf = buf.at[labels, pos].set(features.T, mode="drop")
    return jnp.linalg.svd(buf, compute_uv=False)


def numerical_rank(features, labels, *, num_classes: int | None = None,
                   max_class_size: int | None = None) -> jax.Array:
    """Numerical rank ``(1/K) sum_k ||H_k||_*^2 / ||H_k||_F^2`` (Section 4).

    ``H_k`` is the ``d x n_k`` block of class-``k`` features (uncentered, as in the
    paper). Equals 1 when each class lies on a line through the origin. Singular values
    come from an SVD of each block (not from the Gram matrix, whose square-root noise
    would add about ``d * sqrt(eps)`` in float32).

    Args:
      features: ``(d, N)`` float array.
      labels: ``(N,)`` integer labels.
      num_classes: static ``K >= 2`` (required under ``jax.jit``).
      max_class_size: static upper bound on the class sizes; ``None`` means the true
        maximum when labels are concrete, ``N`` under tracing (exact but ``K`` times the
        work: pass it under ``jax.jit`` for large ``N``). Samples beyond it are dropped.

    Returns:
      Scalar in ``[1, min(d, max n_k)]`` in the features' dtype; NaN if a class is all
      zero.
    """
    features = _check_features(features)
    labels, K = _check_labels(labels, features.shape[1], num_classes)
    N = features.shape[1]
    if max_class_size is None:
        concrete = _concrete(labels)
        max_class_size = N if concrete is None else int(np.bincount(concrete, minlength=K).max())
    elif isinstance(max_class_size, bool) or not isinstance(max_class_size, (int, np.integer)) \
            or max_class_size < 1:
        raise ValueError(f"max_class_size must be None or an int >= 1; got {max_class_size!r}.")
    else:
        concrete = _concrete(labels)
        if concrete is not None:
            largest = int(np.bincount(concrete, minlength=K).max())
            if largest > max_class_size:
                raise ValueError(
                    f"max_class_size={max_class_size} is smaller than the largest class "
                    f"({largest} samples)."
                )
    sv = _class_singular_values(features, labels, K, int(max_class_size))
    onehot = _one_hot(labels, K, features.dtype)
    fro2 = jnp.sum(features * features, axis=0) @ onehot  # (K,), exact sum of squares
    nuc = jnp.sum(sv, axis=1)
    nan = jnp.array(jnp.nan, dtype=features.dtype)
    ratio = jnp.where(fro2 > 0, nuc * nuc / jnp.where(fro2 > 0, fro2, jnp.ones_like(fro2)), nan)
    return jnp.mean(ratio)


def cosine_margin(W, b, features, labels, *, num_classes: int | None = None) -> jax.Array:
    """Per-sample cosine margin ``CM_i = cos(theta_{i;y_i}) - max_{j != y_i} cos(theta_{i;j})``.

    Section 4: ``cos(theta_{i;j}) = <w^j - w_G, h_i - h_G> / (||w^j - w_G|| ||h_i - h_G||)``
    with ``h_G`` the global mean of all features and ``w_G`` the mean of the rows of
    ``W``. A sample with ``h_i = h_G`` (or a class with ``w^j = w_G``) gets cosine 0.

    Args:
      W: ``(K, d)`` classifier.
      b: bias, accepted for a uniform signature; the definition does not use it.
      features: ``(d, N)`` float array.
      labels: ``(N,)`` integer labels.
      num_classes: static ``K`` (``None``: taken from ``W``).

    Returns:
      ``(N,)`` array of margins in ``[-2, 2]`` (positive: correctly classified by angle).
    """
    features = _check_features(features)
    if num_classes is None and jnp.ndim(W) == 2:
        num_classes = int(jnp.shape(W)[0])
    labels, K = _check_labels(labels, features.shape[1], num_classes)
    W = _check_classifier(W, features, K)
    _check_bias(b, W)
    Wc = W - jnp.mean(W, axis=0, keepdims=True)
    Hc = features - jnp.mean(features, axis=1, keepdims=True)
    wn = jnp.linalg.norm(Wc, axis=1)
    hn = jnp.linalg.norm(Hc, axis=0)
    Wu = Wc / jnp.where(wn > 0, wn, jnp.ones_like(wn))[:, None]
    Hu = Hc / jnp.where(hn > 0, hn, jnp.ones_like(hn))[None, :]
    cos = Wu @ Hu  # (K, N)
    onehot = _one_hot(labels, K, features.dtype).T  # (K, N)
    own = jnp.sum(cos * onehot, axis=0)
    others = jnp.where(onehot > 0, jnp.array(-jnp.inf, dtype=features.dtype), cos)
    return own - jnp.max(others, axis=0)


def pcm(W, b, features, labels, *, num_classes: int | None = None) -> jax.Array:
    """The cosine-margin distribution ``PC_M``: margins sorted ascending (Section 4).

    Args:
      W, b, features, labels, num_classes: as in :func:`cosine_margin`.

    Returns:
      ``(N,)`` sorted array.
    """
    return jnp.sort(cosine_margin(W, b, features, labels, num_classes=num_classes))


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
    """Computes every metric of this module at once.

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
    features = _check_features(features)
    if num_classes is None and jnp.ndim(W) == 2:
        num_classes = int(jnp.shape(W)[0])
    labels, K = _check_labels(labels, features.shape[1], num_classes)
    W = _check_classifier(W, features, K)
    b = _check_bias(b, W)
    cm = cosine_margin(W, b, features, labels, num_classes=K)
    logits = W @ features + b[:, None]
    correct = jnp.argmax(logits, axis=0) == labels.astype(jnp.argmax(logits, axis=0).dtype)
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


# ----------------------------------------------------------------------------- streaming


class CollapseStats(NamedTuple):
    """Streaming sufficient statistics of ``(features, labels)`` (an optax-style state).

    Built by :func:`collapse_stats_init`, advanced by :func:`collapse_stats_update`, read
    by :func:`collapse_report_from_stats`. A pytree of arrays: carry it through
    ``lax.scan`` or a jitted step like any optimizer state.

    Attributes:
      counts: ``(K,)`` integer number of samples seen per class.
      means: ``(d, K)`` running class means ``hbar_k`` (zero while a class is unseen), in
        the accumulation dtype.
      within_scatter: ``(d, d)`` pooled within-class scatter about the running means,
        ``S = sum_i (h_i - hbar_{y_i})(h_i - hbar_{y_i})^T`` (``N Sigma_W``).
    """

    counts: jax.Array
    means: jax.Array
    within_scatter: jax.Array


class SampleStats(NamedTuple):
    """Per-sample statistics of a second streaming pass (:func:`sample_stats_update`).

    Attributes:
      num_samples: integer number of samples seen.
      num_correct: integer count of samples with ``argmax_k (W h + b)_k == label``.
      num_ncc_mismatch: integer count of samples where the classifier and the
        nearest-class-center rule disagree (the numerator of NC4).
      margin_sum: sum of the cosine margins (Section 4).
      margin_min: smallest cosine margin (``+inf`` before any sample).
    """

    num_samples: jax.Array
    num_correct: jax.Array
    num_ncc_mismatch: jax.Array
    margin_sum: jax.Array
    margin_min: jax.Array


def _float_dtype(dtype):
    dtype = jnp.result_type(float) if dtype is None else jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"dtype must be a floating dtype; got {dtype}.")
    return dtype


def _batch(features, labels, mask, feature_axis: int, d: int, num_classes: int, dtype):
    """Validates one batch. Returns ``(x, labels, valid)``.

    ``x`` is ``(B, d)`` in ``dtype`` with invalid rows zeroed, ``labels`` are clipped into
    ``[0, K)`` and ``valid`` (B,) is ``mask`` and-ed with the label range.
    """
    features = _check_features(
        features, layout="(N_batch, d) with feature_axis=-1, or (d, N_batch) with feature_axis=0")
    if isinstance(feature_axis, bool) or feature_axis not in (0, 1, -1, -2):
        raise ValueError(f"feature_axis must be -1 (rows are samples) or 0 (columns are "
                         f"samples); got {feature_axis!r}.")
    if feature_axis in (0, -2):
        features = features.T
    B = features.shape[0]
    if features.shape[1] != d:
        raise ValueError(
            f"features have {features.shape[1]} coordinates along feature_axis={feature_axis}; "
            f"the statistics hold d = {d} (features shape after layout: {features.shape})."
        )
    labels = jnp.asarray(labels)
    if labels.shape != (B,):
        raise ValueError(f"labels must have shape (N_batch,) = ({B},); got {labels.shape}.")
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(f"labels must be integers; got dtype {labels.dtype}.")
    if mask is None:
        valid = jnp.ones((B,), dtype=bool)
    else:
        mask = jnp.asarray(mask)
        if mask.shape != (B,):
            raise ValueError(f"mask must have shape (N_batch,) = ({B},); got {mask.shape}.")
        valid = mask.astype(bool)
    in_range = (labels >= 0) & (labels < num_classes)
    concrete_labels, concrete_valid = _concrete(labels), _concrete(valid)
    if concrete_labels is not None and concrete_valid is not None:
        bad = concrete_valid & ~((concrete_labels >= 0) & (concrete_labels < num_classes))
        if np.any(bad):
            raise ValueError(
                f"labels of unmasked samples must lie in [0, num_classes) = [0, {num_classes}); "
                f"got {sorted(set(concrete_labels[bad].tolist()))}."
            )
    valid = valid & in_range
    x = jnp.where(valid[:, None], features.astype(dtype), jnp.zeros((), dtype=dtype))
    return x, jnp.clip(labels, 0, num_classes - 1), valid


def collapse_stats_init(num_classes: int, feature_dim: int, dtype=None) -> CollapseStats:
    """Empty streaming statistics for ``num_classes`` classes of ``feature_dim`` features.

    Args:
      num_classes: ``K >= 2``.
      feature_dim: ``d >= 1``.
      dtype: accumulation dtype; ``None`` is JAX's default float (float64 when
        ``jax_enable_x64`` is on, float32 otherwise). Batches are cast to it, so float32
        (or bfloat16) model outputs can be accumulated in float64.

    Returns:
      A :class:`CollapseStats` of zeros (``memory: d^2 + d K`` floats).
    """
    for name, value, low in (("num_classes", num_classes, 2), ("feature_dim", feature_dim, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an int >= {low}; got {value!r}.")
    dtype = _float_dtype(dtype)
    K, d = int(num_classes), int(feature_dim)
    return CollapseStats(
        counts=jnp.zeros((K,), dtype=jnp.result_type(int)),
        means=jnp.zeros((d, K), dtype=dtype),
        within_scatter=jnp.zeros((d, d), dtype=dtype),
    )


def collapse_stats_update(state: CollapseStats, features, labels, mask=None, *,
                          feature_axis: int = -1) -> CollapseStats:
    """Adds one batch to the streaming statistics (pure; jit it at the call site).

    **Layout.** By default ``features`` is ``(N_batch, d)``: one *row* per sample, as a
    Flax model returns it. Pass ``feature_axis=0`` for nc_jax's ``(d, N_batch)`` columns.

    **Update** (Chan et al.'s pairwise rule, per class, pooled over classes). For class
    ``k`` with ``n_a`` samples seen (mean ``m_a``) and ``n_b`` in this batch (batch mean
    ``m_b``, batch scatter ``M_b = sum_{i in batch, y_i = k} (h_i - m_b)(h_i - m_b)^T``),
    with ``n = n_a + n_b`` and ``delta = m_b - m_a``::

        m   = m_a + (n_b / n) delta
        S_k = S_k + M_b + (n_a n_b / n) delta delta^T

    Since the batch residuals ``r_i = h_i - m_b`` sum to zero over the class,
    ``M_b + (n_a n_b / n) delta delta^T = sum_i y_i y_i^T`` with
    ``y_i = r_i + sqrt(n_a / n) delta``: the pooled ``S = sum_k S_k`` gets one
    ``(B, d)^T (B, d)`` product per batch (no ``d^2 K`` term). Every term added is
    positive semi-definite and built from differences to *means*, never
    ``sum h h^T - n m m^T``: that form loses about ``eps * (||h|| / spread)^2``
    relative accuracy, all of it at collapse (float32, NC1 ~ 1e-6: no digits left);
    this one loses about ``eps * ||h|| / spread``, the same as rounding the features.

    **Masking.** Samples with ``mask`` False (or 0) are ignored, so a padded last batch
    has the same shape and reuses the compiled update. Under ``jax.jit``, samples whose
    label lies outside ``[0, K)`` are ignored too; with concrete inputs they raise.

    Args:
      state: :class:`CollapseStats` from :func:`collapse_stats_init` or this function.
      features: ``(N_batch, d)`` float array (``(d, N_batch)`` with ``feature_axis=0``);
        cast to the state's dtype.
      labels: ``(N_batch,)`` integer labels in ``[0, K)``.
      mask: optional ``(N_batch,)`` bool (or 0/1) array; ``None`` keeps every sample.
      feature_axis: axis of ``features`` that holds the ``d`` coordinates: ``-1``/``1``
        (rows are samples, the default) or ``0``/``-2`` (columns are samples).

    Returns:
      The updated :class:`CollapseStats`.
    """
    d, K = state.means.shape
    dtype = state.means.dtype
    x, labels, valid = _batch(features, labels, mask, feature_axis, d, K, dtype)
    onehot = jax.nn.one_hot(labels, K, dtype=dtype) * valid[:, None].astype(dtype)  # (B, K)
    n_b = jnp.sum(onehot, axis=0)  # (K,) exact small integers
    one = jnp.ones_like(n_b)
    mean_b = jnp.matmul(x.T, onehot, precision=_EXACT) / jnp.where(n_b > 0, n_b, one)  # (d, K)
    n_a = state.counts.astype(dtype)
    n = n_a + n_b
    safe_n = jnp.where(n > 0, n, one)
    delta = jnp.where(n_b[None, :] > 0, mean_b - state.means, jnp.zeros_like(mean_b))
    means = state.means + delta * (n_b / safe_n)[None, :]
    shift = jnp.sqrt(n_a / safe_n)  # (K,): 0 for a class first seen in this batch
    rows = (x - mean_b.T[labels]) + shift[labels][:, None] * delta.T[labels]  # (B, d)
    rows = jnp.where(valid[:, None], rows, jnp.zeros_like(rows))
    return CollapseStats(
        counts=state.counts + n_b.astype(state.counts.dtype),
        means=means,
        within_scatter=state.within_scatter + jnp.matmul(rows.T, rows, precision=_EXACT),
    )


def sample_stats_init(dtype=None) -> SampleStats:
    """Empty per-sample statistics for the second pass (:func:`sample_stats_update`).

    Args:
      dtype: dtype of the margin sums; ``None`` is JAX's default float. Use the dtype of
        the :class:`CollapseStats` the pass reads.

    Returns:
      A :class:`SampleStats` of zeros (``margin_min = +inf``).
    """
    dtype = _float_dtype(dtype)
    zero = jnp.zeros((), dtype=jnp.result_type(int))
    return SampleStats(
        num_samples=zero, num_correct=zero, num_ncc_mismatch=zero,
        margin_sum=jnp.zeros((), dtype=dtype),
        margin_min=jnp.full((), jnp.inf, dtype=dtype),
    )


def sample_stats_update(state: SampleStats, stats: CollapseStats, W, b, features, labels,
                        mask=None, *, feature_axis: int = -1) -> SampleStats:
    """Adds one batch to the per-sample statistics: accuracy, NC4 and the cosine margin.

    These need every sample *and* the final class means (NC4's nearest class center, the
    cosine margin's global mean ``h_G = sum_k n_k hbar_k / N``), so they take a second
    pass over the data after the :class:`CollapseStats` pass is complete. Definitions as
    in :func:`nc4`, :func:`cosine_margin` and :class:`CollapseReport` ``.accuracy``.

    Args:
      state: :class:`SampleStats` from :func:`sample_stats_init` or this function.
      stats: the complete :class:`CollapseStats` of the same data.
      W: ``(K, d)`` classifier (rows ``w^k``; a Flax ``Dense`` kernel is ``W.T``).
      b: ``(K,)`` bias or ``None``.
      features, labels, mask, feature_axis: as in :func:`collapse_stats_update`.
        ``features``, ``W`` and ``b`` are cast to the dtype of ``stats``.

    Returns:
      The updated :class:`SampleStats`.
    """
    d, K = stats.means.shape
    dtype = stats.means.dtype
    x, labels, valid = _batch(features, labels, mask, feature_axis, d, K, dtype)
    W = jnp.asarray(W)
    if W.shape != (K, d):
        raise ValueError(f"W must have shape (num_classes, d) = ({K}, {d}); got {W.shape}.")
    W = W.astype(dtype)
    b = _check_bias(None if b is None else jnp.asarray(b).astype(dtype), W)
    means = stats.means
    pred = jnp.argmax(jnp.matmul(x, W.T, precision=_EXACT) + b[None, :], axis=1)
    # ||h - m_k||^2 = ||h||^2 - 2 m_k^T h + ||m_k||^2 (as in nc4); ||h||^2 is common.
    dist = jnp.sum(means * means, axis=0)[None, :] - 2.0 * jnp.matmul(x, means, precision=_EXACT)
    ncc = jnp.argmin(dist, axis=1)
    counts = stats.counts.astype(dtype)
    total = jnp.sum(counts)
    safe_total = jnp.where(total > 0, total, jnp.ones_like(total))
    h_g = jnp.matmul(means, counts, precision=_EXACT) / safe_total  # global mean h_G
    Wc = W - jnp.mean(W, axis=0, keepdims=True)
    Hc = x - h_g[None, :]
    wn = jnp.linalg.norm(Wc, axis=1)
    hn = jnp.linalg.norm(Hc, axis=1)
    Wu = Wc / jnp.where(wn > 0, wn, jnp.ones_like(wn))[:, None]
    Hu = Hc / jnp.where(hn > 0, hn, jnp.ones_like(hn))[:, None]
    cos = jnp.matmul(Hu, Wu.T, precision=_EXACT)  # (B, K)
    onehot = _one_hot(labels, K, dtype)
    own = jnp.sum(cos * onehot, axis=1)
    others = jnp.where(onehot > 0, jnp.array(-jnp.inf, dtype=dtype), cos)
    margin = own - jnp.max(others, axis=1)
    int_dtype = state.num_samples.dtype
    return SampleStats(
        num_samples=state.num_samples + jnp.sum(valid).astype(int_dtype),
        num_correct=state.num_correct + jnp.sum(valid & (pred == labels)).astype(int_dtype),
        num_ncc_mismatch=state.num_ncc_mismatch + jnp.sum(valid & (pred != ncc)).astype(int_dtype),
        margin_sum=state.margin_sum + jnp.sum(jnp.where(valid, margin, jnp.zeros_like(margin))),
        margin_min=jnp.minimum(state.margin_min, jnp.min(
            jnp.where(valid, margin, jnp.array(jnp.inf, dtype=dtype)), initial=jnp.inf)),
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
    nan = jnp.array(jnp.nan, dtype=dtype)
    concrete = _concrete(stats.counts)
    if concrete is not None and np.any(concrete == 0):
        raise ValueError(
            f"every class in [0, {K}) needs at least one sample; classes "
            f"{np.flatnonzero(concrete == 0).tolist()} are empty."
        )
    n = jnp.sum(stats.counts)
    hbar = stats.means - jnp.mean(stats.means, axis=1, keepdims=True)
    rank = min(d, K - 1)
    nc2_value = nc3_value = nan
    if W is not None:
        W = jnp.asarray(W)
        if W.shape != (K, d):
            raise ValueError(f"W must have shape (num_classes, d) = ({K}, {d}); got {W.shape}.")
        W = W.astype(dtype)
        if b is not None:
            _check_bias(jnp.asarray(b).astype(dtype), W)
        nc2_value = nc2(W)
        nc3_value = _distance_to_etf_gram(W @ hbar, rank)
    nc4_value = cm_mean = cm_min = accuracy = nan
    if sample_stats is not None:
        m = sample_stats.num_samples.astype(dtype)
        safe_m = jnp.where(m > 0, m, jnp.ones_like(m))

        def ratio(x):
            return jnp.where(m > 0, x.astype(dtype) / safe_m, nan)

        nc4_value = ratio(sample_stats.num_ncc_mismatch)
        accuracy = ratio(sample_stats.num_correct)
        cm_mean = ratio(sample_stats.margin_sum)
        cm_min = jnp.where(m > 0, sample_stats.margin_min.astype(dtype), nan)
    return CollapseReport(
        nc1=nc1_from_scatter(stats.means, stats.within_scatter, n),
        nc1_trace=nc1_from_scatter(stats.means, stats.within_scatter, n, variant="trace"),
        nc2=nc2_value,
        nc2_means=_distance_to_etf_gram(hbar.T @ hbar, rank),
        nc3=nc3_value,
        nc4=nc4_value,
        numerical_rank=nan,
        cosine_margin_mean=cm_mean,
        cosine_margin_min=cm_min,
        accuracy=accuracy,
    )
