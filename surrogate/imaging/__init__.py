"""surrogate.imaging."""

from surrogate.imaging.adjoint import SurrogateGradient, positions_vjp
from surrogate.imaging.convolution import COMBS2019_CROSS_SECTION, ConvolutionParameters, atom_weights, convolution_image
from surrogate.imaging.features import border, n_terms, term_tuples
from surrogate.imaging.grid import DEFAULT_MARGIN, DEFAULT_PIXEL_SIZE, ProbeGrid
from surrogate.imaging.model import PolynomialSurrogate, load_model, save_model

__all__ = ["COMBS2019_CROSS_SECTION", "ConvolutionParameters", "DEFAULT_MARGIN", "DEFAULT_PIXEL_SIZE", "PolynomialSurrogate", "ProbeGrid", "SurrogateGradient", "atom_weights", "border", "convolution_image", "load_model", "n_terms", "positions_vjp", "save_model", "term_tuples"]
