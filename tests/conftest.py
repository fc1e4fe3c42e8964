"""Test configuration: float64 for verification, strict dtype promotion, warnings as errors.

x64 is switched on for this test process only (the library never flips it); float32
tests pass float32 arrays explicitly, and strict promotion makes any silent mixing of
float32 and float64 inside the library an error.
"""

import os

import jax
import numpy as np
import pytest

# in-process CLI calls must not switch on the user's persistent compilation cache
os.environ["NC_JAX_CACHE_DIR"] = "off"
jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")


@pytest.fixture
def key():
    return jax.random.key(0)


@pytest.fixture
def rng():
    return np.random.default_rng(0)
