"""surrogate.training."""

from surrogate.training.builder import build_dataset, load_spec
from surrogate.training.datasets import Dataset, read_dataset, write_dataset
from surrogate.training.pairs import IMAGE_SUFFIXES, read_image, read_image_metadata, read_pairs, write_image
from surrogate.training.validation import cross_validate, pooled_metrics, sweep

__all__ = ["Dataset", "IMAGE_SUFFIXES", "build_dataset", "cross_validate", "load_spec", "pooled_metrics", "read_dataset", "read_image", "read_image_metadata", "read_pairs", "sweep", "write_dataset", "write_image"]
