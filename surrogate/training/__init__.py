"""From ground truth to a fitted model: training data and validation.

* :mod:`~surrogate.training.pairs`: paired convolution / multislice image folders (the paper's files;
  each image read by :func:`surrogate.common.read_image_array`).
* :mod:`~surrogate.training.datasets`: the dataset file (pairs, structures, grids; npz + JSON, no pickle).
* :mod:`~surrogate.training.builder`: generate particles, simulate them on Dask, write a dataset (resumable).
* :mod:`~surrogate.training.validation`: cross-validation (image / block / pixel folds), 1−R², FRMS, sweeps.
* :mod:`~surrogate.training.discrepancy`: the model's own error from out-of-fold residuals (σ vs intensity,
  correlation area), stored in the model file for the refinement's noise model.
"""

from surrogate.training.builder import build_dataset, load_spec
from surrogate.training.datasets import Dataset, read_dataset, write_dataset
from surrogate.training.discrepancy import calibrate_discrepancy, residual_images
from surrogate.training.pairs import pair_folders, read_pairs
from surrogate.training.validation import cross_validate, pooled_metrics, sweep

__all__ = ["Dataset", "build_dataset", "calibrate_discrepancy", "cross_validate", "load_spec", "pair_folders", "pooled_metrics", "read_dataset", "read_pairs", "residual_images", "sweep", "write_dataset"]
