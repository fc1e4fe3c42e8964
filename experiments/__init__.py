"""The paper's experiments, figures and benchmarks, run from the repository root as modules.

    python -m experiments.phase_diagram --quick
    python -m experiments.figures --figure 7 --tiny
    python -m experiments.benchmarks.bench_multistart --quick

Shared options and outputs: :mod:`experiments.harness`. Training configurations:
:mod:`experiments.configs` (also ``nc-jax train --config NAME``).
"""
