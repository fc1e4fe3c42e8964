"""Appendix C's polar (s, theta) model: outputs, losses and exact gradients of one feature
in the plane of two simplex-ETF classifier rows, their K -> infinity limits, and checks.

The classifier ``W`` is a unit-row simplex ETF, ``b = 0``, and a class-``k`` feature ``h``
lies in ``span{w^k, w^k'}`` with norm ``s`` and angle ``theta`` to ``w^k`` (Proposition
C.1). :func:`polar_feature` (eq. 28), :func:`polar_outputs` (eq. 29), :func:`polar_mse_loss`
(eq. 31, which is eq. 30 with the one-hot target 0 off-class), :func:`polar_ce_loss` (eq. 32),
their exact finite-K gradients, the K -> infinity MSE gradient (eq. 34) and the correct
K -> infinity CE gradient. :func:`polar_ce_grad_paper_eq35` reproduces eq. (35) as printed,
which is not that limit (see ``docs/errata_appendix_c.md``).

All arrays are float64 numpy; ``s`` and ``theta`` broadcast against each other. The closed
forms stay in numpy (they hold for K = 10^6 without forming K logits); the direct references
of :func:`proposition_c1_check` go through :mod:`nc_jax.losses`, the one home of the losses.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from nc_jax import losses, ufm


def _check_K(K) -> int:
    if isinstance(K, bool) or not isinstance(K, (int, np.integer)) or K < 3:
        raise ValueError(
            f"K must be an int >= 3 (Proposition C.1 needs K - 1 > 1); got {K!r}."
        )
    return int(K)


def _coefficients(theta, K: int):
    """Outputs per unit s (eq. 29) and their theta-derivatives: c_k, c_k', c_other."""
    theta = np.asarray(theta, dtype=np.float64)
    a = np.sqrt(K * K - 2.0 * K)
    beta = np.sqrt(K / (K - 2.0))
    sin, cos = np.sin(theta), np.cos(theta)
    c = (cos, (a * sin - cos) / (K - 1), -(beta * sin + cos) / (K - 1))
    dc = (-sin, (a * cos + sin) / (K - 1), -(beta * cos - sin) / (K - 1))
    return c, dc


def polar_outputs(s, theta, K):
    """Classifier outputs ``<w^k'', h>`` of Proposition C.1 (eq. 29), ``b = 0``.

    Args:
      s: feature norm(s), ``>= 0``.
      theta: angle(s) to ``w^k`` in radians, ``[0, pi]``.
      K: number of classes, ``>= 3``.

    Returns:
      Tuple ``(z_k, z_k', z_other)`` broadcast over ``s, theta``; ``z_other`` is shared
      by the ``K - 2`` remaining classes.
    """
    K = _check_K(K)
    s = np.asarray(s, dtype=np.float64)
    c, _ = _coefficients(theta, K)
    return tuple(s * ci for ci in c)


def polar_feature(s, theta, W, k=0, kp=1):
    """The feature ``h`` of eq. (28) built from rows ``w^k, w^k'`` of ``W``.

    ``h = s (sin(theta)/sqrt(K^2-2K) + cos(theta)) w^k + s (K-1) sin(theta)/sqrt(K^2-2K) w^k'``.
    It has norm ``s`` and angle ``theta`` to ``w^k`` exactly when the rows of ``W`` have
    unit norm (``W = sqrt(K/(K-1)) (I - 11^T/K) P^T``, Definition .1).

    Args:
      s, theta: 1-D arrays (or scalars) of equal broadcast shape.
      W: ``(K, d)`` simplex ETF.
      k, kp: the class and the second in-plane class, ``k != kp``.

    Returns:
      ``(d, n)`` array, one column per ``(s, theta)`` pair.
    """
    W = np.asarray(W, dtype=np.float64)
    K = _check_K(W.shape[0])
    if k == kp or not (0 <= k < K and 0 <= kp < K):
        raise ValueError(f"k, kp must be distinct in [0, {K}); got k={k}, kp={kp}.")
    s, theta = np.broadcast_arrays(np.atleast_1d(np.asarray(s, np.float64)),
                                   np.atleast_1d(np.asarray(theta, np.float64)))
    r = np.sqrt(K * K - 2.0 * K)
    coef_k = s * (np.sin(theta) / r + np.cos(theta))
    coef_kp = s * (K - 1) * np.sin(theta) / r
    return np.outer(W[k], coef_k.ravel()) + np.outer(W[kp], coef_kp.ravel())


