"""Benchmarks: ``python -m experiments.benchmarks.<name>`` from the repository root."""
