"""Tests for Appendix C's polar model (nc_jax.theory), nc_jax.plotting and the Figure 2 /
Figure 8 scripts.

Each errata item in docs/errata_appendix_c.md names the test here that shows it.
"""

import importlib
import importlib.util
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nc_jax import plotting, theory

ROOT = Path(__file__).resolve().parents[1]


def _import_experiment(name):
    """``experiments.<name>`` (pytest puts the repository root on the path: pyproject pythonpath)."""
    return importlib.import_module(f"experiments.{name}")


def _points(rng, n=64, s_max=6.0):
    return rng.uniform(0.0, s_max, n), rng.uniform(0.0, np.pi, n)


# ----------------------------------------------------------------------------- Prop. C.1


@pytest.mark.parametrize("K", [3, 4, 10])
@pytest.mark.parametrize("extra_dims", [0, 3])  # d = K - 1 and d = K + 2
def test_proposition_c1_identities(K, extra_dims, rng):
    """Errata (a): eqs. (28)-(29) hold exactly for the unit-row ETF; eqs. (31)-(32) too."""
    s, theta = _points(rng)
    chk = theory.proposition_c1_check(K, s, theta, d=K - 1 + extra_dims, alpha=2.5, M=3.0)
    for key in ("norm_h_minus_s", "angle_minus_theta", "out_k", "out_kp", "out_other",
                "etf_row_norm_minus_1"):
        assert chk[key] < 1e-12, (key, chk[key])
    # losses are O(10^2) on this range: 1e-12 relative
    scale = np.max(theory.polar_mse_loss(s, theta, K, 2.5, 3.0))
    assert chk["mse_eq31_vs_direct"] < 1e-12 * scale
    assert chk["ce_eq32_vs_direct"] < 1e-12 * max(1.0, np.max(theory.polar_ce_loss(s, theta, K)))


@pytest.mark.parametrize("K", [3, 4, 10])
def test_eq29_needs_unit_rows_and_eq30_target_is_zero(K, rng):
    """Errata (a) and (b): the unscaled ETF is off by 1/K; eq. (30)'s '-1' is not eq. (31)."""
    s, theta = _points(rng)
    chk = theory.proposition_c1_check(K, s, theta, d=K, alpha=1.0, M=1.0)
    np.testing.assert_allclose(chk["unscaled_etf_out_k_rel_error"], 1.0 / K, rtol=1e-10)
    assert chk["eq30_printed_minus_eq31"] > 0.5


def test_polar_validation():
    with pytest.raises(ValueError, match="K must be an int >= 3"):
        theory.polar_outputs(1.0, 0.5, 2)
    with pytest.raises(ValueError, match="d must be >= K - 1"):
        theory.simplex_etf_classifier(5, 3)


# ----------------------------------------------------------------------------- gradients


def _mse_limit_jnp(p, alpha, M):  # eq. (33)
    s, t = p
    return 0.5 * alpha * (s * jnp.cos(t) - M) ** 2 + 0.5 * s**2 * jnp.sin(t) ** 2