def polar_mse_loss(s, theta, K, alpha=1.0, M=1.0):
    """Rescaled MSE loss of one class-``k`` feature in polar coordinates (eq. 31).

    ``alpha/2 (z_k - M)^2 + 1/2 z_k'^2 + (K-2)/2 z_other^2``: eq. (30) with the one-hot
    target 0 on the off-class entries, as in eq. (4) (eq. 30 prints ``- 1`` there).
    ``alpha = M = 1`` is the vanilla MSE (3).

    Args:
      s, theta: broadcastable arrays.
      K: number of classes ``>= 3``.
      alpha, M: rescaling parameters of eq. (4).

    Returns:
      Loss array.
    """
    zk, zkp, zo = polar_outputs(s, theta, K)
    return 0.5 * alpha * (zk - M) ** 2 + 0.5 * zkp**2 + 0.5 * (K - 2) * zo**2


def polar_ce_loss(s, theta, K):
    """Cross-entropy loss of one class-``k`` feature in polar coordinates (eq. 32).

    Computed stably as ``logsumexp(z_k, z_k', z_other + log(K-2)) - z_k``.

    Args:
      s, theta: broadcastable arrays.
      K: number of classes ``>= 3``.

    Returns:
      Loss array.
    """
    zk, zkp, zo = polar_outputs(s, theta, K)
    stack = np.stack(np.broadcast_arrays(zk, zkp, zo + np.log(K - 2.0)))
    top = stack.max(axis=0)
    return top + np.log(np.exp(stack - top).sum(axis=0)) - zk


def polar_mse_grad(s, theta, K, alpha=1.0, M=1.0):
    """Exact ``(dL/ds, dL/dtheta)`` of the finite-K loss (31).

    Returns:
      Tuple of arrays ``(g_s, g_theta)``.
    """
    K = _check_K(K)
    s = np.asarray(s, dtype=np.float64)
    c, dc = _coefficients(theta, K)
    zk, zkp, zo = (s * ci for ci in c)
    rk = alpha * (zk - M)
    g_s = rk * c[0] + zkp * c[1] + (K - 2) * zo * c[2]
    g_t = s * (rk * dc[0] + zkp * dc[1] + (K - 2) * zo * dc[2])
    return g_s, g_t


def polar_ce_grad(s, theta, K):
    """Exact ``(dL/ds, dL/dtheta)`` of the finite-K CE loss (32).

    With ``z = s c(theta)`` and softmax weights ``p`` (the ``K - 2`` other classes
    pooled): ``dL/ds = -c_k + sum_j p_j c_j``, ``dL/dtheta = s (-c_k' + sum_j p_j c_j')``.

    Returns:
      Tuple of arrays ``(g_s, g_theta)``.
    """
    K = _check_K(K)
    s = np.asarray(s, dtype=np.float64)
    c, dc = _coefficients(theta, K)
    logits = np.stack(np.broadcast_arrays(s * c[0], s * c[1], s * c[2] + np.log(K - 2.0)))
    p = np.exp(logits - logits.max(axis=0))
    p = p / p.sum(axis=0)
    g_s = -c[0] + p[0] * c[0] + p[1] * c[1] + p[2] * c[2]
    g_t = s * (-dc[0] + p[0] * dc[0] + p[1] * dc[1] + p[2] * dc[2])
    return g_s, g_t


