"""What both packages share: the exception family, atomic file writes, JSON out, figures, neighbour counts."""

from surrogate.common.atomic import atomic_path, atomic_write_bytes, atomic_write_text, atomic_write_with
from surrogate.common.errors import InputError, NotFittedError, StemRefineError
from surrogate.common.geometry import coordination_numbers
from surrogate.common.jsonio import dumps, json_default, print_json, write_json
from surrogate.common.plots import image_panels, parity_plot, save_figure, sweep_plot

__all__ = ["InputError", "NotFittedError", "StemRefineError", "atomic_path", "atomic_write_bytes",
           "atomic_write_text", "atomic_write_with", "coordination_numbers", "dumps", "image_panels",
           "json_default", "parity_plot", "print_json", "save_figure", "sweep_plot", "write_json"]
