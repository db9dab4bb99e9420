"""Fast approximate HAADF-STEM images (Combs et al., Adv. Struct. Chem. Imaging 5, 2, 2019).

Data flow: ``ase.Atoms`` → :func:`convolution_image` on a :class:`ProbeGrid`
→ input-pixel-grid features (:mod:`surrogate.features`) → fitted
:class:`PolynomialSurrogate` → surrogate image. Ground truth for fitting comes
from abTEM multislice/PRISM (:mod:`surrogate.multislice`) of generated
particles (:mod:`surrogate.particles`), stored in dataset files
(:mod:`surrogate.datasets`).
"""

from .convolution import COMBS2019_CROSS_SECTION, ConvolutionParameters, atom_weights, convolution_image
from .exceptions import InputError, NotFittedError, SurrogateError
from .grid import ProbeGrid

__all__ = [
    "ProbeGrid",
    "ConvolutionParameters",
    "convolution_image",
    "atom_weights",
    "COMBS2019_CROSS_SECTION",
    "SurrogateError",
    "InputError",
    "NotFittedError",
]
