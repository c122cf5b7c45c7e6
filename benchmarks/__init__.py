"""Benchmarks, budgets and the scaling study of the Segment 2B engine (see benchmarks/README.md)."""
