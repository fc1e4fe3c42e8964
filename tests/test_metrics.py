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


# ----------------------------------------------------------------------------- statistics


@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-12), (np.float32, 1e-4)])
def test_nc1_from_scatter_equals_nc1(dtype, rtol, rng):
    K, d = 5, 7
    _, _, H, labels = random_problem(K, d, (3, 9, 4, 6, 5), rng, dtype=dtype)
    means = metrics.class_means(jnp.asarray(H), labels, num_classes=K)
    R = jnp.asarray(H) - means[:, labels]
    S = R @ R.T
    for variant in ("pinv", "trace"):
        got = metrics.nc1_from_scatter(means, S, labels.size, variant=variant)
        assert got.dtype == dtype
        np.testing.assert_allclose(got, metrics.nc1(jnp.asarray(H), labels, num_classes=K,
                                                    variant=variant), rtol=rtol)
    # Uncentered or centered means give the same value; traced N is accepted.
    hbar = means - jnp.mean(means, axis=1, keepdims=True)
    jitted = jax.jit(metrics.nc1_from_scatter)
    np.testing.assert_allclose(jitted(hbar, S, jnp.asarray(labels.size)),
                               metrics.nc1_from_scatter(means, S, labels.size), rtol=10 * rtol)
    # All class means equal: NaN, as nc1.
    assert np.isnan(metrics.nc1_from_scatter(jnp.zeros((d, K), dtype), S, labels.size))
    with pytest.raises(ValueError, match="within_scatter must have shape"):
        metrics.nc1_from_scatter(means, S[:, :3], labels.size)
    with pytest.raises(ValueError, match="num_samples must be a positive"):
        metrics.nc1_from_scatter(means, S, 0)


# One compile per batch shape (eager dispatch would compile every op per shape).
stats_update = jax.jit(metrics.collapse_stats_update, static_argnames="feature_axis")
sample_update = jax.jit(metrics.sample_stats_update, static_argnames="feature_axis")
report_from_stats = jax.jit(metrics.collapse_report_from_stats)


def uneven_batches(H, labels, sizes, width):
    """Rows of H (d, N) in consecutive batches of the given sizes, each zero-padded to
    ``width`` rows with a mask (uneven batches, one compiled shape)."""
    edges = np.cumsum([0, *sizes])
    assert edges[-1] == labels.size and max(sizes) <= width
    out = []
    for a, c in zip(edges[:-1], edges[1:]):
        x = np.zeros((width, H.shape[0]), H.dtype)
        y = np.zeros(width, labels.dtype)
        x[:c - a], y[:c - a] = H[:, a:c].T, labels[a:c]
        out.append((x, y, np.arange(width) < c - a))
    return out


@pytest.mark.parametrize("order", ["shuffled", "class_sorted"])
def test_streaming_equals_one_shot_float64(order, rng):
    """Uneven batches, classes absent from some batches: every defined field matches."""
    counts = (5, 11, 3, 8, 7)
    K, d = len(counts), 6
    W, b, H, labels = random_problem(K, d, counts, rng)
    if order == "class_sorted":
        perm = np.argsort(labels, kind="stable")
        H, labels = H[:, perm], labels[perm]
    parts = uneven_batches(H, labels, (1, 7, 4, 13, 0, 2, 7), width=13)  # N = 34
    stats = metrics.collapse_stats_init(K, d, dtype=jnp.float64)
    for x, y, m in parts:
        stats = stats_update(stats, x, y, m)
    second = metrics.sample_stats_init(jnp.float64)
    for x, y, m in parts:
        second = sample_update(second, stats, W, b, x, y, m)
    np.testing.assert_array_equal(stats.counts, np.bincount(labels, minlength=K))
    np.testing.assert_allclose(stats.means, metrics.class_means(jnp.asarray(H), labels,
                                                                num_classes=K), rtol=1e-13)
    got = report_from_stats(stats, W, b, sample_stats=second)
    want = jit_report(jnp.asarray(W), jnp.asarray(b), jnp.asarray(H), labels, num_classes=K)
    for name in metrics.CollapseReport._fields:
        if name == "numerical_rank":  # not defined by streamed statistics
            assert np.isnan(got.numerical_rank)
            continue
        np.testing.assert_allclose(getattr(got, name), getattr(want, name), rtol=1e-10,
                                   atol=1e-12, err_msg=name)
    # Without W / the second pass, those fields are NaN and the rest unchanged.
    partial = report_from_stats(stats)
    for name in ("nc2", "nc3", "nc4", "cosine_margin_mean", "cosine_margin_min", "accuracy"):
        assert np.isnan(getattr(partial, name)), name
    np.testing.assert_allclose(partial.nc1, want.nc1, rtol=1e-10)
    # Unpadded batches of two sizes, as columns (d, N_batch) with feature_axis=0.
    cols = metrics.collapse_stats_init(K, d, dtype=jnp.float64)
    for a, c in ((0, 20), (20, 34)):
        cols = stats_update(cols, H[:, a:c], labels[a:c], feature_axis=0)
    for field, x, c in zip(stats._fields, stats, cols):
        np.testing.assert_allclose(x, c, rtol=1e-13, atol=1e-14, err_msg=field)


