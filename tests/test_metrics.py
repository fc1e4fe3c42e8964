"""Tests for nc_jax.metrics: zeros at collapse, hand values, numpy references, float32
stability, invariances, unbalanced labels, jit without recompilation, input errors."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nc_jax import metrics


# One compiled report per shape: eager op-by-op dispatch is far slower on CPU.
jit_report = jax.jit(metrics.collapse_report, static_argnames=("num_classes", "max_class_size"))

# ----------------------------------------------------------------------------- builders


def etf_means(K, d, rng):
    """Simplex ETF class means (d, K): sqrt(K/(K-1)) P (I - 11^T/K) (Definition .1)."""
    M = np.sqrt(K / (K - 1)) * (np.eye(K) - np.ones((K, K)) / K)
    if d >= K:
        P, _ = np.linalg.qr(rng.standard_normal((d, K)))
    else:  # d = K - 1: [P^T, 1/sqrt(K)] orthonormal
        assert d == K - 1
        Q, _ = np.linalg.qr(np.column_stack([np.ones(K) / np.sqrt(K), rng.standard_normal((K, K - 1))]))
        P = Q[:, 1:].T
    return P @ M


def collapsed(K, d, n, rng, scale_h=2.0, scale_w=0.5):
    means = scale_h * etf_means(K, d, rng)
    labels = np.repeat(np.arange(K), n)
    H = means[:, labels]
    W = scale_w * means.T / scale_h
    return W, H, labels


def numpy_reference(W, b, H, labels, K):
    """Plain numpy implementation of every metric, float64, with the module's conventions."""
    H = np.asarray(H, np.float64)
    W = np.asarray(W, np.float64)
    d, N = H.shape
    b = np.zeros(K) if b is None else np.asarray(b, np.float64)
    mu = np.stack([H[:, labels == k].mean(axis=1) for k in range(K)], axis=1)
    cen = mu.mean(axis=1, keepdims=True)
    Hbar = mu - cen
    R = H - mu[:, labels]
    SW = R @ R.T / N
    SB = Hbar @ Hbar.T / K
    w, V = np.linalg.eigh(SB)
    keep = w > 1e-10 * w.max()
    SBp = (V[:, keep] / w[keep]) @ V[:, keep].T
    J = np.eye(K) - np.ones((K, K)) / K

    def etf_dist(A):
        return np.linalg.norm(A / np.linalg.norm(A) - J / np.sqrt(K - 1))

    logits = W @ H + b[:, None]
    ncc = np.argmin(((H[:, None, :] - mu[:, :, None]) ** 2).sum(axis=0), axis=0)
    Wc = W - W.mean(axis=0)
    Hc = H - H.mean(axis=1, keepdims=True)
    cos = (Wc / np.linalg.norm(Wc, axis=1, keepdims=True)) @ (Hc / np.linalg.norm(Hc, axis=0))
    cm = np.empty(N)
    for i in range(N):
        others = np.delete(cos[:, i], labels[i])
        cm[i] = cos[labels[i], i] - others.max()
    ranks = []
    for k in range(K):
        s = np.linalg.svd(H[:, labels == k], compute_uv=False)
        ranks.append(s.sum() ** 2 / (s ** 2).sum())
    return dict(
        nc1=np.trace(SW @ SBp) / K,
        nc1_trace=np.trace(SW) / np.trace(SB),
        nc2=etf_dist(W @ W.T),
        nc2_means=etf_dist(Hbar.T @ Hbar),
        nc3=etf_dist(W @ Hbar),
        nc4=np.mean(np.argmax(logits, axis=0) != ncc),
        numerical_rank=np.mean(ranks),
        cosine_margin_mean=cm.mean(),
        cosine_margin_min=cm.min(),
        accuracy=np.mean(np.argmax(logits, axis=0) == labels),
        cm=cm,
    )


def assert_report_close(report, ref, rtol, atol):
    for name in metrics.CollapseReport._fields:
        np.testing.assert_allclose(
            np.asarray(getattr(report, name)), ref[name], rtol=rtol, atol=atol, err_msg=name
        )


# ----------------------------------------------------------------------------- collapse


