"""The benchmark suite: ``python -m benchmarks --out benchmarks/results/cpu.json`` (see README.md here)."""
