"""Measurements of feddat_jax, not tests: each module answers one question, says it in its first
line, and runs as ``python -m benchmarks.<name>`` from the repository root (benchmarks/README.md).
``harness`` builds the synthetic cohort and times a round for all of them; ``results_md`` renders
RESULTS.md from the ``results_*.json`` files they write."""
