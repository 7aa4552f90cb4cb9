"""Hand-written Numba kernels with ``numpy_impl.functional``'s names and signatures.

The kernels themselves arrive with the kernels issue; the package exists so the
layout and the backend dispatch (``numpy_impl.backend``) are in place.
"""

__all__: list[str] = []
