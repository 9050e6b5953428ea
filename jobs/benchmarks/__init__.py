"""The benchmarks `python -m jobs.bench` runs: one module per benchmark, plus their helpers.

A benchmark module exposes `add_arguments(parser)` and `run(args) -> dict`; `paired.py`
holds the paired-timing helpers, `fault_*.py` the parts of the fault soak (`faults.py`).
"""