@pytest.mark.parametrize("K,d", [(3, 3), (4, 7), (5, 4), (10, 12)])
def test_exact_etf_collapse_gives_zero(K, d, rng):
    W, H, labels = collapsed(K, d, 5, rng)
    rep = jit_report(jnp.asarray(W), None, jnp.asarray(H), labels, num_classes=K)
    for name in ("nc1", "nc1_trace", "nc2", "nc2_means", "nc3", "nc4"):
        np.testing.assert_allclose(getattr(rep, name), 0.0, atol=1e-12, err_msg=name)
    np.testing.assert_allclose(rep.numerical_rank, 1.0, rtol=1e-12)
    # At the ETF cos(own) = 1 and cos(other) = -1/(K-1): margin K/(K-1).
    np.testing.assert_allclose(rep.cosine_margin_min, K / (K - 1), rtol=1e-12)
    np.testing.assert_allclose(rep.cosine_margin_mean, K / (K - 1), rtol=1e-12)
    np.testing.assert_allclose(rep.accuracy, 1.0)
    # The centered-W option also collapses (ETF rows already sum to zero).
    np.testing.assert_allclose(metrics.nc2(jnp.asarray(W), center=True), 0.0, atol=1e-12)


@pytest.mark.parametrize("K,d", [(4, 2), (6, 3), (10, 1)])
def test_rank_d_optimum_gives_zero(K, d, rng):
    """d < K-1 (Theorem 3.1, case 1): Hbar^T Hbar = C P_d(I - 11^T/K), W ~ Hbar^T."""
    J = np.eye(K) - np.ones((K, K)) / K
    # a random d-dimensional subspace of 1-perp
    V = np.linalg.qr(J @ rng.standard_normal((K, d)))[0]
    R = np.linalg.qr(rng.standard_normal((d, d)))[0]
    means = 1.7 * R @ V.T  # (d, K): Hbar^T Hbar = 1.7^2 V V^T, a best rank-d approximation
    np.testing.assert_allclose(means.T @ means / 1.7**2, V @ V.T, atol=1e-12)
    labels = np.repeat(np.arange(K), 3)
    H, W = jnp.asarray(means[:, labels]), jnp.asarray(0.3 * means.T)
    for value in (metrics.nc2(W), metrics.nc2_means(H, labels, num_classes=K),
                  metrics.nc3(W, H, labels, num_classes=K)):
        np.testing.assert_allclose(value, 0.0, atol=1e-12)
    # Eq. (7) as printed (the full ETF target) is far from zero there.
    assert float(metrics.nc2(jnp.asarray(np.pad(0.3 * means.T, ((0, 0), (0, K - 1 - d)))))) > 0.1


def test_rank_d_metric_is_the_nearest_projector_distance(rng):
    """Closed form 2 - (2/sqrt(d)) sum top-d eig(J S J) agrees, and random targets are farther."""
    K, d = 7, 3
    W = rng.standard_normal((K, d))
    value = float(metrics.nc2(jnp.asarray(W)))
    G = W @ W.T
    G = G / np.linalg.norm(G)
    J = np.eye(K) - np.ones((K, K)) / K
    top = np.sort(np.linalg.eigvalsh(J @ G @ J))[-d:]
    np.testing.assert_allclose(value, np.sqrt(2 - 2 * top.sum() / np.sqrt(d)), rtol=1e-10)
    for _ in range(50):
        V = np.linalg.qr(J @ rng.standard_normal((K, d)))[0]
        assert np.linalg.norm(G - V @ V.T / np.sqrt(d)) >= value - 1e-12


# ----------------------------------------------------------------------------- hand values


