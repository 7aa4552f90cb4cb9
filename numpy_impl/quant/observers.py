"""Calibration observers: watch a tensor's float values over calibration batches, then give
the (scale, zero_point) that quantizes it. Each has ``update(x)`` and ``qparams(qmin, qmax)``.

- :class:`MinMaxObserver`: the range of every value seen. One outlier stretches it.
- :class:`MovingAverageMinMaxObserver`: each batch's min and max, averaged with
  ``lo += c * (batch_lo - lo)`` (torch's, ``c = 0.01``): outliers of one batch count less.
- :class:`HistogramObserver`: a histogram of every value, then the clipping range [lo, hi] that
  minimises the squared quantization error of the histogram's values (each bin at its centre,
  quantized with that range's qparams) over a grid of candidate ranges: outliers are clipped
  where that costs less than making every step coarser (rarely at 8 bits, often at 4).
"""

from __future__ import annotations

import numpy as np

from . import affine


def _finite(fn, x):
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"{fn}: x must hold floats, got dtype {x.dtype}")
    if x.size == 0:
        raise ValueError(f"{fn}: x is empty")
    if not np.isfinite(x).all():
        raise ValueError(f"{fn}: x holds NaN or inf; calibrate on finite activations")
    return x


class MinMaxObserver:
    """The running min and max of everything seen."""

    name = "minmax"

    def __init__(self):
        self.lo, self.hi = np.inf, -np.inf

    def update(self, x):
        x = _finite(f"{type(self).__name__}.update", x)
        self.lo, self.hi = min(self.lo, float(x.min())), max(self.hi, float(x.max()))
        return self

    def range(self) -> tuple[float, float]:
        if self.lo > self.hi:
            raise RuntimeError(f"{type(self).__name__}: no values seen; call update before qparams")
        return self.lo, self.hi

    def qparams(self, qmin=0, qmax=255) -> tuple[float, int]:
        return affine.choose_qparams(*self.range(), qmin, qmax)


class MovingAverageMinMaxObserver(MinMaxObserver):
    """``lo += c (batch_lo - lo)``, ``hi += c (batch_hi - hi)``, the first batch taken as is."""

    name = "moving-average"

    def __init__(self, averaging_constant=0.01):
        super().__init__()
        if not 0 < averaging_constant <= 1:
            raise ValueError(f"averaging_constant must be in (0, 1], got {averaging_constant}")
        self.c = float(averaging_constant)

    def update(self, x):
        x = _finite(f"{type(self).__name__}.update", x)
        lo, hi = float(x.min()), float(x.max())
        if self.lo > self.hi:
            self.lo, self.hi = lo, hi
        else:
            self.lo += self.c * (lo - self.lo)
            self.hi += self.c * (hi - self.hi)
        return self


class HistogramObserver(MinMaxObserver):
    """A histogram of ``bins`` bins over the range seen (rebinned when a batch widens it), and the
    clipping range of least expected squared error (see the module's docstring)."""

    name = "histogram"

    def __init__(self, bins=2048, candidates=64):
        super().__init__()
        self.bins, self.candidates = int(bins), int(candidates)
        self.counts = np.zeros(self.bins)

    def _edges(self, lo, hi):
        return np.linspace(lo, hi, self.bins + 1)

    def update(self, x):
        x = _finite(f"{type(self).__name__}.update", x).astype(np.float64).ravel()
        lo, hi = min(self.lo, x.min(), 0.0), max(self.hi, x.max(), 0.0)
        if hi == lo:
            hi = lo + affine.EPS
        if self.lo <= self.hi and (lo, hi) != (self.lo, self.hi):
            # rebin the old counts into the wider range, each at its bin's centre
            old = self._edges(self.lo, self.hi)
            centres = (old[:-1] + old[1:]) / 2
            self.counts = np.histogram(centres, self._edges(lo, hi), weights=self.counts)[0]
        self.lo, self.hi = lo, hi
        self.counts = self.counts + np.histogram(x, self._edges(lo, hi))[0]
        return self

    def qparams(self, qmin=0, qmax=255) -> tuple[float, int]:
        lo, hi = self.clipping_range(qmin, qmax)
        return affine.choose_qparams(lo, hi, qmin, qmax)

    def clipping_range(self, qmin=0, qmax=255) -> tuple[float, float]:
        """The [lo, hi] (each on a bin edge, real 0 inside) of least expected squared error.

        Candidate ends are bin edges spaced geometrically from the zero bin out to the extremes
        (fine near the bulk, coarse among outliers)."""
        self.range()
        edges = self._edges(self.lo, self.hi)
        centres = (edges[:-1] + edges[1:]) / 2
        zero = int(np.clip(np.searchsorted(edges, 0.0), 0, self.bins))

        def ends(n):  # offsets 0..n from the zero edge, geometric
            return (
                np.unique(np.rint(np.geomspace(1, n + 1, self.candidates)) - 1).astype(int)
                if n
                else np.zeros(1, int)
            )

        los = np.minimum(edges[zero - ends(zero)], 0.0)  # (L,)
        his = np.maximum(edges[zero + ends(self.bins - zero)], 0.0)  # (H,)
        best = (np.inf, self.lo, self.hi)
        for lo in los:
            # each candidate's qparams as choose_qparams makes them, then every bin centre's error
            scale = np.maximum((his - lo) / (qmax - qmin), affine.EPS)[:, None]  # (H, 1)
            zp = np.clip(qmin - np.rint(lo / scale), qmin, qmax)
            q = np.clip(np.rint(centres / scale) + zp, qmin, qmax)  # (H, bins)
            total = ((centres - (q - zp) * scale) ** 2) @ self.counts  # (H,)
            j = int(np.argmin(total))
            if total[j] < best[0]:
                best = (total[j], float(lo), float(his[j]))
        return best[1], best[2]


OBSERVERS = {cls.name: cls for cls in (MinMaxObserver, MovingAverageMinMaxObserver, HistogramObserver)}
