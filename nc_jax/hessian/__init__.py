"""Second-order engine for any JAX function of a pytree (knows nothing of the UFM).

* HVPs: :func:`hvp` (forward-over-reverse), :func:`hvp_operator` (linearize-cached),
  :func:`flat_hvp_operator` / :func:`flat_hvp` (flat vectors for the eigensolvers).
* :func:`lanczos_extremes`: matfree-style factory; thick-restarted, fully reorthogonalised
  (block) Lanczos for both ends of the spectrum, with breakdown handling, residuals from
  fresh matvecs, convergence flags and multiplicity estimates (:class:`LanczosResult`).
* :func:`hessian_extremes`, :func:`certify_saddle`: convenience and certificates
  (the Hessian quadratic form is eq. (24) of the paper for the UFM).
* :func:`slq_density`, :func:`hutchinson_trace`: spectral density and trace.
"""

from nc_jax.hessian._certify import (
    INCONCLUSIVE,
    MINIMUM,
    STRICT_SADDLE,
    VERDICT_NAMES,
    ExtremesResult,
    SaddleCertificate,
    certify_saddle,
    hessian_extremes,
    verdict_name,
)
from nc_jax.hessian._hvp import FlatOperator, flat_hvp, flat_hvp_operator, hvp, hvp_operator
from nc_jax.hessian._lanczos import LanczosResult, lanczos_extremes
from nc_jax.hessian._slq import (
    SLQResult,
    TraceEstimate,
    hutchinson_trace,
    rademacher_probes,
    slq_density,
)

__all__ = [
    "hvp", "hvp_operator", "flat_hvp_operator", "flat_hvp", "FlatOperator",
    "lanczos_extremes", "LanczosResult",
    "hessian_extremes", "ExtremesResult",
    "certify_saddle", "SaddleCertificate", "VERDICT_NAMES", "INCONCLUSIVE", "MINIMUM",
    "STRICT_SADDLE", "verdict_name",
    "slq_density", "SLQResult", "hutchinson_trace", "TraceEstimate", "rademacher_probes",
]
