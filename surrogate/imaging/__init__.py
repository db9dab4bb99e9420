"""From atoms to a surrogate image, and back to forces (the hot path of every refinement).

In data-flow order:

* :mod:`~surrogate.imaging.grid`: :class:`ProbeGrid`, the probe positions every image uses
  (``image[i, j]`` is the probe at ``(x0 + i·Δ, y0 + j·Δ)``, Å).
* :mod:`~surrogate.imaging.convolution`: the convolution image Σ κ·Z^1.7·G_σ(r − rᵢ) (Numba).
* :mod:`~surrogate.imaging.features`: the s×s input pixel grid's polynomial terms (paper Eq. 5–8).
* :mod:`~surrogate.imaging.kernels`: fused Numba prediction kernels (no feature matrix).
* :mod:`~surrogate.imaging.model`: :class:`PolynomialSurrogate` (fit / predict / score) and its
  pickle-free model file.
* :mod:`~surrogate.imaging.discrepancy`: :class:`ModelDiscrepancy`, the model's own error (σ vs
  intensity, correlation area) that its file carries for the refinement's noise model.
* :mod:`~surrogate.imaging.adjoint`: ∂χ²/∂(convolution image) and ∂χ²/∂(atom positions), the
  image forces of the refinement.
"""

from surrogate.imaging.adjoint import SurrogateGradient, positions_vjp
from surrogate.imaging.convolution import (COMBS2019_CROSS_SECTION, CUTOFF_SIGMAS, ConvolutionParameters, atom_weights,
                                            convolution_image, scratch_rows, splat_gaussians)
from surrogate.imaging.discrepancy import ModelDiscrepancy
from surrogate.imaging.features import border, n_terms, term_tuples
from surrogate.imaging.grid import DEFAULT_MARGIN, DEFAULT_PIXEL_SIZE, ProbeGrid
from surrogate.imaging.model import PolynomialSurrogate, load_model, save_model

__all__ = ["COMBS2019_CROSS_SECTION", "CUTOFF_SIGMAS", "ConvolutionParameters", "DEFAULT_MARGIN", "DEFAULT_PIXEL_SIZE", "ModelDiscrepancy", "PolynomialSurrogate", "ProbeGrid", "SurrogateGradient", "atom_weights", "border", "convolution_image", "load_model", "n_terms", "positions_vjp", "save_model", "scratch_rows", "splat_gaussians", "term_tuples"]