def test_hand_values():
    # K=2, d=1: means 1 and 11 (mu 6): Sigma_B = 25, Sigma_W = 1 -> NC1 = 1/25/2.
    H = jnp.asarray([[0.0, 2.0, 10.0, 12.0]])
    labels = np.array([0, 0, 1, 1])
    np.testing.assert_allclose(metrics.nc1(H, labels, num_classes=2), 0.02, rtol=1e-14)
    np.testing.assert_allclose(metrics.nc1(H, labels, num_classes=2, variant="trace"), 0.04,
                               rtol=1e-14)
    # W = I_3: ||I/sqrt(3) - J/sqrt(2)||_F = sqrt(2 - 4/sqrt(6)).
    np.testing.assert_allclose(metrics.nc2(jnp.eye(3, dtype=jnp.float64)),
                               np.sqrt(2 - 4 / np.sqrt(6)), rtol=1e-14)
    # Numerical rank: class 0 = diag(3, 4) (nuclear 7, Frobenius^2 25), class 1 rank one.
    H = jnp.asarray([[3.0, 0.0, 1.0, 2.0], [0.0, 4.0, 1.0, 2.0]])
    labels = np.array([0, 0, 1, 1])
    np.testing.assert_allclose(metrics.numerical_rank(H, labels, num_classes=2),
                               (49 / 25 + 1) / 2, rtol=1e-14)
    # NC4 / accuracy: W = I predicts argmax coordinate; sample 1 sits nearer class 0's
    # center but W calls it class 1 -> one disagreement in four.
    H = jnp.asarray([[1.0, 0.45, 0.0, 0.0], [0.0, 0.55, 1.0, 1.0]])
    W = jnp.eye(2, dtype=jnp.float64)
    labels = np.array([0, 0, 1, 1])
    np.testing.assert_allclose(metrics.nc4(W, None, H, labels, num_classes=2), 0.25)
    rep = metrics.collapse_report(W, None, H, labels, num_classes=2)
    np.testing.assert_allclose(rep.accuracy, 0.75)
    # Cosine margin, K=2: w_G = (1/2, 1/2), centered rows +-(1,-1)/2; h_G = (0.3625, 0.6375).
    cm = metrics.cosine_margin(W, None, H, labels, num_classes=2)
    hc = np.asarray(H) - np.asarray(H).mean(axis=1, keepdims=True)
    c0 = (hc[0] - hc[1]) / np.sqrt(2) / np.linalg.norm(hc, axis=0)
    np.testing.assert_allclose(cm, np.where(labels == 0, 2 * c0, -2 * c0), rtol=1e-14)


# ----------------------------------------------------------------------------- references


def random_problem(K, d, counts, rng, noise=0.5, dtype=np.float64):
    labels = np.concatenate([np.full(c, k) for k, c in enumerate(counts)])
    rng.shuffle(labels)
    means = rng.standard_normal((d, K))
    H = (means[:, labels] + noise * rng.standard_normal((d, labels.size))).astype(dtype)
    W = rng.standard_normal((K, d)).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    return W, b, H, labels


@pytest.mark.parametrize("counts", [(6, 6, 6, 6), (3, 7, 12, 5)])
def test_matches_numpy_reference_float64(counts, rng):
    K, d = len(counts), 6
    W, b, H, labels = random_problem(K, d, counts, rng)
    # max_class_size: the padded (batched-SVD) numerical-rank path, unbalanced included.
    rep = jit_report(jnp.asarray(W), jnp.asarray(b), jnp.asarray(H), labels, num_classes=K,
                     max_class_size=max(counts))
    ref = numpy_reference(W, b, H, labels, K)
    assert_report_close(rep, ref, rtol=1e-10, atol=1e-12)
    pcm = jax.jit(metrics.pcm, static_argnames="num_classes")
    np.testing.assert_allclose(
        pcm(jnp.asarray(W), jnp.asarray(b), jnp.asarray(H), labels, num_classes=K),
        np.sort(ref["cm"]), rtol=1e-10, atol=1e-12)


def test_float32_nearly_collapsed_is_stable_where_numpy_pinv_fails(rng):
    K, d, n = 4, 16, 20
    W, H, labels = collapsed(K, d, n, rng, scale_h=1.0, scale_w=1.0)
    H32 = (H + 1e-4 * rng.standard_normal(H.shape)).astype(np.float32)
    W32 = (W + 1e-4 * rng.standard_normal(W.shape)).astype(np.float32)
    b32 = np.zeros(K, np.float32)
    ref = numpy_reference(W32, b32, H32, labels, K)  # float64 on the same float32 data
    rep = jit_report(jnp.asarray(W32), jnp.asarray(b32), jnp.asarray(H32), labels,
                                  num_classes=K)
    assert all(getattr(rep, f).dtype == jnp.float32 for f in rep._fields)
    np.testing.assert_allclose(rep.nc1, ref["nc1"], rtol=1e-2)
    np.testing.assert_allclose(rep.nc1_trace, ref["nc1_trace"], rtol=1e-2)
    for name in ("nc2", "nc2_means", "nc3"):  # ~1e-4 values; float32 Gram noise ~1e-6
        np.testing.assert_allclose(getattr(rep, name), ref[name], rtol=5e-2, atol=1e-5,
                                   err_msg=name)
    np.testing.assert_allclose(rep.numerical_rank, ref["numerical_rank"], rtol=1e-5)
    np.testing.assert_allclose(rep.cosine_margin_min, ref["cosine_margin_min"], rtol=1e-5)
    # numpy's default pinv on the float32 covariances inverts rounding noise.
    mu = np.stack([H32[:, labels == k].mean(axis=1) for k in range(K)], axis=1)
    Hbar = mu - mu.mean(axis=1, keepdims=True)
    R = H32 - mu[:, labels]
    naive = np.trace((R @ R.T / R.shape[1]) @ np.linalg.pinv(Hbar @ Hbar.T / K)) / K
    assert not abs(naive - ref["nc1"]) < 10 * abs(ref["nc1"]), (naive, ref["nc1"])


