"""refine.analysis."""

from refine.analysis.compare import compare_structures, plot_comparison
from refine.analysis.ensemble import build_ensemble, write_atoms, write_ensemble
from refine.analysis.image_comparison import compare_with_image, plot_image_comparison

__all__ = ["build_ensemble", "compare_structures", "compare_with_image", "plot_comparison", "plot_image_comparison", "write_atoms", "write_ensemble"]
