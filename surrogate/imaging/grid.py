"""The probe grid: where each image pixel sits in Å.

Convention shared by every module (convolution, multislice, refinement):
``image[i, j]`` is the intensity with the probe at

    x = origin[0] + i * pixel_size,   y = origin[1] + j * pixel_size   (Å)

so the first array axis is x, the second is y (abTEM's convention), the beam
travels along z, and pixel ``(0, 0)`` is the probe *at* ``origin``: pixel
values are point samples at probe positions, not averages over a square.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from surrogate.common import InputError

__all__ = ["ProbeGrid", "DEFAULT_PIXEL_SIZE", "DEFAULT_MARGIN"]

#: Å; the paper's (and its data's) pixel size.
DEFAULT_PIXEL_SIZE = 0.1
#: Å of vacuum around a particle's projected extent on a default grid.
DEFAULT_MARGIN = 4.0


@dataclass(frozen=True)
class ProbeGrid:
    """A rectangular grid of probe positions.

    Parameters
    ----------
    origin : (float, float)
        Probe position of pixel ``(0, 0)`` in Å, ``(x0, y0)``.
    shape : (int, int)
        Number of pixels along x and y.
    pixel_size : float
        Probe step in Å (square pixels).
    """

    origin: tuple[float, float]
    shape: tuple[int, int]
    pixel_size: float = DEFAULT_PIXEL_SIZE

    def __post_init__(self):
        if not np.isfinite(self.pixel_size) or self.pixel_size <= 0:
            raise InputError(f"pixel size must be a positive number of Å, got {self.pixel_size!r}")
        shape = tuple(int(n) for n in self.shape)
        if len(shape) != 2 or min(shape) < 1:
            raise InputError(f"a probe grid needs a 2-D shape of at least 1x1 pixels, got {self.shape!r}")
        origin = tuple(float(v) for v in self.origin)
        if len(origin) != 2 or not np.all(np.isfinite(origin)):
            raise InputError(f"grid origin must be two finite numbers (Å), got {self.origin!r}")
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "origin", origin)
        object.__setattr__(self, "pixel_size", float(self.pixel_size))

    @classmethod
    def around(cls, atoms, pixel_size: float = DEFAULT_PIXEL_SIZE, margin: float = DEFAULT_MARGIN) -> "ProbeGrid":
        """The smallest grid covering the atoms' (x, y) extent plus ``margin`` Å on every side."""
        pos = np.asarray(atoms.positions, dtype=float)
        if len(pos) == 0:
            raise InputError("cannot place a probe grid around a structure with no atoms")
        lo = pos[:, :2].min(axis=0) - margin
        hi = pos[:, :2].max(axis=0) + margin
        shape = np.floor((hi - lo) / pixel_size).astype(int) + 1
        return cls(origin=(lo[0], lo[1]), shape=(shape[0], shape[1]), pixel_size=pixel_size)

    @classmethod
    def like(cls, image, pixel_size: float = DEFAULT_PIXEL_SIZE, origin=(0.0, 0.0)) -> "ProbeGrid":
        """The grid of an existing image (its shape), with the given calibration."""
        return cls(origin=tuple(origin), shape=np.shape(image)[:2], pixel_size=pixel_size)

    def padded(self, pixels: int) -> "ProbeGrid":
        """This grid grown by ``pixels`` on every side (the surrogate's (s-1)/2 border)."""
        p = int(pixels)
        return ProbeGrid(
            origin=(self.origin[0] - p * self.pixel_size, self.origin[1] - p * self.pixel_size),
            shape=(self.shape[0] + 2 * p, self.shape[1] + 2 * p),
            pixel_size=self.pixel_size,
        )

    @property
    def x(self) -> np.ndarray:
        """Probe x positions (Å), shape ``(shape[0],)``."""
        return self.origin[0] + self.pixel_size * np.arange(self.shape[0])

    @property
    def y(self) -> np.ndarray:
        """Probe y positions (Å), shape ``(shape[1],)``."""
        return self.origin[1] + self.pixel_size * np.arange(self.shape[1])

    @property
    def extent(self) -> tuple[float, float]:
        """Scanned lengths (Å) along x and y, ``shape * pixel_size``."""
        return (self.shape[0] * self.pixel_size, self.shape[1] * self.pixel_size)

    def to_dict(self) -> dict:
        return {"origin": list(self.origin), "shape": list(self.shape), "pixel_size": self.pixel_size}

    @classmethod
    def from_dict(cls, d: dict) -> "ProbeGrid":
        return cls(origin=tuple(d["origin"]), shape=tuple(d["shape"]), pixel_size=d["pixel_size"])