@pytest.mark.parametrize("alpha,M", [(1.0, 1.0), (3.0, 1.0), (1.0, 5.0), (0.5, 2.0)])
def test_eq34_matches_grad_of_eq33(alpha, M, rng):
    """Errata (c): eq. (34) is the gradient of eq. (33) (jax.grad and central differences)."""
    s, theta = _points(rng)
    g_s, g_t = theory.polar_mse_grad_limit(s, theta, alpha, M)
    auto = jax.vmap(jax.grad(lambda p: _mse_limit_jnp(p, alpha, M)))(
        jnp.stack([jnp.asarray(s), jnp.asarray(theta)], axis=1))
    np.testing.assert_allclose(np.asarray(auto), np.stack([g_s, g_t], 1), rtol=1e-12, atol=1e-12)
    h = 1e-6
    fd_s = (theory.polar_mse_loss_limit(s + h, theta, alpha, M)
            - theory.polar_mse_loss_limit(s - h, theta, alpha, M)) / (2 * h)
    fd_t = (theory.polar_mse_loss_limit(s, theta + h, alpha, M)
            - theory.polar_mse_loss_limit(s, theta - h, alpha, M)) / (2 * h)
    np.testing.assert_allclose(fd_s, g_s, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(fd_t, g_t, rtol=1e-6, atol=1e-6)
    # (33) is the K -> infinity limit of (31): gap O(1/K).
    gaps = [np.max(np.abs(theory.polar_mse_loss(s, theta, K, alpha, M)
                          - theory.polar_mse_loss_limit(s, theta, alpha, M))) for K in (10, 1000)]
    assert gaps[1] < gaps[0] / 50


@pytest.mark.slow
@pytest.mark.parametrize("K", [3, 10])
def test_exact_finite_K_gradients_match_jax_grad(K, rng):
    """The exact gradients of (31)/(32) equal jax.grad of the losses of W h(s, theta)."""
    s, theta = _points(rng, n=16)
    W = jnp.asarray(theory.simplex_etf_classifier(K, K + 1, seed=3))
    r = np.sqrt(K * K - 2.0 * K)

    def outputs(p):
        s_, t_ = p
        h = s_ * (jnp.sin(t_) / r + jnp.cos(t_)) * W[0] + s_ * (K - 1) * jnp.sin(t_) / r * W[1]
        return W @ h

    def ce(p):
        z = outputs(p)
        return jax.nn.logsumexp(z) - z[0]

    def mse(p):
        z = outputs(p)
        return 0.5 * 2.0 * (z[0] - 3.0) ** 2 + 0.5 * jnp.sum(z[1:] ** 2)

    pts = jnp.stack([jnp.asarray(s), jnp.asarray(theta)], axis=1)
    for fn, (g_s, g_t) in ((ce, theory.polar_ce_grad(s, theta, K)),
                           (mse, theory.polar_mse_grad(s, theta, K, 2.0, 3.0))):
        np.testing.assert_allclose(np.asarray(jax.vmap(jax.grad(fn))(pts)),
                                   np.stack([g_s, g_t], 1), rtol=1e-11, atol=1e-11)


def test_eq35_is_not_the_K_to_infinity_limit(rng):
    """Errata (d): the CE gradient tends to (-cos, s sin); eq. (35) is a two-logit CE at s=1."""
    s, theta = _points(rng, s_max=4.0)
    lim_s, lim_t = theory.polar_ce_grad_limit(s, theta)
    errs = []
    for K in (100, 10**4, 10**6):
        g_s, g_t = theory.polar_ce_grad(s, theta, K)
        errs.append(np.max(np.hypot(g_s - lim_s, g_t - lim_t)))
    assert errs[0] > errs[1] > errs[2] and errs[2] < 1e-3  # O(e^s / K)
    p_s, p_t = theory.polar_ce_grad_paper_eq35(s, theta)
    assert np.max(np.hypot(p_s - lim_s, p_t - lim_t)) > 1.0
    # eq. (35) = gradient of log(1 + e^{s(sin - cos)}) evaluated with s = 1 in the exponent:
    ones = np.ones_like(s)
    t_s, t_t = theory.polar_ce_grad_two_class(ones, theta)
    q_s, q_t = theory.polar_ce_grad_paper_eq35(ones, theta)
    np.testing.assert_allclose(np.stack([q_s, q_t]), np.stack([t_s, t_t]), rtol=1e-14, atol=1e-15)
    t_s, t_t = theory.polar_ce_grad_two_class(s, theta)
    assert np.max(np.hypot(p_s - t_s, p_t - t_t)) > 0.1
    # ... and the (finite-K) CE loss itself diverges like log K.
    L = [float(theory.polar_ce_loss(1.0, 0.3, K)) for K in (10**3, 10**6)]
    np.testing.assert_allclose(L[1] - L[0], np.log((10**6 - 2) / (10**3 - 2)), rtol=1e-2)


# ----------------------------------------------------------------------------- figures


def test_generic_figures_write_pngs(tmp_path, rng):
    fig = plotting.plot_metric_curves(
        {"nc1": [1.0, 0.1, 0.01], "accuracy": [0.5, 0.8, 0.9]}, path=tmp_path / "curves.png")
    assert fig.axes[0].get_yscale() == "log" and fig.axes[1].get_yscale() == "linear"
    plotting.plot_pcm({"a": rng.standard_normal(50), "b": rng.uniform(size=30)},
                      path=tmp_path / "pcm.png")
    plotting.plot_features_3d(rng.standard_normal((3, 60)), np.repeat(np.arange(3), 20),
                              W=theory.simplex_etf_classifier(3, 3), path=tmp_path / "f7.png")
    for name in ("curves.png", "pcm.png", "f7.png"):
        assert (tmp_path / name).stat().st_size > 1000
    with pytest.raises(ValueError, match="features must have shape"):
        plotting.plot_features_3d(np.zeros((2, 4)), np.zeros(4, int))


def test_run_and_variant_figures_write_pngs(tmp_path, rng):
    hist = [{"epoch": e, "train_loss": 1.0 / e, "train_accuracy": 0.5, "test_accuracy": 0.4,
             "train_nc": {"nc1": 1.0 / e, "nc2": 0.5, "nc3": 0.3, "nc4": 0.1, "numerical_rank": 3}} for e in (1, 2, 3)]
    results = {"history": hist, "feature_dim": 3, "config": {"dataset": "toy", "loss": "mse", "optimizer": "sgd"}}
    paths = plotting.plot_run(results, tmp_path, cosine_margins=rng.standard_normal(20))
    assert [Path(p).name for p in paths] == ["metrics.png", "pcm.png"]
    assert plotting.plot_run(results, tmp_path / "no_pcm") == [str(tmp_path / "no_pcm" / "metrics.png")]
    columns = {"a": {"epoch": [1, 2, 3], "NC1": [1.0, 0.1, 0.01]}, "b": {"epoch": [1, 2], "NC1": [2.0, 1.0]}}
    fig = plotting.plot_variant_curves(columns, metrics=("NC1",), log_names=("NC1",),
                                       pcm={"a": np.linspace(-1, 1, 11), "b": []}, path=tmp_path / "v.png")
    assert len(fig.axes) == 2 and fig.axes[0].get_yscale() == "log"
    panels = {name: (rng.standard_normal((3, 30)), np.repeat(np.arange(3), 10), theory.simplex_etf_classifier(3, 3))
              for name in ("x", "y")}
    assert len(plotting.plot_features_3d_panels(panels, path=tmp_path / "f.png").axes) == 2
    for path in paths + [tmp_path / "v.png", tmp_path / "f.png"]:
        assert Path(path).stat().st_size > 1000


@pytest.mark.parametrize("script,stem", [("figure2_landscape", "figure2"),
                                         ("figure8_gradient_field", "figure8")])
@pytest.mark.slow
def test_scripts_run_tiny(script, stem, tmp_path, capsys):
    module = _import_experiment(script)
    assert module.main(["--tiny", "--workdir", str(tmp_path)]) == 0
    png, js = tmp_path / f"{stem}.png", tmp_path / f"{stem}.json"
    assert png.stat().st_size > 1000
    data = json.loads(js.read_text())
    assert data["K"] == 10 and len(data["s"]) > 1
    assert "workdir:" in capsys.readouterr().out
    if stem == "figure2":
        assert data["proposition_c1_ok"] and data["proposition_c1_max_discrepancy"] < 1e-10
    else:
        assert data["checks_ok"] and data["checks"]["eq35_printed_minus_true_limit"] > 1.0