# ----------------------------------------------------------------------------- invariances


def test_invariances(rng):
    K, d = 5, 8
    W, _, H, labels = random_problem(K, d, (4, 5, 6, 7, 8), rng)
    base = jit_report(jnp.asarray(W), None, jnp.asarray(H), labels, num_classes=K)
    Q = np.linalg.qr(rng.standard_normal((d, d)))[0]
    rotated = jit_report(jnp.asarray(W @ Q.T), None, jnp.asarray(Q @ H), labels,
                                      num_classes=K)
    scaled = jit_report(jnp.asarray(W), None, jnp.asarray(3.7 * H), labels,
                                     num_classes=K)
    for other in (rotated, scaled):
        for name in base._fields:
            np.testing.assert_allclose(getattr(other, name), getattr(base, name),
                                       rtol=1e-10, atol=1e-12, err_msg=name)


# ----------------------------------------------------------------------------- jit


def test_jit_no_recompilation_and_traced_paths(rng):
    K, d = 3, 5
    W1, b1, H1, y1 = random_problem(K, d, (4, 6, 5), rng)
    W2, b2, H2, y2 = random_problem(K, d, (4, 6, 5), rng)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def report(W, b, H, y):
        return metrics.collapse_report(W, b, H, y, num_classes=K)

    chex.clear_trace_counter()
    for W, b, H, y in ((W1, b1, H1, y1), (W2, b2, H2, y2)):
        got = report(jnp.asarray(W), jnp.asarray(b), jnp.asarray(H), jnp.asarray(y))
        # Under jit the numerical rank takes the masked (max_class_size = N) path.
        assert_report_close(got, numpy_reference(W, b, H, y, K), rtol=1e-10, atol=1e-12)
    padded = jax.jit(functools.partial(metrics.numerical_rank, num_classes=K, max_class_size=6))
    np.testing.assert_allclose(padded(jnp.asarray(H2), jnp.asarray(y2)),
                               numpy_reference(W2, b2, H2, y2, K)["numerical_rank"], rtol=1e-12)


# ----------------------------------------------------------------------------- errors


def test_input_errors(rng):
    H = jnp.asarray(rng.standard_normal((3, 6)))
    y = np.array([0, 0, 1, 1, 2, 2])
    W = jnp.asarray(rng.standard_normal((3, 3)))
    with pytest.raises(ValueError, match="num_classes must be >= 2"):
        metrics.nc1(H, np.zeros(6, int), num_classes=1)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, num_classes\)"):
        metrics.nc1(H, np.array([0, 0, 1, 1, 2, 3]), num_classes=3)
    with pytest.raises(ValueError, match="classes \\[3\\] are empty"):
        metrics.nc1(H, y, num_classes=4)
    with pytest.raises(ValueError, match="labels must have shape"):
        metrics.nc1(H, y[:5], num_classes=3)
    with pytest.raises(ValueError, match="W must have shape"):
        metrics.nc3(W[:, :2], H, y, num_classes=3)
    with pytest.raises(ValueError, match="share one dtype"):
        metrics.nc4(W.astype(jnp.float32), None, H, y, num_classes=3)
    with pytest.raises(ValueError, match="rank must lie in"):
        metrics.nc2(W, rank=3)
    with pytest.raises(ValueError, match="variant"):
        metrics.nc1(H, y, num_classes=3, variant="svd")
    with pytest.raises(ValueError, match="pass num_classes explicitly"):
        jax.jit(lambda h, lab: metrics.nc1(h, lab))(H, jnp.asarray(y))
    # Inferred from concrete labels when omitted.
    np.testing.assert_allclose(metrics.nc1(H, y), metrics.nc1(H, y, num_classes=3))
