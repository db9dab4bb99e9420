"""What both packages share: the exception family, atomic file writes, JSON out, figures, neighbour counts,
reading a structure file, image files (:mod:`~surrogate.common.imagefiles`: the one reader and writer of
image arrays)."""

from surrogate.common.atomic import atomic_path, atomic_write_bytes, atomic_write_text, atomic_write_with
from surrogate.common.errors import InputError, NotFittedError, StemRefineError
from surrogate.common.geometry import coordination_numbers
from surrogate.common.imagefiles import (IMAGE_SUFFIXES, ImageFile, image_file_errors, read_image_array,
                                       read_image_file, read_image_metadata, to_angstrom, write_image)
from surrogate.common.jsonio import dumps, json_default, print_json, write_json
from surrogate.common.plots import image_panels, parity_plot, save_figure, sweep_plot
from surrogate.common.structures import read_structure

__all__ = ["IMAGE_SUFFIXES", "ImageFile", "InputError", "NotFittedError", "StemRefineError", "atomic_path", "atomic_write_bytes",
           "atomic_write_text", "atomic_write_with", "coordination_numbers", "dumps", "image_panels",
           "image_file_errors", "json_default", "parity_plot", "print_json", "read_image_array", "read_image_file",
           "read_image_metadata", "read_structure", "save_figure", "sweep_plot", "to_angstrom", "write_image", "write_json"]
