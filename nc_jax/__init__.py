"""nc_jax: the optimization landscape of neural collapse under MSE loss, in JAX.

Modules (import the ones you need; none flips jax_enable_x64):
  ufm        problems, parameters, objectives (eq. 3, eq. 4, CE), analytic HVPs
  theory     Theorem 3.1 and Lemma B.2 in closed form
  hessian    HVPs, Lanczos, saddle certificates, SLQ (generic)
  metrics    NC1-NC4, numerical rank, cosine margin (generic)
  landscape  multistart descent, refinement, certified classification
  plotting   the paper's pictures (numpy + matplotlib)
  models, data, train   the Flax ResNet18 pipeline
  distributed  several processes (jax.distributed): flags, blocks of runs, gathers
  deep_ufm, class_mean_ufm, sphere_ufm, conditioning   the follow-up models (docs/followups.md)
"""

from nc_jax.theory import global_minimum
from nc_jax.ufm import UFMParams, UFMProblem, objective

__version__ = "0.1.0"
__all__ = ["UFMProblem", "UFMParams", "objective", "global_minimum", "__version__"]
