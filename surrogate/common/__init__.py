"""surrogate.common."""

from surrogate.common.atomic import atomic_path, atomic_write_bytes, atomic_write_json, atomic_write_text, atomic_write_with
from surrogate.common.errors import InputError, NotFittedError, StemRefineError
from surrogate.common.plots import image_panels, parity_plot, save_figure, sweep_plot

__all__ = ["InputError", "NotFittedError", "StemRefineError", "atomic_path", "atomic_write_bytes", "atomic_write_json", "atomic_write_text", "atomic_write_with", "image_panels", "parity_plot", "save_figure", "sweep_plot"]
