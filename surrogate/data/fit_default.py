"""Fit and cross-validate the shipped default model on the shipped default dataset.

Run from the repository root (after ``make_default.sh`` built the dataset)::

    python surrogate/data/fit_default.py

Writes ``surrogate/data/default_model.npz`` (378 terms: s=5, d=2, log term,
interactions) and ``surrogate/data/default_model_cv.json`` with the
image-based 2-fold CV (2 repeats) 1 − R² and fractional RMS.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from surrogate.imaging.convolution import ConvolutionParameters  # noqa: E402
from surrogate.training.datasets import read_dataset  # noqa: E402
from surrogate.imaging.model import PolynomialSurrogate, save_model  # noqa: E402
from surrogate.training.validation import cross_validate  # noqa: E402


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    ds = read_dataset(HERE / "default_dataset.npz")
    conv, ms = ds.convolution_images, ds.multislice_images
    elements = sorted({s for a in ds.atoms for s in a.get_chemical_symbols()})
    template = PolynomialSurrogate(size=5, degree=2, log_term=True, interactions=True,
                                   convolution=ConvolutionParameters.from_dict(ds.meta["convolution"]))
    t0 = time.perf_counter()
    cv = cross_validate(template, conv, ms, scheme="image", folds=2, repeats=2, seed=0)
    t_cv = time.perf_counter() - t0
    t0 = time.perf_counter()
    model = PolynomialSurrogate(**template.get_params()).fit(
        conv, ms, elements=elements,
        provenance={"dataset": "surrogate/data/default_dataset.npz", "dataset_command": ds.meta["provenance"]["command"],
                    "made_by": "surrogate/data/fit_default.py"})
    t_fit = time.perf_counter() - t0
    save_model(model, HERE / "default_model.npz")
    report = {"n_terms": model.n_terms, "n_images": len(ds), "cv": cv.to_dict(), "fit_seconds": round(t_fit, 1),
              "cv_seconds": round(t_cv, 1), "train_one_minus_r2": 1.0 - model.score(conv, ms)}
    (HERE / "default_model_cv.json").write_text(json.dumps(report, indent=1, default=float) + "\n")
    print(f"default model: {model.n_terms} terms; image 2-fold CV (2 repeats) 1-R2 = {cv.one_minus_r2:.4f}, "
          f"fractional RMS = {cv.frms:.4f}; fit {t_fit:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
