"""What a model file says about the surrogate's own error: :class:`ModelDiscrepancy`.

Calibrated from cross-validation residuals by
:func:`surrogate.training.calibrate_discrepancy` (where the method is
described) and stored in the model file
(:attr:`surrogate.imaging.PolynomialSurrogate.discrepancy_`); the refinement's
noise model adds it to the shot noise (:mod:`refine.cost.noise`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from surrogate.common import InputError

__all__ = ["ModelDiscrepancy"]


@dataclass(frozen=True)
class ModelDiscrepancy:
    """σ_model(I) and the correlation area A of a surrogate's error (see the module docstring).

    Attributes
    ----------
    intensities, sigmas : tuple of float
        σ_model (RMS residual) tabulated at the mean intensities of equal-count
        bins, both fractions of the incident beam, intensities increasing.
        Between them σ_model is interpolated linearly; below the first it is
        the first; above the last it grows in proportion to I.
    correlation_area : float
        A, pixels of the model's grid (≥ 1).
    correlation_length : float
        Å: the radius at which the residuals' autocorrelation falls to 1/2 (for the record).
    n_pixels : int
        Residual pixels the calibration used.
    source : str
        How it was calibrated (e.g. ``"2-fold image CV, 7 images"``).
    """

    intensities: tuple
    sigmas: tuple
    correlation_area: float
    correlation_length: float
    n_pixels: int
    source: str = "cross-validation"

    def sigma(self, intensity) -> np.ndarray:
        """σ_model at ``intensity`` (fraction of the incident beam; negative values count as 0), same shape."""
        i = np.asarray(intensity, dtype=float)
        x, y = np.asarray(self.intensities), np.asarray(self.sigmas)
        beyond = np.maximum(i, x[-1]) / x[-1] if x[-1] > 0 else 1.0
        return np.interp(i, x, y) * beyond

    def variance(self, intensity) -> np.ndarray:
        """A · σ_model(I)², the variance added to the noise's (fraction of the incident beam squared)."""
        return self.correlation_area * self.sigma(intensity) ** 2

    def to_dict(self) -> dict:
        d = asdict(self)
        d["intensities"], d["sigmas"] = list(self.intensities), list(self.sigmas)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelDiscrepancy":
        try:
            out = cls(intensities=tuple(float(v) for v in d["intensities"]),
                      sigmas=tuple(float(v) for v in d["sigmas"]), correlation_area=float(d["correlation_area"]),
                      correlation_length=float(d["correlation_length"]), n_pixels=int(d["n_pixels"]),
                      source=str(d.get("source", "cross-validation")))
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"model discrepancy record is incomplete or malformed: {exc}") from None
        x, y = np.asarray(out.intensities), np.asarray(out.sigmas)
        if (x.size < 1 or x.size != y.size or not np.all(np.isfinite(x)) or not np.all(y > 0)
                or np.any(np.diff(x) <= 0) or not out.correlation_area >= 1):
            raise InputError("model discrepancy needs increasing intensities, positive sigmas of the same length "
                             f"and correlation_area ≥ 1, got {d}")
        return out
