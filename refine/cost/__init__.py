"""The refinement's cost C = E + α·χ² of a candidate structure against an experimental image.

In data-flow order:

* :mod:`~refine.cost.noise`: noise models → per-pixel χ² weights 1/σ² (estimated, uniform, map, Poisson).
* :mod:`~refine.cost.render`: :class:`BoxRenderer`, the surrogate image of a candidate on the
  experimental grid, drawn only on the box its atoms reach (the hot path).
* :mod:`~refine.cost.kernels`: the Numba kernels of the fit: normal-equation sums, closed-form map,
  sub-pixel shift, Gauss–Newton search, cross-correlation peak.
* :mod:`~refine.cost.alignment`: :class:`Aligner` (intensity map a·I + b and sub-pixel shift of a
  rendered box) and :func:`fit_intensity_map`.
* :mod:`~refine.cost.energy`: the energy term E (asap3/ASE EMT or another ASE calculator), eV.
* :mod:`~refine.cost.fitness`: :class:`Fitness`, C = E + α·χ² of a structure (α calibration, domain
  warning, DEAP ``evaluate``), and :class:`FitnessResult`.
* :mod:`~refine.cost.image_forces`: −α·∂χ²/∂r, and :class:`CostCalculator`, the ASE calculator of C
  that relaxes offspring.
"""

from refine.cost.alignment import fit_intensity_map
from refine.cost.energy import make_calculator
from refine.cost.fitness import Fitness, FitnessResult
from refine.cost.image_forces import CostCalculator, ImageTerm
from refine.cost.noise import estimate_noise, noise_weights

__all__ = ["CostCalculator", "Fitness", "FitnessResult", "ImageTerm", "estimate_noise", "fit_intensity_map",
           "make_calculator", "noise_weights"]
