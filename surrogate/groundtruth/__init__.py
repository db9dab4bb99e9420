"""Ground truth that the surrogate is fitted to and judged against.

* :mod:`~surrogate.groundtruth.multislice`: abTEM frozen-phonon multislice / PRISM HAADF images on a
  :class:`~surrogate.imaging.grid.ProbeGrid` (the paper's microscope by default; CPU, or GPU via CuPy).
* :mod:`~surrogate.groundtruth.particles`: nanoparticle generators (``ase.cluster`` shapes, disordered,
  melt-and-quench) with exact atom counts, relaxed with EMT or the Pt–Mo EAM.
* :mod:`~surrogate.groundtruth.eam`: the Zhou–Johnson–Wadley EAM for Pt–Mo (an ASE calculator).
"""

from surrogate.groundtruth.multislice import HAADFParameters, haadf_image
from surrogate.groundtruth.particles import FAMILIES, energy_calculator, make_particle

__all__ = ["FAMILIES", "HAADFParameters", "energy_calculator", "haadf_image", "make_particle"]
