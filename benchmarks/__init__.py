"""Timing benchmarks (never run by the tests)."""

# First, before torch: kernels sets GOMP_SPINCOUNT, read once when libgomp loads.
import kernels  # noqa: F401
