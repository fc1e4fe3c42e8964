"""Second-order engine for any JAX function of a pytree (knows nothing of the UFM).

Layers, each consuming the one below (matfree's decomposition -> Ritz -> restart):

* HVPs (:mod:`._hvp`): :func:`hvp` (forward-over-reverse), :func:`hvp_operator`
  (linearize-cached), :func:`flat_hvp_operator` / :func:`flat_hvp` (flat vectors).
* Decomposition (:mod:`._decomp`): :func:`lanczos_decomposition` (factory of the static
  settings) returns ``decompose(matvec, v0, *params, key=None)`` ->
  :class:`LanczosDecomposition` (orthonormal basis, projected (block-)tridiagonal
  matrix, residual block and norms, counts, breakdown flags); :func:`start_decomposition`,
  :func:`lanczos_step`, :func:`can_continue`, :func:`thick_restart` are its pieces.
* Ritz pairs (:mod:`._ritz`): :func:`ritz_pairs` -> :class:`RitzPairs`, :func:`ritz_vector`.
* Thick-restarted extremes (:mod:`._lanczos`): :func:`lanczos_extremes` ->
  :class:`LanczosResult` (both ends, restarts, fresh residuals, convergence flags,
  multiplicities); the one default tolerance :data:`DEFAULT_RTOL` / :func:`default_rtol`.
* Consumers: :func:`hessian_extremes`, :func:`certify_saddle` (:class:`SaddleCertificate`,
  :class:`CertificateVerdict`; the Hessian quadratic form is eq. (24) of the paper for
  the UFM); :func:`slq_density`, :func:`hutchinson_trace` (spectral density, trace).
"""

from nc_jax.hessian._certify import (
    INCONCLUSIVE,
    MINIMUM,
    STRICT_SADDLE,
    VERDICT_NAMES,
    CertificateVerdict,
    ExtremesResult,
    SaddleCertificate,
    certify_saddle,
    hessian_extremes,
    verdict_name,
)
from nc_jax.hessian._decomp import (
    LanczosDecomposition,
    can_continue,
    lanczos_decomposition,
    lanczos_step,
    start_decomposition,
    thick_restart,
)
from nc_jax.hessian._hvp import FlatOperator, flat_hvp, flat_hvp_operator, hvp, hvp_operator
from nc_jax.hessian._lanczos import DEFAULT_RTOL, LanczosResult, default_rtol, lanczos_extremes
from nc_jax.hessian._ritz import RitzPairs, ritz_pairs, ritz_vector
from nc_jax.hessian._slq import (
    SLQResult,
    TraceEstimate,
    hutchinson_trace,
    rademacher_probes,
    slq_density,
)

__all__ = [
    "hvp", "hvp_operator", "flat_hvp_operator", "flat_hvp", "FlatOperator",
    "lanczos_decomposition", "LanczosDecomposition", "start_decomposition", "lanczos_step",
    "can_continue", "thick_restart",
    "ritz_pairs", "RitzPairs", "ritz_vector",
    "lanczos_extremes", "LanczosResult", "DEFAULT_RTOL", "default_rtol",
    "hessian_extremes", "ExtremesResult",
    "certify_saddle", "SaddleCertificate", "CertificateVerdict", "VERDICT_NAMES",
    "INCONCLUSIVE", "MINIMUM", "STRICT_SADDLE", "verdict_name",
    "slq_density", "SLQResult", "hutchinson_trace", "TraceEstimate", "rademacher_probes",
]
