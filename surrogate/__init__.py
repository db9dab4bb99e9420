"""Fast approximate HAADF-STEM images (Combs et al., Adv. Struct. Chem. Imaging 5, 2, 2019).

Data flow: ``ase.Atoms`` → :func:`convolution_image` on a :class:`ProbeGrid`
→ input-pixel-grid features (:mod:`surrogate.imaging.features`) → fitted
:class:`PolynomialSurrogate` → surrogate image. Ground truth for fitting comes
from abTEM multislice/PRISM (:mod:`surrogate.groundtruth.multislice`) of generated
particles (:mod:`surrogate.groundtruth.particles`), stored in dataset files
(:mod:`surrogate.training.datasets`).
"""

from surrogate.imaging import COMBS2019_CROSS_SECTION, ConvolutionParameters, atom_weights, convolution_image
from surrogate.common import InputError, NotFittedError, StemRefineError
from surrogate.training import Dataset, read_dataset, write_dataset
from surrogate.imaging import ProbeGrid
from surrogate.imaging import PolynomialSurrogate, load_model, save_model
from surrogate.groundtruth import HAADFParameters, haadf_image
from surrogate.groundtruth import energy_calculator, make_particle
from surrogate.training import cross_validate, pooled_metrics


def default_model_path():
    """Path of the model file shipped inside the package (``surrogate/data/default_model.npz``)."""
    from importlib.resources import files

    return files(__name__).joinpath("data", "default_model.npz")


def default_model() -> PolynomialSurrogate:
    """The shipped default Pt model (378 terms; see README "Shipped default")."""
    path = default_model_path()
    if not path.is_file():
        raise InputError(f"the default model {path} is missing from this installation; pass --model FILE")
    return load_model(path)

__all__ = [
    "Dataset",
    "read_dataset",
    "write_dataset",
    "HAADFParameters",
    "haadf_image",
    "energy_calculator",
    "make_particle",
    "cross_validate",
    "pooled_metrics",
    "build_dataset",
    "PolynomialSurrogate",
    "load_model",
    "save_model",
    "default_model",
    "default_model_path",
    "ProbeGrid",
    "ConvolutionParameters",
    "convolution_image",
    "atom_weights",
    "COMBS2019_CROSS_SECTION",
    "StemRefineError",
    "InputError",
    "NotFittedError",
]


def __getattr__(name):
    # The Dask builder is imported on demand (Dask is heavy).
    if name == "build_dataset":
        from surrogate.training import build_dataset

        return build_dataset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
