"""Pictures from numpy arrays (no JAX tracing, no theory computed here).

Figures built on :class:`matplotlib.figure.Figure` directly (Agg canvas, no pyplot state,
nothing shown): Figure 2 landscapes, Figure 8 gradient fields, metric-versus-epoch curves
(one run or several variants overlaid), cosine-margin distributions, the 3-D feature
scatter of Figure 7, and the summaries of the landscape experiments. Each returns the
Figure and saves a PNG when ``path`` is given (atomically).

What Figures 2 and 8 draw (Appendix C's polar model) is computed by
:func:`nc_jax.theory.figure2_panels` / :func:`~nc_jax.theory.figure8_panels`; this module
imports nothing above :mod:`nc_jax.io`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display; pyplot is never imported here

import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from nc_jax.io import save_figure  # noqa: E402

__all__ = [
    "plot_class_counts",
    "plot_features_3d",
    "plot_features_3d_panels",
    "plot_gradient_fields",
    "plot_landscapes",
    "plot_metric_curves",
    "plot_pcm",
    "plot_phase_diagram",
    "plot_run",
    "plot_saddle_probes",
    "plot_variant_curves",
    "plot_verify_summary",
]


# ----------------------------------------------------------------------------- figures


def _save(fig: Figure, path, *, dpi: int = 120) -> Figure:
    if path is not None:
        directory = os.path.dirname(os.fspath(path))
        if directory:
            os.makedirs(directory, exist_ok=True)
        save_figure(fig, path, dpi=dpi)  # atomic: no half-written PNG on a kill
    return fig


def _grid_shape(n: int, max_cols: int = 3):
    cols = min(n, max_cols)
    return (n + cols - 1) // cols, cols


def plot_landscapes(s, theta, panels: Mapping[str, np.ndarray], *, path=None,
                    log_scale: bool = True) -> Figure:
    """Filled contour plots of losses over the ``(theta, s)`` plane (Figure 2 style).

    Args:
      s: ``(n_s,)`` grid of norms; theta: ``(n_theta,)`` grid of angles.
      panels: title -> ``(n_s, n_theta)`` loss array.
      path: optional PNG path.
      log_scale: contour ``log10(loss - min + 1e-3)`` so flat and steep regions both show.

    Returns:
      The Figure.
    """
    s, theta = np.asarray(s), np.asarray(theta)
    rows, cols = _grid_shape(len(panels))
    fig = Figure(figsize=(4.2 * cols, 3.6 * rows), layout="constrained")
    for i, (title, loss) in enumerate(panels.items()):
        loss = np.asarray(loss, dtype=np.float64)
        if loss.shape != (s.size, theta.size):
            raise ValueError(f"panel {title!r} must have shape {(s.size, theta.size)}; "
                             f"got {loss.shape}.")
        ax = fig.add_subplot(rows, cols, i + 1)
        shown = np.log10(loss - loss.min() + 1e-3) if log_scale else loss
        cs = ax.contourf(theta, s, shown, levels=30, cmap="viridis")
        ax.contour(theta, s, shown, levels=12, colors="k", linewidths=0.3)
        j = np.unravel_index(np.argmin(loss), loss.shape)
        ax.plot(theta[j[1]], s[j[0]], "r*", ms=9)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(r"$\theta$ (rad)")
        ax.set_ylabel(r"$s = \|h\|_2$")
        fig.colorbar(cs, ax=ax, label="log10(loss - min + 1e-3)" if log_scale else "loss")
    return _save(fig, path)


def plot_gradient_fields(s, theta, panels: Mapping[str, tuple[np.ndarray, np.ndarray]], *,
                         path=None) -> Figure:
    """Quiver plots of descent directions ``-(dL/ds, dL/dtheta)`` (Figure 8 style).

    Arrows are drawn in the ``(theta, s)`` coordinate plane; within a panel their length
    is proportional to the gradient norm (one common scale per panel).

    Args:
      s: ``(n_s,)`` grid; theta: ``(n_theta,)`` grid.
      panels: title -> ``(g_s, g_theta)``, each ``(n_s, n_theta)``.
      path: optional PNG path.

    Returns:
      The Figure.
    """
    s, theta = np.asarray(s), np.asarray(theta)
    T, S = np.meshgrid(theta, s)
    rows, cols = _grid_shape(len(panels))
    fig = Figure(figsize=(4.2 * cols, 3.6 * rows), layout="constrained")
    for i, (title, (g_s, g_t)) in enumerate(panels.items()):
        g_s = np.broadcast_to(np.asarray(g_s, np.float64), S.shape)
        g_t = np.broadcast_to(np.asarray(g_t, np.float64), S.shape)
        ax = fig.add_subplot(rows, cols, i + 1)
        norm = np.hypot(g_s, g_t)
        peak = float(norm.max()) if norm.size and norm.max() > 0 else 1.0
        # One data-unit scale per panel (so length is proportional to the norm and the
        # direction is the true (theta, s) coordinate direction); the longest arrow spans
        # about one grid cell of the coarser axis.
        cell = max(np.ptp(theta) / max(theta.size - 1, 1), np.ptp(s) / max(s.size - 1, 1))
        scale = peak / (1.2 * cell) if cell > 0 else None
        q = ax.quiver(T, S, -g_t, -g_s, norm, angles="xy", scale_units="xy", scale=scale,
                      cmap="plasma", width=0.004)
        fig.colorbar(q, ax=ax, label="gradient norm")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(r"$\theta$ (rad)")
        ax.set_ylabel(r"$s = \|h\|_2$")
    return _save(fig, path)


def plot_metric_curves(history: Mapping[str, Sequence[float]], *, path=None,
                       log_names: Sequence[str] | None = None, title: str | None = None) -> Figure:
    """Metric-versus-epoch curves, one panel per metric (Figures 3-6 style).

    Args:
      history: name -> values per epoch (epochs 1..len).
      path: optional PNG path.
      log_names: metrics drawn on a log y-axis; default: names starting with ``"nc"``
        (case-insensitive) whose values are all positive.
      title: optional suptitle.

    Returns:
      The Figure.
    """
    if not history:
        raise ValueError("history must contain at least one metric; got an empty mapping.")
    rows, cols = _grid_shape(len(history), max_cols=4)
    fig = Figure(figsize=(3.6 * cols, 3.0 * rows), layout="constrained")
    for i, (name, values) in enumerate(history.items()):
        values = np.asarray(values, dtype=np.float64)
        ax = fig.add_subplot(rows, cols, i + 1)
        epochs = np.arange(1, values.size + 1)
        ax.plot(epochs, values, marker="o" if values.size < 30 else None, ms=3)
        logged = (name in log_names) if log_names is not None else name.lower().startswith("nc")
        if logged and values.size and np.all(values[np.isfinite(values)] > 0):
            ax.set_yscale("log")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("epoch")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def _draw_pcm(ax, runs: Mapping[str, np.ndarray]) -> None:
    """Sorted cosine margins of each run against the fraction of samples, and the zero line."""
    for label, margins in runs.items():
        margins = np.sort(np.asarray(margins, dtype=np.float64).ravel())
        ax.plot(np.linspace(0.0, 1.0, margins.size), margins, label=label)
    ax.axhline(0.0, color="k", lw=0.5)


def plot_pcm(runs: Mapping[str, np.ndarray], *, path=None) -> Figure:
    """Cosine-margin distributions ``PC_M`` (Section 4): sorted margins of several runs.

    Args:
      runs: label -> per-sample cosine margins (sorted here).
      path: optional PNG path.

    Returns:
      The Figure.
    """
    fig = Figure(figsize=(5.0, 3.6), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    _draw_pcm(ax, runs)
    ax.set_xlabel("fraction of samples (ascending)")
    ax.set_ylabel("cosine margin")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_variant_curves(runs: Mapping[str, Mapping[str, Sequence[float]]], *, metrics: Sequence[str],
                        x: str = "epoch", log_names: Sequence[str] = (),
                        pcm: Mapping[str, np.ndarray] | None = None, path=None, title: str | None = None,
                        dpi: int = 120) -> Figure:
    """Several runs overlaid, one panel per metric against ``x``, and their PCMs (Figures 3-7).

    Args:
      runs: run name -> columns (column name -> values per row, e.g. per epoch).
      metrics: the columns drawn, one panel each, in one row.
      x: the column on the horizontal axis.
      log_names: metrics drawn on a log y-axis.
      pcm: optional run name -> sorted cosine margins (or their quantiles), drawn in a last panel.
      path: optional PNG path; title: optional suptitle; dpi: of the PNG.

    Returns:
      The Figure.
    """
    ncols = len(metrics) + (pcm is not None)
    fig = Figure(figsize=(3.6 * ncols, 3.2), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    for name, columns in runs.items():
        for ax, metric in zip(axes, metrics):
            ax.plot(columns[x], columns[metric], label=name)
    for ax, metric in zip(axes, metrics):
        ax.set_title(metric)
        ax.set_xlabel(x)
        if metric in log_names:
            ax.set_yscale("log")
    if pcm is not None:
        _draw_pcm(axes[-1], pcm)
        axes[-1].set_title("PCM: sorted cosine margins")
        axes[-1].set_xlabel("fraction of training samples")
    axes[0].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return _save(fig, path, dpi=dpi)


def plot_features_3d(features, labels, *, W=None, path=None, max_per_class=100,
                     seed=0) -> Figure:
    """3-D scatter of ``d = 3`` features coloured by class (Figure 7).

    Args:
      features: ``(3, N)`` array; labels: ``(N,)`` integers.
      W: optional ``(K, 3)`` classifier, its rows drawn as rays from the origin (each
        scaled to the extent of the features).
      path: optional PNG path; seed: subsampling seed.
      max_per_class: random subsample per class (the paper shows 100; None: all).

    Returns:
      The Figure.
    """
    return plot_features_3d_panels({"": (features, labels, W)}, path=path, max_per_class=max_per_class,
                                   seed=seed, marker_size=6, legend=True)


def plot_features_3d_panels(panels: Mapping[str, tuple], *, path=None, max_per_class=None, seed=0,
                            marker_size: float = 4, legend: bool = False, dpi: int = 120) -> Figure:
    """One 3-D scatter per run side by side, as :func:`plot_features_3d` (Figure 7 of several runs).

    Args:
      panels: title -> ``(features (3, N), labels (N,), W (K, 3) or None)``.
      path: optional PNG path; max_per_class: per-class subsample (None: all points);
      seed: subsampling seed; marker_size, legend, dpi: drawing options.

    Returns:
      The Figure.
    """
    rng = np.random.default_rng(seed)
    fig = Figure(figsize=(5.0 * len(panels), 4.5), layout="constrained")
    for i, (title, (features, labels, W)) in enumerate(panels.items()):
        features, labels = np.asarray(features, dtype=np.float64), np.asarray(labels)
        if features.ndim != 2 or features.shape[0] != 3:
            raise ValueError(f"features must have shape (3, N); got {features.shape}.")
        if labels.shape != (features.shape[1],):
            raise ValueError(f"labels must have shape ({features.shape[1]},); got {labels.shape}.")
        ax = fig.add_subplot(1, len(panels), i + 1, projection="3d")
        for k in np.unique(labels):
            idx = np.flatnonzero(labels == k)
            if max_per_class is not None and idx.size > max_per_class:
                idx = rng.choice(idx, max_per_class, replace=False)
            ax.scatter(*features[:, idx], s=marker_size, label=str(k))
        for w in np.asarray(W, dtype=np.float64) if W is not None else ():
            reach = np.abs(features).max() / max(np.linalg.norm(w), 1e-300)  # each ray spans the cloud
            ax.plot([0, reach * w[0]], [0, reach * w[1]], [0, reach * w[2]], "k-", lw=1)
        if legend:
            ax.legend(fontsize=7, markerscale=2)
        if title:
            ax.set_title(title)
    return _save(fig, path, dpi=dpi)


_CLASS_COLORS = {
    "global_minimum": "tab:green",
    "strict_saddle": "tab:orange",
    "spurious_local_minimum": "tab:red",
    "below_closed_form": "darkred",
    "local_minimum": "tab:olive",
    "not_converged": "tab:gray",
    "diverged": "black",
    "inconclusive": "tab:purple",
    "degenerate": "tab:cyan",
}


def plot_verify_summary(rows: Sequence[Mapping], probes: Sequence[Mapping] = (), *, path=None,
                        verdict: str | None = None, verdict_ok: bool | None = None) -> Figure:
    """Summary of `nc-jax verify`: class counts per configuration, |f - f*| per run, and
    the constructed saddles' smallest eigenvalue (closed form vs Lanczos), one row each.

    Args:
      rows: per-configuration dicts with ``name``, ``counts`` (class name -> count) and
        ``runs`` (``value`` list) and ``f_star``.
      probes: per-probe dicts with ``name``, ``K``, ``n``, ``d``, ``bias``, ``kept``,
        ``lambda_min_closed_form``, ``lambda_min_lanczos``.
      path: optional PNG path (written atomically).
      verdict: a line drawn as the figure's title (green when ``verdict_ok``, red when
        not, grey when None).
    """
    ncols = 3 if probes else 2
    fig = Figure(figsize=(5.4 * ncols, 1.6 + 0.36 * max(len(rows), len(probes), 6)), layout="constrained")
    if verdict:
        import textwrap

        color = "tab:gray" if verdict_ok is None else ("tab:green" if verdict_ok else "tab:red")
        fig.suptitle("\n".join(textwrap.wrap(verdict, 40 * ncols)), color=color, fontsize=10, fontweight="bold")
    plot_class_counts(rows, ax=fig.add_subplot(1, ncols, 1))
    names = [r["name"] for r in rows]
    y = np.arange(len(rows))
    ax = fig.add_subplot(1, ncols, 2)
    plotted = False
    for i, r in enumerate(rows):
        if r.get("f_star") is None:
            continue
        gaps = np.abs(np.asarray(r["runs"]["value"], dtype=float) - r["f_star"])
        # only runs that reached a critical point: a diverged run's value means nothing
        reached = ~np.isin(np.asarray(r["runs"].get("label", ["?"] * gaps.size)), ("diverged", "not_converged"))
        gaps = np.maximum(gaps[reached & np.isfinite(gaps)], 1e-18)
        ax.scatter(gaps, np.full(gaps.shape, i), s=8, alpha=0.6)
        plotted |= gaps.size > 0
    if plotted:
        ax.set_xscale("log")
    else:
        ax.text(0.5, 0.5, "no run reached a critical point", ha="center", va="center", transform=ax.transAxes)
    ax.set_yticks(y, names, fontsize=7)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlabel("|f - f*| at refined critical points (floored at 1e-18)")
    ax.set_title("distance to the closed-form optimum", fontsize=9)
    if probes:
        ax = fig.add_subplot(1, ncols, 3)
        yp = np.arange(len(probes))
        closed = np.array([p["lambda_min_closed_form"] for p in probes], dtype=float)
        lanczos = np.array([p["lambda_min_lanczos"] for p in probes], dtype=float)
        # one row per probe: the probes differ in sizes, kept sets and lambdas, so their
        # curvatures differ; with bias the closed form is an upper bound (b held fixed)
        ax.scatter(closed, yp, marker="o", s=40, facecolors="none", edgecolors="tab:blue",
                   label="closed form (bound with bias)")
        ax.scatter(lanczos, yp, marker="x", s=30, c="tab:orange", label="Lanczos (certified)")
        ax.axvline(0.0, color="k", lw=0.6)
        labels = [f"{p['name']}\nK={p['K']} n={p['n']} d={p['d']}, {len(p['kept'])} kept"
                  + (f", lW={p['lambda_W']:g} lH={p['lambda_H']:g}" if "lambda_W" in p else "") for p in probes]
        ax.set_yticks(yp, labels, fontsize=6)
        ax.set_ylim(len(probes) - 0.5, -0.5)
        both = np.concatenate([closed, lanczos])
        both = both[np.isfinite(both)]
        if both.size:  # linear: the probes' curvatures are O(lambda) and differ by tens of percent
            lo, hi = both.min(), both.max()
            span = max(hi - lo, 0.05 * abs(lo), 1e-12)
            ax.set_xlim(min(lo - 0.15 * span, 1.1 * lo), max(hi + 0.15 * span, 0.05 * abs(lo)))
        ax.ticklabel_format(axis="x", useOffset=False)
        ax.set_xlabel("smallest Hessian eigenvalue at the constructed saddle")
        ax.set_title("constructed strict saddles", fontsize=9)
        ax.legend(fontsize=6, loc="lower left")
    return _save(fig, path)


# --- Landscape experiments (experiments/phase_diagram.py, strict_saddles.py,
# open_questions.py) -------------------------------------------------------------------

_REGIME_ABBREV = {
    "zero": "0",
    "low_rank": "LR",
    "simplex_etf_d=K-1": "ETF*",
    "simplex_etf": "ETF",
    "shifted_etf": "shift",
    "no_bias_low_rank": "nbLR",
    "no_bias_orthogonal": "nbO",
}


def _log_edges(values) -> np.ndarray:
    """Cell edges for log-spaced centres: geometric midpoints, extended at both ends."""
    v = np.log(np.asarray(values, dtype=float))
    if v.size == 1:
        return np.exp(np.array([v[0] - 0.5, v[0] + 0.5]))
    mid = 0.5 * (v[1:] + v[:-1])
    return np.exp(np.concatenate([[v[0] - (mid[0] - v[0])], mid, [v[-1] + (v[-1] - mid[-1])]]))


def plot_phase_diagram(cells: Sequence[Mapping], *, num_classes: int, path=None,
                       metrics: Sequence[tuple[str, str]] = (("frac_global", "fraction certified global"),
                                                             ("log10_max_gap", "log10 max |f - f*|"),
                                                             ("log10_descent_nc1", "log10 median NC1 (descent end)"))
                       ) -> Figure:
    """Theorem 3.1 phase diagram: one column per feature dimension d, one row per metric.

    Each panel is a heatmap over (lambda_W lambda_H N K, lambda_b) (log axes) with the
    regime of every cell written on it and the theory's boundaries drawn on top:
    lambda_W lambda_H = 1/(NK) (vertical line at 1) and, for d >= K, the bias threshold
    lambda_b = t/(1-t) with t = sqrt(K N lambda_W lambda_H) = sqrt(x).

    Args:
      cells: dicts with ``d``, ``c`` (= lambda_W lambda_H N K), ``lambda_b``, ``regime``
        and the metric keys (None or nan where undefined).
      num_classes: K (the bias threshold applies for d >= K).
      metrics: (key, title) per row.
    """
    ds = sorted({int(c["d"]) for c in cells})
    cs = sorted({float(c["c"]) for c in cells})
    lbs = sorted({float(c["lambda_b"]) for c in cells})
    ce, le = _log_edges(cs), _log_edges(lbs)
    fig = Figure(figsize=(3.6 * len(ds) + 1.0, 3.2 * len(metrics)), layout="constrained")
    axes = fig.subplots(len(metrics), len(ds), squeeze=False)
    index = {(int(c["d"]), float(c["c"]), float(c["lambda_b"])): c for c in cells}
    for row, (key, title) in enumerate(metrics):
        grids = []
        for d in ds:
            g = np.full((len(lbs), len(cs)), np.nan)
            for i, lb in enumerate(lbs):
                for j, c in enumerate(cs):
                    cell = index.get((d, c, lb))
                    if cell is not None and cell.get(key) is not None:
                        g[i, j] = float(cell[key])
            grids.append(g)
        finite = np.concatenate([g[np.isfinite(g)] for g in grids]) if grids else np.array([])
        vmin, vmax = (0.0, 1.0) if key == "frac_global" else (
            (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0))
        if vmax <= vmin:
            vmax = vmin + 1.0
        for col, (d, g) in enumerate(zip(ds, grids)):
            ax = axes[row, col]
            mesh = ax.pcolormesh(ce, le, np.ma.masked_invalid(g), cmap="viridis", vmin=vmin, vmax=vmax)
            ax.set_xscale("log")
            ax.set_yscale("log")
            for i, lb in enumerate(lbs):
                for j, c in enumerate(cs):
                    cell = index.get((d, c, lb))
                    if cell is None:
                        continue
                    label = _REGIME_ABBREV.get(cell["regime"], str(cell["regime"]))
                    val = g[i, j]
                    text = label if not np.isfinite(val) else f"{label}\n{val:.2g}"
                    ax.text(np.sqrt(ce[j] * ce[j + 1]), np.sqrt(le[i] * le[i + 1]), text,
                            ha="center", va="center", fontsize=6, color="white")
            ax.axvline(1.0, color="red", lw=1.2, ls="--")
            if d >= num_classes:
                x = np.geomspace(ce[0], min(ce[-1], 1.0), 200)
                x = x[x < 1.0]
                t = np.sqrt(x)
                ax.plot(x, t / (1 - t), color="orange", lw=1.2)
            ax.set_xlim(ce[0], ce[-1])
            ax.set_ylim(le[0], le[-1])
            if row == 0:
                ax.set_title(f"d = {d} (K = {num_classes})", fontsize=9)
            if row == len(metrics) - 1:
                ax.set_xlabel("lambda_W lambda_H N K")
            if col == 0:
                ax.set_ylabel(f"lambda_b\n{title}", fontsize=8)
        fig.colorbar(mesh, ax=list(axes[row]), shrink=0.8, label=title)
    return _save(fig, path)


def plot_class_counts(rows: Sequence[Mapping], *, path=None, title: str = "class of every refined endpoint",
                      ax=None) -> Figure:
    """Horizontal stacked bars: class counts (``rows[i]["counts"]``) per ``rows[i]["name"]``."""
    fig = None
    if ax is None:
        fig = Figure(figsize=(6.0, 0.35 * len(rows) + 1.5), layout="constrained")
        ax = fig.add_subplot(1, 1, 1)
    y = np.arange(len(rows))
    left = np.zeros(len(rows))
    for cls, color in _CLASS_COLORS.items():
        counts = np.array([r["counts"].get(cls, 0) for r in rows], dtype=float)
        if counts.any():
            ax.barh(y, counts, left=left, color=color, label=cls.replace("_", " "))
            left += counts
    ax.set_yticks(y, [r["name"] for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("runs")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=6, loc="lower right")
    return _save(fig, path) if fig is not None else ax.figure


def plot_saddle_probes(probes: Sequence[Mapping], *, path=None, counts: Sequence[Mapping] = ()) -> Figure:
    """Constructed saddles: closed-form vs Lanczos lambda_min, and |f - f*| after escaping.

    Args:
      probes: dicts with ``name``, ``lambda_min_closed_form``, ``lambda_min_lanczos``,
        ``rayleigh_quotient``, ``final_gap`` and ``bias``.
      counts: optional class-count rows (see :func:`plot_class_counts`) for a third panel.
    """
    ncols = 3 if counts else 2
    fig = Figure(figsize=(5.0 * ncols, 4.2), layout="constrained")
    ax = fig.add_subplot(1, ncols, 1)
    closed = np.array([p["lambda_min_closed_form"] for p in probes], dtype=float)
    lanczos = np.array([p["lambda_min_lanczos"] for p in probes], dtype=float)
    bias = np.array([bool(p.get("bias", False)) for p in probes])
    for flag, marker, name in ((False, "o", "no bias (equality)"), (True, "s", "bias (closed form = upper bound)")):
        sel = bias == flag
        if sel.any():
            ax.scatter(closed[sel], lanczos[sel], marker=marker, label=name, alpha=0.8)
    lo, hi = np.nanmin(np.r_[closed, lanczos]), np.nanmax(np.r_[closed, lanczos])
    pad = 0.05 * (hi - lo + 1e-12)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "k--", lw=0.8)
    ax.set_xlabel("lambda_min, closed form (Lemma B.2)")
    ax.set_ylabel("lambda_min, Lanczos")
    ax.legend(fontsize=7)
    ax.set_title("smallest Hessian eigenvalue at the saddles", fontsize=9)
    ax = fig.add_subplot(1, ncols, 2)
    gaps = np.maximum(np.abs(np.array([p["final_gap"] for p in probes], dtype=float)), 1e-18)
    y = np.arange(len(probes))
    ax.barh(y, gaps, color=np.where(bias, "tab:orange", "tab:blue"))
    ax.set_xscale("log")
    ax.set_yticks(y, [p["name"] for p in probes], fontsize=6)
    ax.invert_yaxis()
    ax.set_xlabel("|f - f*| after step + descent + refinement (floored at 1e-18)")
    ax.set_title("escape from x + eps y", fontsize=9)
    if counts:
        plot_class_counts(counts, ax=fig.add_subplot(1, ncols, 3), title="multistart explore")
    return _save(fig, path)


def plot_run(results: dict, workdir, cosine_margins=None) -> list[str]:
    """Metric-vs-epoch curves (``metrics.png``) and the PCM (``pcm.png``) of one run."""
    hist = results["history"]
    curves = {f"NC{i}": [h["train_nc"][f"nc{i}"] for h in hist] for i in (1, 2, 3, 4)}
    curves |= {
        "numerical rank": [h["train_nc"]["numerical_rank"] for h in hist],
        "train loss": [h["train_loss"] for h in hist],
        "train accuracy": [h["train_accuracy"] for h in hist],
    }
    if "test_accuracy" in hist[-1]:
        curves["test accuracy"] = [h["test_accuracy"] for h in hist]
    workdir = Path(workdir)
    paths = [workdir / "metrics.png"]
    plot_metric_curves(curves, path=paths[0], log_names=("NC1", "NC2", "NC3", "train loss"),
                       title=f"{results['config']['dataset']}: {results['config']['loss']}, "
                             f"{results['config']['optimizer']}, d={results['feature_dim']}")
    if cosine_margins is not None and np.size(cosine_margins):
        paths.append(workdir / "pcm.png")
        plot_pcm({"train": np.asarray(cosine_margins)}, path=paths[1])
    return [str(p) for p in paths]