def polar_mse_loss_limit(s, theta, alpha=1.0, M=1.0):
    """``lim_{K->inf}`` of (31): ``alpha/2 (s cos(theta) - M)^2 + s^2 sin^2(theta)/2`` (eq. 33)."""
    s = np.asarray(s, dtype=np.float64)
    theta = np.asarray(theta, dtype=np.float64)
    return 0.5 * alpha * (s * np.cos(theta) - M) ** 2 + 0.5 * s**2 * np.sin(theta) ** 2


def polar_mse_grad_limit(s, theta, alpha=1.0, M=1.0):
    """Gradient of (33), eq. (34) (verified correct).

    ``dL/ds = s + (alpha-1) s cos^2(theta) - alpha M cos(theta)``,
    ``dL/dtheta = alpha M s sin(theta) - (alpha-1) s^2 sin(theta) cos(theta)``.

    Returns:
      Tuple of arrays ``(g_s, g_theta)``.
    """
    s = np.asarray(s, dtype=np.float64)
    theta = np.asarray(theta, dtype=np.float64)
    sin, cos = np.sin(theta), np.cos(theta)
    g_s = s + (alpha - 1.0) * s * cos**2 - alpha * M * cos
    g_t = alpha * M * s * sin - (alpha - 1.0) * s**2 * sin * cos
    return g_s, g_t


def polar_ce_grad_limit(s, theta):
    """The true ``lim_{K->inf}`` of the CE gradient of (32): ``(-cos(theta), s sin(theta))``.

    The ``K - 2`` pooled classes carry logits ``O(s/K)`` and softmax mass ``1 - O(e^s/K)``,
    so (32) grows like ``log(K-2) - s cos(theta)`` and its gradient tends to the gradient
    of ``-s cos(theta)``, at rate ``O(e^s / K)``.

    Returns:
      Tuple of arrays ``(g_s, g_theta)``.
    """
    s = np.asarray(s, dtype=np.float64)
    theta = np.asarray(theta, dtype=np.float64)
    return -np.cos(theta) + 0.0 * s, s * np.sin(theta)


def polar_ce_grad_two_class(s, theta):
    """Gradient of the two-logit CE ``log(1 + exp(s (sin(theta) - cos(theta))))``.

    This is what eq. (35) becomes once ``s`` is restored in its exponentials: the CE of
    the logits ``(s cos(theta), s sin(theta))`` of classes ``k, k'`` only, dropping the
    ``K - 2`` other classes. It is not the ``K -> inf`` limit of (32).

    Returns:
      Tuple of arrays ``(g_s, g_theta)``.
    """
    s = np.asarray(s, dtype=np.float64)
    theta = np.asarray(theta, dtype=np.float64)
    sin, cos = np.sin(theta), np.cos(theta)
    sig = 0.5 * (1.0 + np.tanh(0.5 * s * (sin - cos)))  # e^{s sin}/(e^{s sin}+e^{s cos})
    return (sin - cos) * sig, s * (sin + cos) * sig


def polar_ce_grad_paper_eq35(s, theta):
    """Eq. (35) exactly as printed (kept for comparison; see the errata).

    ``dL/ds = e^{sin}(sin - cos)/(e^{sin} + e^{cos})``,
    ``dL/dtheta = s e^{sin}(sin + cos)/(e^{sin} + e^{cos})`` (no ``s`` in the exponents).

    Returns:
      Tuple of arrays ``(g_s, g_theta)``.
    """
    s = np.asarray(s, dtype=np.float64)
    theta = np.asarray(theta, dtype=np.float64)
    sin, cos = np.sin(theta), np.cos(theta)
    w = np.exp(sin) / (np.exp(sin) + np.exp(cos))
    return w * (sin - cos) + 0.0 * s, s * w * (sin + cos)


