"""From ground truth to a fitted model: training data and validation.

* :mod:`~surrogate.training.pairs`: paired convolution / multislice image folders (the paper's files;
  each image read by :func:`surrogate.common.read_image_array`).
* :mod:`~surrogate.training.datasets`: the dataset file (pairs, structures, grids; npz + JSON, no pickle).
* :mod:`~surrogate.training.builder`: generate particles, simulate them on Dask, write a dataset (resumable).
* :mod:`~surrogate.training.validation`: cross-validation (image / block / pixel folds), 1−R², FRMS, sweeps.
"""

from surrogate.training.builder import build_dataset, load_spec
from surrogate.training.datasets import Dataset, read_dataset, write_dataset
from surrogate.training.pairs import pair_folders, read_pairs
from surrogate.training.validation import cross_validate, pooled_metrics, sweep

__all__ = ["Dataset", "build_dataset", "cross_validate", "load_spec", "pair_folders", "pooled_metrics", "read_dataset", "read_pairs", "sweep", "write_dataset"]
