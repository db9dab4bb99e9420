"""A refined structure against its image: multislice check of the refinement and of the surrogate.

The refinement only ever saw surrogate images. :func:`compare_with_image`
asks two questions about its answer:

* does a full multislice (abTEM, :func:`surrogate.groundtruth.multislice.haadf_image`)
  image of the refined structure reproduce the experimental image
  (``multislice_vs_image``)? — and, for reference, the surrogate image
  (``surrogate_vs_image``);
* how wrong is the surrogate on this very structure
  (``surrogate_vs_multislice``: the surrogate image against the multislice
  image of the same atoms, no intensity map, as the model was fitted)? And
  how much of that error is on pixels where the model extrapolates
  (``beyond_training_range``: the pixels whose s×s neighbourhood of the
  convolution image leaves the model's training range, and their share of
  the squared error)? A polynomial extrapolated beyond its range can fall,
  even below zero, where abTEM keeps rising: on the Au counted
  reconstruction (session 23) 0.13 % of the pixels held 36 % of the error.

Both simulated images are made on the experimental image's probe grid, with
the structure first moved in-plane onto the image by the fitness's
sub-pixel alignment (:class:`refine.cost.fitness.Fitness`, surrogate image). For
the comparisons with the experimental image, each simulated image goes
through the closed-form intensity map ``a·I + b`` over the valid pixels
(experimental units are arbitrary). Metrics (:func:`surrogate.training.validation.pooled_metrics`):
``one_minus_r2`` = Σ(y_pred − y)² / Σ(y − ȳ)² and ``frms`` = RMS error / σ(y)
(Combs et al. 2019, Eq. 4) over the valid pixels.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time

import numpy as np

from surrogate.common import InputError

__all__ = ["compare_with_image", "plot_image_comparison"]

log = logging.getLogger(__name__)


def _place(atoms, image):
    """Move the atoms in-plane onto the image when their centre is off the image grid."""
    grid = image.grid
    c = atoms.positions[:, :2].mean(axis=0)
    lo = np.array(grid.origin)
    hi = lo + (np.array(grid.shape) - 1) * grid.pixel_size
    if np.all(c >= lo) and np.all(c <= hi):
        return atoms
    target = np.array(image.centroid())
    log.info("structure centre (%.1f, %.1f) Å is off the image; moved to the image's centroid (%.1f, %.1f) Å",
             c[0], c[1], target[0], target[1])
    out = atoms.copy()
    out.positions[:, :2] += target - c
    return out


def compare_with_image(atoms, image, model, *, multislice: bool = True, method: str | None = None,
                       phonons: int | None = None, interpolation: int | None = None, device: str = "cpu",
                       seed=0, progress: bool = False) -> dict:
    """Simulate a refined structure and compare it with its experimental image.

    Parameters
    ----------
    atoms : ase.Atoms
        Refined structure (Å, beam along z), in the image's frame or near it.
    image : refine.io.images.ExperimentalImage
        Read with ``target_pixel_size`` equal to the model's pixel size.
    model : PolynomialSurrogate
        Fitted surrogate (its elements must cover the structure's).
    multislice : bool
        Also run abTEM (slow); otherwise only the surrogate is compared.
    method, phonons, interpolation : optional
        abTEM settings overriding :class:`surrogate.groundtruth.multislice.HAADFParameters`
        ("prism" or "multislice", frozen-phonon configurations, PRISM factor).
    device : {"cpu", "gpu"}
    seed : int
        Frozen-phonon seed.
    progress : bool
        Show abTEM's progress bar (on stderr).

    Returns
    -------
    dict
        ``surrogate_vs_image``, and with ``multislice`` also
        ``multislice_vs_image`` and ``surrogate_vs_multislice``: each a dict
        of ``one_minus_r2``, ``frms``, ``rmse``, ``n_pixels`` (plus ``scale``
        and ``offset`` of the intensity map for the image comparisons);
        ``surrogate_vs_multislice`` also holds ``beyond_training_range``:
        ``{"pixels", "error_share"}`` (fractions of the valid pixels and of
        their summed squared error);
        ``shift`` (Å) applied to the structure; ``multislice`` settings and
        ``multislice_seconds``; and ``images`` (not JSON: the arrays
        ``experimental``, ``surrogate``, ``multislice``, mapped to the
        experimental units).
    """
    from surrogate.training import pooled_metrics

    from refine.cost import Fitness, fit_intensity_map

    if len(atoms) == 0:
        raise InputError("the refined structure has no atoms")
    if hasattr(model, "check_elements"):
        model.check_elements(atoms.get_chemical_symbols())
    atoms = _place(atoms, image)
    fitness = Fitness(model, image, alpha=1.0, calculator=None, noise="estimate", align="auto")
    result = fitness.evaluate(atoms)
    moved = fitness.aligned(atoms, result)
    grid = image.grid
    mask = image.mask
    w = mask.astype(float)
    exp = np.asarray(image.data, dtype=float)

    def versus_image(sim):
        a, b, _ = fit_intensity_map(sim, exp, w)
        mapped = a * sim + b
        m = pooled_metrics(exp[mask], mapped[mask])
        m.update(scale=a, offset=b)
        return m, mapped

    sur = model.simulate(moved, grid)
    out = {"shift": [float(result.shift[0]), float(result.shift[1])], "n_atoms": len(atoms)}
    out["surrogate_vs_image"], sur_mapped = versus_image(sur)
    images = {"experimental": np.where(mask, exp, np.nan), "surrogate": sur_mapped}
    if multislice:
        from surrogate.groundtruth import haadf_image
        from surrogate.training.modelinfo import model_haadf_parameters

        overrides = {k: v for k, v in (("method", method), ("phonons", phonons), ("interpolation", interpolation))
                     if v is not None}
        # the model's own microscope (voltage, convergence, Cs, detector, source size, phonon amplitudes,
        # sampling); the accuracy settings (method, PRISM factor, phonons) stay the comparison's own
        params = model_haadf_parameters(model)
        if params is None:
            log.warning("the model records no microscope: the multislice image uses the paper's 200 kV settings")
        t0 = time.perf_counter()
        # abTEM's (Dask's) progress bar writes to stdout: keep stdout for results
        with contextlib.redirect_stdout(sys.stderr):
            ms = haadf_image(moved, grid, params, seed=seed, device=device, progress=progress, **overrides)
        out["multislice_seconds"] = time.perf_counter() - t0
        out["multislice"] = dict(overrides, device=device, seed=seed,
                                 microscope="the model's" if params is not None else "paper defaults (model unknown)")
        out["multislice_vs_image"], ms_mapped = versus_image(ms)
        out["surrogate_vs_multislice"] = pooled_metrics(ms[mask], sur[mask])
        out["surrogate_vs_multislice"]["beyond_training_range"] = _beyond_training_range(model, moved, grid, ms,
                                                                                          sur, mask)
        images["multislice"] = ms_mapped
    out["images"] = images
    return out


def _beyond_training_range(model, atoms, grid, multislice, surrogate, mask) -> dict | None:
    """Fractions of the valid pixels whose model inputs leave the training range, and of the squared error there.

    None for a model that records no training range.
    """
    from scipy.ndimage import maximum_filter, minimum_filter

    from surrogate.imaging import convolution_image

    lo, hi = getattr(model, "input_range_", (None, None))
    if lo is None or hi is None:
        return None
    conv = convolution_image(atoms, grid, model.convolution_parameters)
    size = int(getattr(model, "size", 1))
    # the polynomial of a pixel reads its s×s neighbourhood: one value beyond the range is enough to extrapolate
    beyond = (maximum_filter(conv, size=size, mode="nearest") > hi) | \
        (minimum_filter(conv, size=size, mode="nearest") < lo)
    err = (np.asarray(surrogate, float) - np.asarray(multislice, float)) ** 2
    total = float(err[mask].sum())
    return {"pixels": float(beyond[mask].mean()) if mask.any() else 0.0,
            "error_share": float(err[mask & beyond].sum() / total) if total > 0 else 0.0}


def plot_image_comparison(result: dict, path=None):
    """Experimental, surrogate and (when present) multislice images with their differences."""
    from refine.analysis.plots import new_figure
    from surrogate.common import save_figure

    imgs = result["images"]
    names = [k for k in ("surrogate", "multislice") if k in imgs]
    fig = new_figure((4 * (1 + 2 * len(names)) * 0.8, 3.6))
    axes = fig.subplots(1, 1 + 2 * len(names))
    exp = imgs["experimental"]
    vmin, vmax = np.nanpercentile(exp, [0.5, 99.5])
    axes[0].imshow(exp.T, origin="lower", cmap="gray", vmin=vmin, vmax=vmax)
    axes[0].set_title("experimental")
    for k, name in enumerate(names):
        sim = imgs[name]
        m = result[f"{name}_vs_image"]
        axes[1 + 2 * k].imshow(sim.T, origin="lower", cmap="gray", vmin=vmin, vmax=vmax)
        axes[1 + 2 * k].set_title(f"{name}\n1-R² {m['one_minus_r2']:.3g}, fRMS {m['frms']:.3g}", fontsize=9)
        diff = exp - sim
        lim = np.nanmax(np.abs(diff)) or 1.0
        axes[2 + 2 * k].imshow(diff.T, origin="lower", cmap="RdBu_r", vmin=-lim, vmax=lim)
        axes[2 + 2 * k].set_title(f"experimental − {name}", fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    if path is not None:
        save_figure(fig, path)
    return fig
