"""refine.io."""

from refine.io.images import ExperimentalImage, read_image, read_sigma_map, resample, with_mask

__all__ = ["ExperimentalImage", "read_image", "read_sigma_map", "resample", "with_mask"]
