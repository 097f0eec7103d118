"""Benchmarks of npo-trl (run from the repository root: `python -m benchmarks.step_cost`,
`python -m benchmarks.tofu_protocol`)."""
