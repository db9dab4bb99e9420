"""refine.cost."""

from refine.cost.energy import make_calculator
from refine.cost.fitness import Fitness, fit_intensity_map
from refine.cost.image_forces import CostCalculator, ImageTerm

__all__ = ["CostCalculator", "Fitness", "ImageTerm", "fit_intensity_map", "make_calculator"]
