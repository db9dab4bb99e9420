"""Fit and cross-validate the shipped default model on the shipped default dataset.

Run from the repository root (after ``make_default.sh`` built the dataset)::

    python surrogate/data/fit_default.py                  # refit, CV, calibrate the model error
    python surrogate/data/fit_default.py --recalibrate    # only the model error (coefficients kept)

Writes ``surrogate/data/default_model.npz`` (378 terms: s=5, d=2, log term,
interactions) and ``surrogate/data/default_model_cv.json`` with the
image-based 2-fold CV (2 repeats) 1 − R² and fractional RMS. The model file
carries the model's own error (σ vs intensity and correlation area,
:func:`surrogate.training.calibrate_discrepancy`) from the out-of-fold
residuals of the same 2-fold image CV (2 repeats, seed 0), for the
refinement's noise model.

``--recalibrate`` keeps the shipped coefficients and redoes only that
calibration: the normal equations are singular to working precision, so a
refit's minimum-norm coefficients differ between BLAS builds by up to 10 %
(its predictions by < 1e-7 of the beam), and a refit would change every
refinement's result in its last bits.
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
from surrogate.imaging.model import PolynomialSurrogate, load_model, save_model  # noqa: E402
from surrogate.training.validation import cross_validate  # noqa: E402
from surrogate.training.discrepancy import calibrate_discrepancy, residual_images  # noqa: E402


def calibrate(model, template, ds):
    """Attach the model error from the out-of-fold residuals of a 2-fold image CV (2 repeats, seed 0)."""
    predictions, residuals = residual_images(template, ds.convolution_images, ds.multislice_images,
                                             folds=2, repeats=2, seed=0)
    model.discrepancy_ = calibrate_discrepancy(
        predictions, residuals, atom_sigma=model.convolution_parameters.sigma,
        pixel_size=model.convolution_parameters.pixel_size,
        source=f"2-fold image CV (2 repeats, seed 0) of the {len(ds)} training images")
    return model


def recalibrate() -> int:
    """Redo the shipped model's error calibration, keeping its coefficients."""
    ds = read_dataset(HERE / "default_dataset.npz")
    model = calibrate(load_model(HERE / "default_model.npz"), PolynomialSurrogate(**load_model(
        HERE / "default_model.npz").get_params()), ds)
    save_model(model, HERE / "default_model.npz")
    report = json.loads((HERE / "default_model_cv.json").read_text())
    report["discrepancy"] = model.discrepancy_.to_dict()
    (HERE / "default_model_cv.json").write_text(json.dumps(report, indent=1, default=float) + "\n")
    print(f"default model error: correlation area {model.discrepancy_.correlation_area:.1f} px")
    return 0


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if "--recalibrate" in sys.argv[1:]:
        return recalibrate()
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
    calibrate(model, template, ds)
    save_model(model, HERE / "default_model.npz")
    report = {"n_terms": model.n_terms, "n_images": len(ds), "cv": cv.to_dict(), "fit_seconds": round(t_fit, 1),
              "cv_seconds": round(t_cv, 1), "train_one_minus_r2": 1.0 - model.score(conv, ms),
              "discrepancy": model.discrepancy_.to_dict()}
    (HERE / "default_model_cv.json").write_text(json.dumps(report, indent=1, default=float) + "\n")
    print(f"default model: {model.n_terms} terms; image 2-fold CV (2 repeats) 1-R2 = {cv.one_minus_r2:.4f}, "
          f"fractional RMS = {cv.frms:.4f}; fit {t_fit:.1f} s; model error: correlation area "
          f"{model.discrepancy_.correlation_area:.1f} px, σ at the brightest bin {model.discrepancy_.sigmas[-1]:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
