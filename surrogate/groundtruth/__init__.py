"""surrogate.groundtruth."""

from surrogate.groundtruth.multislice import HAADFParameters, haadf_image
from surrogate.groundtruth.particles import FAMILIES, energy_calculator, make_particle

__all__ = ["FAMILIES", "HAADFParameters", "energy_calculator", "haadf_image", "make_particle"]
