"""Experimental images in: from a microscope file to an image on the model's probe grid.

In data-flow order:

* :mod:`~refine.io.readers`: one file → its array, calibration (pixel size in Å, origin) and metadata;
  microscope formats through rosettasciio, plain arrays through :func:`surrogate.common.read_image_file`.
* :mod:`~refine.io.images`: :func:`read_image` → :class:`ExperimentalImage` (checked, calibrated,
  masked, cropped, offset, resampled to the model's Δ); :func:`read_sigma_map` (a noise σ map taken
  through the same crop and resampling), :func:`with_mask`, :func:`resample`.
* :mod:`~refine.io.preparation`: :func:`prepare_image` → the same, prepared from a raw microscope image
  (vacuum background, detector normalisation to the incident beam, automatic particle mask and crop),
  each step in ``metadata["preparation"]``; :func:`~refine.io.preparation_figure.plot_preparation` draws
  them (``preparation.png``).

Structure files are read by :func:`surrogate.common.read_structure`; the refinement's outputs are
written by :mod:`refine.workflows`.
"""

from refine.io.images import ExperimentalImage, read_image, read_sigma_map, resample, validate_image_array, with_mask
from refine.io.preparation import prepare_image
from refine.io.preparation_figure import plot_preparation
from refine.io.readers import read_file

__all__ = ["ExperimentalImage", "plot_preparation", "prepare_image", "read_file", "read_image", "read_sigma_map",
           "resample", "validate_image_array", "with_mask"]
