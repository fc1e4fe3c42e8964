"""nc_jax: the optimization landscape of neural collapse under MSE loss, in JAX."""

__version__ = "0.1.0"
