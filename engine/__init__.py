"""Segment 2B routing engine: deterministic states S0..S8 over a sealed upstream world."""

__version__ = "0.1.0"
