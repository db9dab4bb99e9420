"""After a refinement: how close is it, how certain, and does it reproduce the image?

In data-flow order:

* :mod:`~refine.analysis.align`: rigid alignment (rotation, mirror z → −z, translation) and one-to-one
  atom assignment of two structures (Kabsch, rotation scans, robust loss): :func:`align_structures`.
* :mod:`~refine.analysis.columns`: atom counts of the projected columns along the beam, truth vs refined.
* :mod:`~refine.analysis.cross_sections`: atoms per projected column counted from the image's scattering
  cross-sections against a library calibrated with the surrogate (:func:`column_count_table`).
* :mod:`~refine.analysis.count_files`: ``counts.csv`` and the overlay ``counts.png`` of a count table
  (:func:`write_counts`).
* :mod:`~refine.analysis.atom_number`: the number of atoms behind an image from its integrated intensity
  (:func:`estimate_atom_number`).
* :mod:`~refine.analysis.comparison`: a refined structure against the truth: RMSD, fraction of atoms
  within 0.3/0.5/1.0 Å, column counts, coordination numbers (:func:`compare_structures`).
* :mod:`~refine.analysis.ensemble`: refinements of one image from several seeds → consensus structure and
  per-atom spread (:func:`build_ensemble`, :func:`write_ensemble`).
* :mod:`~refine.analysis.image_comparison`: a refined structure's multislice (abTEM) image against the
  experimental image and the surrogate's (:func:`compare_with_image`).
* :mod:`~refine.analysis.plots`: the comparison figure (:func:`plot_comparison`) and the blank figure
  every analysis figure starts from.
"""

from refine.analysis.align import Alignment, align_structures
from refine.analysis.atom_number import AtomNumberEstimate, estimate_atom_number
from refine.analysis.count_files import COUNTS_HEADER, write_counts
from refine.analysis.cross_sections import CountTable, column_count_table
from refine.analysis.columns import ColumnCounts, column_counts
from refine.analysis.comparison import Comparison, CoordinationHistograms, compare_structures, coordination_numbers
from refine.analysis.ensemble import Ensemble, build_ensemble, plot_ensemble, write_atoms, write_ensemble
from refine.analysis.image_comparison import compare_with_image, plot_image_comparison
from refine.analysis.plots import plot_comparison

__all__ = ["Alignment", "AtomNumberEstimate", "COUNTS_HEADER", "ColumnCounts", "CountTable", "column_count_table",
           "estimate_atom_number", "write_counts", "Comparison", "CoordinationHistograms", "Ensemble", "align_structures",
           "build_ensemble", "column_counts", "compare_structures", "compare_with_image", "coordination_numbers",
           "plot_comparison", "plot_ensemble", "plot_image_comparison", "write_atoms", "write_ensemble"]
