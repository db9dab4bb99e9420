"""The difference image (simulated − experimental) that guides image-guided moves.

* :class:`FitnessDifference`: ``difference(atoms) -> (sim − exp, grid)``
  from a :class:`refine.cost.fitness.Fitness`, in the atoms' own frame.
* :func:`smoothed_difference`: that image smoothed by an atom-sized
  Gaussian, and a sampler that reads it under atoms or sites.

Used by :class:`refine.search.operators.ImageGuidedMutation` and
:func:`refine.search.sweeps.image_guided_sweep`. Lengths in Å.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["FitnessDifference", "smoothed_difference"]


class FitnessDifference:
    """``difference(atoms) -> (sim − exp, grid)`` for the image-guided mutation, from a Fitness.

    Uses :meth:`refine.cost.fitness.Fitness.image_terms` (for the alignment shift
    d, Å, that puts the atoms on the image) and
    :meth:`~refine.cost.fitness.Fitness.difference_image` (exp − aligned sim, NaN
    where masked). The returned grid is the image's grid moved by −d, i.e.
    in the atoms' own frame. Picklable when the fitness is.
    """

    def __init__(self, fitness):
        self.fitness = fitness

    def __call__(self, atoms):
        from surrogate.imaging import ProbeGrid

        _, _, _, shift = self.fitness.image_terms(atoms)
        diff = -np.asarray(self.fitness.difference_image(atoms), dtype=float)
        g = self.fitness.image.grid
        grid = ProbeGrid(origin=(g.origin[0] - shift[0], g.origin[1] - shift[1]), shape=g.shape,
                         pixel_size=g.pixel_size)
        return diff, grid


class _PixelSampler:
    """``sample(points) -> values``: an image on a :class:`surrogate.ProbeGrid` read at the nearest pixel of each x, y."""

    def __init__(self, image, grid):
        self.image = image
        self.grid = grid

    def __call__(self, points) -> np.ndarray:
        pts = np.asarray(points, dtype=float).reshape(-1, np.shape(points)[-1])
        dx = self.grid.pixel_size
        x0, y0 = self.grid.origin
        ii = np.clip(np.rint((pts[:, 0] - x0) / dx).astype(int), 0, self.image.shape[0] - 1)
        jj = np.clip(np.rint((pts[:, 1] - y0) / dx).astype(int), 0, self.image.shape[1] - 1)
        return self.image[ii, jj]


def smoothed_difference(difference: Callable, atoms, smooth: float):
    """The simulated minus the experimental image of ``atoms``, smoothed, and a sampler of it.

    ``difference(atoms) -> (diff, grid)`` (e.g. a :class:`FitnessDifference`);
    NaN (masked) pixels count as 0. ``smooth`` (Å, 0: none) is the σ of a
    Gaussian applied first: a matched filter for atom-sized blobs (a missing
    or extra atom is a PSF-sized blob in the difference, pixel noise is not).
    Returns ``(diff, sample)``: the smoothed image, shape ``grid.shape``, and
    ``sample(points) -> values`` at the nearest pixel of each point's x, y
    (``sample.grid`` is the grid).
    """
    diff, grid = difference(atoms)
    diff = np.nan_to_num(np.asarray(diff, dtype=float), nan=0.0, posinf=0.0, neginf=0.0)
    if smooth > 0:
        from scipy.ndimage import gaussian_filter

        diff = gaussian_filter(diff, smooth / grid.pixel_size, mode="constant")
    return diff, _PixelSampler(diff, grid)
