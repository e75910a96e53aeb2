"""Benchmark harness: `python -m benchmarks.run` (or `./dev bench`). See RESULTS.md."""