def simplex_etf_classifier(K, d=None, *, seed=0):
    """A unit-row simplex ETF ``W = sqrt(K/(K-1)) (I - 11^T/K) P^T`` (Definition .1).

    Args:
      K: classes ``>= 2``.
      d: feature dimension ``>= K - 1`` (default ``K``).
      seed: seed of the random orthonormal frame (``jax.random.key(seed)`` for
        :func:`nc_jax.ufm.simplex_etf`, whose transpose this is).

    Returns:
      ``(K, d)`` float64 array with unit rows and pairwise inner products ``-1/(K-1)``.
    """
    if isinstance(K, bool) or not isinstance(K, (int, np.integer)) or K < 2:
        raise ValueError(f"K must be an int >= 2; got {K!r}.")
    d = K if d is None else int(d)
    if d < K - 1:
        raise ValueError(f"d must be >= K - 1 = {K - 1} for a simplex ETF; got {d}.")
    # the one simplex ETF (d x K, random frame from the key); float64 in a scoped x64
    # context because the polar model is float64 numpy (the context restores the flag)
    with jax.enable_x64(True):
        etf = ufm.simplex_etf(K, d, key=jax.random.key(seed), dtype=np.float64)
        return np.asarray(etf, dtype=np.float64).T


def _direct_losses(z, k, alpha, M):
    """Per-sample (rescaled) MSE (eq. 4) and CE of the outputs ``z`` (K x n) for class ``k``.

    Computed by :func:`nc_jax.losses.mse` and :func:`nc_jax.losses.cross_entropy` on each
    column (a batch of one), in float64 (scoped x64 context).
    """
    with jax.enable_x64(True):
        logits = jnp.asarray(z.T[:, None, :], dtype=np.float64)  # (n, 1, K)
        targets = jnp.broadcast_to(jax.nn.one_hot(k, z.shape[0], dtype=np.float64), logits.shape)
        mse = jax.vmap(lambda x, y: losses.mse(x, y, alpha=alpha, M=M))(logits, targets)
        ce = jax.vmap(losses.cross_entropy)(logits, targets)
        return np.asarray(mse, dtype=np.float64), np.asarray(ce, dtype=np.float64)


def proposition_c1_check(K, s, theta, *, d=None, alpha=2.0, M=3.0, k=0, kp=1, seed=0):
    """Direct check of Proposition C.1 and eqs. (30)-(32) against ``W h`` computed directly.

    Builds a unit-row ETF ``W``, the feature ``h`` of eq. (28) for each ``(s, theta)``,
    and compares: ``||h||`` with ``s``; the angle of ``h`` to ``w^k`` with ``theta``
    (atan2, sign fixed by ``w^k'``); ``W h`` with eq. (29); the direct rescaled-MSE and
    CE losses (by :mod:`nc_jax.losses`) with eqs. (31) and (32). It also measures two
    things the paper gets wrong or leaves implicit: eq. (29) with the unscaled ETF
    ``(I - 11^T/K) P^T`` (rows of norm ``sqrt((K-1)/K)``), and eq. (30) as printed
    (off-class target 1) against eq. (31).

    Args:
      K: classes ``>= 3``; s, theta: 1-D arrays; d: feature dimension ``>= K - 1``.
      alpha, M: rescaling parameters for the MSE check.
      k, kp: the in-plane classes; seed: seed of the ETF.

    Returns:
      Dict of maximum absolute discrepancies (floats).
    """
    K = _check_K(K)
    W = simplex_etf_classifier(K, d, seed=seed)
    s, theta = np.broadcast_arrays(np.atleast_1d(np.asarray(s, np.float64)),
                                   np.atleast_1d(np.asarray(theta, np.float64)))
    s, theta = s.ravel(), theta.ravel()
    h = polar_feature(s, theta, W, k, kp)
    z = W @ h  # (K, n)
    others = np.array([j for j in range(K) if j not in (k, kp)])
    zk, zkp, zo = polar_outputs(s, theta, K)
    wk = W[k] / np.linalg.norm(W[k])
    along = wk @ h
    perp_dir = W[kp] - (W[kp] @ wk) * wk
    perp_dir = perp_dir / np.linalg.norm(perp_dir)
    across = perp_dir @ h
    angle = np.arctan2(across, along)
    # Direct losses from z (no polar formulas): nc_jax.losses, one sample at a time.
    mse_direct, ce_direct = _direct_losses(z, k, alpha, M)
    mask = np.ones(K, bool)
    mask[k] = False
    mse_eq30_printed = 0.5 * alpha * (z[k] - M) ** 2 + 0.5 * np.sum((z[mask] - 1.0) ** 2, axis=0)
    W_unscaled = W * np.sqrt((K - 1.0) / K)
    h_unscaled = polar_feature(s, theta, W_unscaled, k, kp)
    return {
        "norm_h_minus_s": float(np.max(np.abs(np.linalg.norm(h, axis=0) - s))),
        "angle_minus_theta": float(np.max(np.abs(angle - theta))),
        "out_k": float(np.max(np.abs(z[k] - zk))),
        "out_kp": float(np.max(np.abs(z[kp] - zkp))),
        "out_other": float(np.max(np.abs(z[others] - zo))) if others.size else 0.0,
        "mse_eq31_vs_direct": float(np.max(np.abs(polar_mse_loss(s, theta, K, alpha, M)
                                                  - mse_direct))),
        "ce_eq32_vs_direct": float(np.max(np.abs(polar_ce_loss(s, theta, K) - ce_direct))),
        "etf_row_norm_minus_1": float(np.max(np.abs(np.linalg.norm(W, axis=1) - 1.0))),
        "unscaled_etf_out_k_rel_error": float(np.max(np.abs(
            W_unscaled[k] @ h_unscaled - zk)) / max(float(np.max(np.abs(zk))), 1e-300)),
        "eq30_printed_minus_eq31": float(np.max(np.abs(mse_eq30_printed
                                                       - polar_mse_loss(s, theta, K, alpha, M)))),
    }