def padded_batches(X, y, batch_size):
    """(num_batches, B, d) rows, labels and masks; the last batch padded with zeros."""
    N, d = X.shape
    nb = -(-N // batch_size)
    Xp = np.zeros((nb * batch_size, d), X.dtype)
    yp = np.zeros(nb * batch_size, y.dtype)
    Xp[:N], yp[:N] = X, y
    mask = np.arange(nb * batch_size) < N
    return (Xp.reshape(nb, batch_size, d), yp.reshape(nb, batch_size),
            mask.reshape(nb, batch_size))


def test_streaming_float32_near_collapse_matches_float64(rng):
    """float32 accumulation at NC1 ~ 1e-6 (means of norm ~1 on a common offset of norm 5).

    Reference: float64 two-pass nc1 of the same float32 features. The update's error is
    about eps * ||h|| / spread (the size of rounding the features themselves),
    1.2e-7 * 5 / 3e-3 ~ 2e-4 in the worst case; measured ~1e-6. rtol 1e-3 leaves room
    for other BLAS orders. The textbook sum h h^T - n m m^T in float32 loses
    eps * (||h|| / spread)^2 ~ 0.3 relative of the scatter (in order of magnitude): checked
    to fail here by far more than the streaming update.
    """
    K, d, n = 10, 64, 100
    labels = np.repeat(np.arange(K), n)
    rng.shuffle(labels)
    offset = 5.0 * rng.standard_normal((d, 1)) / np.sqrt(d)
    noise = 3e-3 * rng.standard_normal((d, K * n)) / np.sqrt(d)
    H = etf_means(K, d, rng)[:, labels] + offset + noise
    H32 = H.astype(np.float32)
    ref = float(metrics.nc1(jnp.asarray(H32.astype(np.float64)), labels, num_classes=K))
    assert 3e-7 < ref < 3e-6
    X, Y, M = padded_batches(H32.T, labels, 64)

    @jax.jit
    def stream(X, Y, M):
        def step(state, batch):
            return metrics.collapse_stats_update(state, *batch), None
        state, _ = jax.lax.scan(step, metrics.collapse_stats_init(K, d, jnp.float32), (X, Y, M))
        return metrics.collapse_report_from_stats(state)

    rep = stream(X, Y, M)
    assert all(getattr(rep, f).dtype == jnp.float32 for f in rep._fields)
    np.testing.assert_allclose(rep.nc1, ref, rtol=1e-3)
    np.testing.assert_allclose(
        rep.nc1_trace,
        metrics.nc1(jnp.asarray(H32.astype(np.float64)), labels, num_classes=K, variant="trace"),
        rtol=1e-3)
    # The textbook formula on the same float32 data: no correct digit left.
    Hj = jnp.asarray(H32)
    onehot = jax.nn.one_hot(labels, K, dtype=jnp.float32)
    cnt = jnp.sum(onehot, axis=0)
    mu = jnp.matmul(Hj, onehot, precision="highest") / cnt
    naive_S = (jnp.matmul(Hj, Hj.T, precision="highest")
               - jnp.matmul(mu * cnt, mu.T, precision="highest"))
    naive = float(metrics.nc1_from_scatter(mu, naive_S, labels.size))
    # its error depends on the BLAS's summation order: 0.3 relative on one machine, 0.18 on
    # another (AVX-512); in both, thousands of times the streaming update's error
    streaming_error = abs(float(rep.nc1) - ref)
    assert abs(naive - ref) > max(0.05 * ref, 1e3 * streaming_error), (naive, float(rep.nc1), ref)


def test_streaming_update_compiles_once(rng):
    """Same-shape batches (the padded last one included) reuse one compiled update."""
    K, d, B = 4, 5, 8
    W, b, H, labels = random_problem(K, d, (9, 6, 7, 5), rng)  # N = 27: last batch 3 of 8
    X, Y, M = padded_batches(H.T, labels, B)
    Y[-1, 3:] = -1  # padding labels are ignored under the mask whatever their value

    @jax.jit
    @chex.assert_max_traces(n=1)
    def update(state, x, y, mask):
        return metrics.collapse_stats_update(state, x, y, mask)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def update_second(state, stats, x, y, mask):
        return metrics.sample_stats_update(state, stats, W, b, x, y, mask)

    chex.clear_trace_counter()
    stats = metrics.collapse_stats_init(K, d, jnp.float64)
    for x, y, m in zip(X, Y, M):
        stats = update(stats, jnp.asarray(x), jnp.asarray(y), jnp.asarray(m))
    second = metrics.sample_stats_init(jnp.float64)
    for x, y, m in zip(X, Y, M):
        second = update_second(second, stats, jnp.asarray(x), jnp.asarray(y), jnp.asarray(m))
    assert update._cache_size() == 1 and update_second._cache_size() == 1
    got = report_from_stats(stats, W, b, second)
    want = numpy_reference(W, b, H, labels, K)
    for name in ("nc1", "nc1_trace", "nc2", "nc2_means", "nc3", "nc4", "cosine_margin_mean",
                 "cosine_margin_min", "accuracy"):
        np.testing.assert_allclose(getattr(got, name), want[name], rtol=1e-10, atol=1e-12,
                                   err_msg=name)


def test_streaming_input_errors(rng):
    stats = metrics.collapse_stats_init(3, 4, jnp.float64)
    x = jnp.asarray(rng.standard_normal((6, 4)))
    y = np.array([0, 1, 2, 0, 1, 2])
    with pytest.raises(ValueError, match="num_classes must be an int >= 2"):
        metrics.collapse_stats_init(1, 4)
    with pytest.raises(ValueError, match="dtype must be a floating"):
        metrics.collapse_stats_init(3, 4, dtype=jnp.int32)
    with pytest.raises(ValueError, match="statistics hold d = 4"):
        metrics.collapse_stats_update(stats, x.T, y)  # (d, N) without feature_axis=0
    with pytest.raises(ValueError, match="feature_axis"):
        metrics.collapse_stats_update(stats, x, y, feature_axis=2)
    with pytest.raises(ValueError, match="labels must have shape"):
        metrics.collapse_stats_update(stats, x, y[:5])
    with pytest.raises(ValueError, match="mask must have shape"):
        metrics.collapse_stats_update(stats, x, y, np.ones(5, bool))
    with pytest.raises(ValueError, match=r"unmasked samples must lie in \[0, num_classes\)"):
        metrics.collapse_stats_update(stats, x, np.array([0, 1, 2, 0, 1, 3]))
    # A masked-out label may be anything.
    masked = stats_update(stats, x, np.array([0, 1, 2, 0, 1, 7]), np.arange(6) < 5)
    np.testing.assert_array_equal(masked.counts, [2, 2, 1])
    with pytest.raises(ValueError, match=r"classes \[2\] are empty"):
        metrics.collapse_report_from_stats(stats_update(stats, x[:2], y[:2]))
    with pytest.raises(ValueError, match="W must have shape"):
        metrics.collapse_report_from_stats(stats_update(stats, x, y), W=jnp.zeros((3, 3)))


def test_package_is_generic_and_reexports_its_names():
    """metrics knows nothing of the UFM (no module imports ufm, theory or landscape), and
    every public name is reachable from ``nc_jax.metrics`` and defined inside it."""
    import ast
    from pathlib import Path

    forbidden = ("nc_jax.ufm", "nc_jax.theory", "nc_jax.landscape")
    for path in Path(metrics.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            assert not any(n.startswith(forbidden) for n in names), (path.name, names)
    for name in metrics.__all__:
        assert getattr(metrics, name).__module__.startswith("nc_jax.metrics"), name


@pytest.mark.slow
def test_flax_metrics_hook_example_quick(tmp_path):
    """experiments/flax_metrics_hook.py --quick runs, NC1 decreases, the JSON is written."""
    import json
    import os
    import re
    import subprocess
    import sys
    from pathlib import Path

    repo_root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [sys.executable, "experiments/flax_metrics_hook.py", "--quick", "--workdir", str(tmp_path)],
        cwd=repo_root, timeout=120, capture_output=True, text=True,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    nc1 = [float(v) for v in re.findall(r"^epoch\s+\d+ .*NC1 (\S+)", proc.stdout, re.MULTILINE)]
    assert len(nc1) == 4, proc.stdout
    assert nc1[-1] < 0.1 * nc1[0], proc.stdout
    history = json.loads((tmp_path / "metrics_history.json").read_text())["history"]
    np.testing.assert_allclose([row["nc1"] for row in history], nc1, rtol=1e-3)
