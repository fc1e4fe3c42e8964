"""How far a point is from Theorem 3.1's predictions: the distance of its class-mean Gram
spectrum and of its self-duality to the closed-form :class:`NCPrediction`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from nc_jax import metrics, ufm
from nc_jax.theory._global import NCPrediction, nc_predictions
from nc_jax.ufm import UFMParams, UFMProblem


def prediction_errors(problem: UFMProblem, params: UFMParams,
                      pred: NCPrediction | None = None) -> tuple[jax.Array, jax.Array]:
    """Distance of a point's class-mean Gram spectrum and self-duality to Theorem 3.1's prediction.

    Args:
      problem: the UFMProblem (``loss="mse"``: the closed form).
      params: the point; its features ``H`` give the class means.
      pred: ``nc_predictions(problem)`` when the caller already holds it; None computes it.

    Returns:
      ``(spectrum_error, self_duality_error)``: the largest absolute difference between the
      descending spectrum of the unit-Frobenius class-mean Gram and ``pred.gram_spectrum``,
      and ``||means - c W^T|| / ||W||`` with ``c = pred.self_duality`` (0/1 guards at zero).
    """
    if pred is None:
        pred = nc_predictions(problem)
    W = params.W
    means = metrics.class_means(params.H, ufm.labels(problem), num_classes=problem.num_classes)
    gram = means.T @ means
    norm = jnp.linalg.norm(gram)
    spectrum = jnp.sort(jnp.linalg.eigvalsh(gram / jnp.where(norm > 0, norm, 1.0)))[::-1]
    spec_err = jnp.max(jnp.abs(spectrum - pred.gram_spectrum))
    wn = jnp.linalg.norm(W)
    dual_err = jnp.linalg.norm(means - pred.self_duality * W.T) / jnp.where(wn > 0, wn, 1.0)
    return spec_err, dual_err