def figure2_panels(s, theta, K, *, mse_configs=((1.0, 1.0),), include_ce: bool = True) -> dict:
    """Figure 2's panels: title -> loss (31) per ``(alpha, M)`` and (32) on the ``(s, theta)`` grid
    (arrays ``(len(s), len(theta))``, drawn by :func:`nc_jax.plotting.plot_landscapes`)."""
    S, T = np.meshgrid(np.asarray(s, np.float64), np.asarray(theta, np.float64), indexing="ij")
    panels = {}
    for alpha, M in mse_configs:
        name = "vanilla MSE" if (alpha, M) == (1.0, 1.0) else "rescaled MSE"
        panels[f"{name} (31), alpha={alpha:g}, M={M:g}, K={K}"] = polar_mse_loss(S, T, K, alpha, M)
    if include_ce:
        panels[f"CE (32), K={K}"] = polar_ce_loss(S, T, K)
    return panels


def figure8_panels(s, theta, *, K=10, mse_configs=((1.0, 1.0),), include_paper_eq35: bool = True) -> dict:
    """Figure 8's panels: title -> ``(dL/ds, dL/dtheta)``: eq. (34) per ``(alpha, M)``, the exact
    gradient of (32) at ``K``, the true K -> infinity CE field ``(-cos(theta), s sin(theta))``
    and, if requested, eq. (35) as printed (drawn by :func:`nc_jax.plotting.plot_gradient_fields`)."""
    S, T = np.meshgrid(np.asarray(s, np.float64), np.asarray(theta, np.float64), indexing="ij")
    panels = {}
    for alpha, M in mse_configs:
        panels[f"MSE, K->inf (34), alpha={alpha:g}, M={M:g}"] = polar_mse_grad_limit(S, T, alpha, M)
    panels[f"CE exact gradient of (32), K={K}"] = polar_ce_grad(S, T, K)
    panels["CE, true K->inf limit (-cos, s sin)"] = polar_ce_grad_limit(S, T)
    if include_paper_eq35:
        panels["CE eq. (35) as printed (not the limit)"] = polar_ce_grad_paper_eq35(S, T)
    return panels
