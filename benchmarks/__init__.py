"""Timing benchmarks (never run by the tests). Imports nothing: a worker process loads
only the library its side measures (``benchmarks/worker.py``)."""
