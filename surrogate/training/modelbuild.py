"""A surrogate model for one microscope, in one call: particles → abTEM images → CV and model error → fit → model file.

:func:`build_model` chains what ``stem-refine dataset build``, ``fit``,
``cv`` and ``surrogate/data/fit_default.py`` do one after another, for the
microscope of :class:`BuildSettings`, and writes ONE model file whose
provenance carries the microscope, the build settings, the image-based
cross-validation (2-fold × 2 repeats) and, as every model file does, the
model-error calibration.

Stages (each announced with its number; finished stages are kept):

1. **particles**: :func:`surrogate.training.build_dataset` on Dask (a
   LocalCluster, an existing scheduler, or none), one progress step per
   particle, resumable per particle (``WORK/dataset.npz.work/``).
2. **validation**: out-of-fold residuals of the image-based 2-fold CV
   (2 repeats), giving both the pooled 1 − R² / fractional RMS and the
   model-error calibration (:func:`surrogate.training.residual_images`,
   :func:`surrogate.training.calibrate_discrepancy`), the same folds
   ``stem-refine cv --scheme image`` draws; kept in ``WORK/validation.json``.
3. **fit** on every image, then the model file is written atomically.

The work folder ``OUT.work/`` (next to the output) holds ``settings.json``;
a rerun with the same settings continues where the last one stopped, one
with other settings is refused.

Defaults (:data:`DEFAULTS`) aim at a model with CV 1 − R² ≤ 0.015 in ≤ 30
minutes on 2 cores. The shipped model's build measured PRISM f = 4 with 3
phonons at ≈ 94 s per phonon for particles of 158–233 atoms (1984 s for 7
particles, ``surrogate/data/default_dataset.npz`` provenance) and CV
1 − R² = 0.0106 on 7 images; fit, CV and calibration took ≈ 70 s. Six
particles of 120–200 atoms (four crystalline shapes, one disordered, one
amorphous) at the same f and phonons cost ≈ 6 × 3 × 75 s ≈ 23 min of
simulation, so ≈ 25 min in all; f = 8 would halve the simulation but adds
PRISM error (f = 4 is already 1 − R² = 0.001 against multislice, f = 2 0.0001);
fewer than 3 phonons leaves more frozen-phonon speckle in the targets.
``tests/benchmarks/bench_model_build.py`` measures the real build.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from surrogate.common import InputError, write_json
from surrogate.common.microscope import Microscope
from surrogate.groundtruth.particles import ROD_COLUMN_HEIGHTS

__all__ = ["BuildSettings", "DEFAULTS", "build_model", "build_spec", "particle_families", "psf_sigma",
           "detect_device", "work_dir_for_model"]

logger = logging.getLogger(__name__)

#: the defaults of ``stem-refine model build`` (module docstring for why)
DEFAULTS = {"particles": 6, "sizes": (120, 200), "interpolation": 4, "phonons": 3, "sampling": 0.1,
            "solute_fraction": 0.2}
#: families in the order particles are drawn: crystalline shapes first, then disorder
FAMILY_ORDER = ("cuboctahedron", "truncated_octahedron", "icosahedron", "decahedron", "disordered", "amorphous",
                "marks_decahedron", "amorphous")
#: the paper's microscope and PSF σ (Å), the reference of :func:`psf_sigma`
_PAPER = Microscope(voltage=200.0, convergence=24.5, source_size=0.88)
_PAPER_PSF_SIGMA = 0.38
_POLYNOMIAL = {"size": 5, "degree": 2, "log_term": True, "interactions": True}


@dataclass(frozen=True)
class BuildSettings:
    """What a model build makes: the microscope, the particles, the simulation, the polynomial.

    Parameters
    ----------
    microscope : Microscope
        Complete (every field known; defocus 0: the ground truth simulates a focused probe).
    elements : tuple of str
        The host element, and optionally one solute (``("Pt", "Ir")``).
    solute_fraction : float
        Fraction of the host's atoms replaced by the solute.
    sizes : (int, int)
        Atoms per particle, drawn per particle from [lo, hi].
    particles : int
        Number of particles (≥ 2: the cross-validation holds out whole images).
    rods : int
        Column rods added to them (``column_rod`` of
        :mod:`surrogate.groundtruth.particles`: a zone axis along the beam,
        ``rod_heights`` atoms per column, ``sizes`` atoms): for images of particles
        thicker than compact shapes of ``sizes`` atoms (≤ ~7 per column).
    rod_heights : (int, int)
        Atoms per column of the rods, drawn per rod from [lo, hi]. Columns
        longer than the probe's depth of focus are not a function of the
        convolution image: at 200 kV, 8–24 made the model worse everywhere
        (docs/benchmarks.md).
    sampling : float
        Probe step in Å of the training images: the model's pixel size.
    interpolation, phonons : int
        PRISM interpolation factor and frozen-phonon configurations.
    seed : int
        Particle k draws from ``default_rng([seed, k])``; CV folds from ``seed``.
    polynomial : dict
        :class:`surrogate.imaging.PolynomialSurrogate` hyper-parameters.
    depth_blur : float
        β of the convolution images (:class:`surrogate.imaging.ConvolutionParameters`;
        0: the paper's depth-blind image). Applied when fitting, to convolution
        images made again from the training structures, so the simulations in
        the work folder serve every β (and every polynomial).
    fit_source : str or None
        An image whose column widths give the source size (stage 0), when the
        microscope's source size is None.
    fit_source_pixel_size : float or None
        Å per pixel of that image, where its file has no calibration (or to override it).
    """

    microscope: Microscope
    elements: tuple = ("Pt",)
    solute_fraction: float = DEFAULTS["solute_fraction"]
    sizes: tuple = DEFAULTS["sizes"]
    particles: int = DEFAULTS["particles"]
    rods: int = 0
    rod_heights: tuple = ROD_COLUMN_HEIGHTS
    sampling: float = DEFAULTS["sampling"]
    interpolation: int = DEFAULTS["interpolation"]
    phonons: int = DEFAULTS["phonons"]
    seed: int = 0
    polynomial: dict = field(default_factory=lambda: dict(_POLYNOMIAL))
    depth_blur: float = 0.0
    fit_source: str | None = None
    fit_source_pixel_size: float | None = None

    def validate(self) -> "BuildSettings":
        """Raise :class:`InputError` with one line naming the first bad setting; return self."""
        from ase.data import atomic_numbers, reference_states

        m = self.microscope.validate()
        missing = m.missing()
        if self.fit_source is not None and "source_size" in missing:
            missing.remove("source_size")
        if missing:
            raise InputError(f"microscope setting(s) unknown: {', '.join(missing)}; give them as flags "
                             "(--voltage, --convergence, --detector, --cs, --defocus, --source-size) or a --preset")
        if m.defocus != 0:
            raise InputError(f"defocus {m.defocus:g} Å: the ground truth simulates a focused probe only (defocus 0)")
        if not 1 <= len(self.elements) <= 2:
            raise InputError(f"--elements takes a host element and at most one solute, got {','.join(self.elements)}")
        for e in self.elements:
            if e not in atomic_numbers:
                raise InputError(f"unknown element {e!r}")
        host = self.elements[0]
        if (reference_states[atomic_numbers[host]] or {}).get("symmetry") != "fcc":
            raise InputError(f"the particle generators build fcc metals; {host} is not fcc (put it second, as solute)")
        if not 0 <= self.solute_fraction <= 1:
            raise InputError(f"solute fraction must be in [0, 1], got {self.solute_fraction:g}")
        _check_atom_range(self.sizes, "--sizes must be MIN:MAX atoms")
        if int(self.particles) != self.particles or self.particles < 2:
            raise InputError(f"a model needs at least 2 particles (the CV holds out images), got {self.particles}")
        if int(self.rods) != self.rods or self.rods < 0:
            raise InputError(f"--rods must be a whole number >= 0, got {self.rods}")
        _check_atom_range(self.rod_heights, "--rod-heights must be MIN:MAX atoms per column")
        if not (math.isfinite(self.sampling) and self.sampling > 0):
            raise InputError(f"probe step (--sampling) must be > 0 Å, got {self.sampling:g}")
        if int(self.interpolation) != self.interpolation or self.interpolation < 1:
            raise InputError(f"PRISM interpolation must be a positive integer, got {self.interpolation}")
        if int(self.phonons) != self.phonons or self.phonons < 1:
            raise InputError(f"phonons must be a positive integer, got {self.phonons}")
        if not (math.isfinite(self.depth_blur) and 0 <= self.depth_blur < 1):
            raise InputError(f"--depth-blur must be in [0, 1) (Å of PSF width per Å of depth), got {self.depth_blur:g}")
        return self

    def to_dict(self) -> dict:
        d = asdict(self)
        d["microscope"] = self.microscope.to_dict()
        d["elements"], d["sizes"] = list(self.elements), list(self.sizes)
        return d


def particle_families(elements, n: int) -> list[str]:
    """The family of each of ``n`` particles: :data:`FAMILY_ORDER` cycled; crystalline only for a host
    without an interatomic potential (disordered and amorphous particles are relaxed with one)."""
    from surrogate.groundtruth.particles import CRYSTALLINE_FAMILIES, energy_calculator

    try:
        energy_calculator([elements[0]])
        order = FAMILY_ORDER
    except InputError:
        order = CRYSTALLINE_FAMILIES
    return [order[k % len(order)] for k in range(n)]


def psf_sigma(microscope: Microscope) -> float:
    """Convolution PSF σ (Å): the paper's 0.38 Å scaled by the probe's width relative to the paper's microscope.

    The width is √(σ_source² + (0.217 λ/α)²), the source Gaussian and the
    Gaussian of the Airy disc's FWHM (0.51 λ/α) in quadrature; it gives
    0.38 Å back for the paper's microscope. The polynomial corrects the
    rest; a σ near the image's keeps that correction small.
    """
    def width(m: Microscope) -> float:
        return math.hypot(m.source_size / 2.3548, 0.217 * _wavelength(m.voltage * 1e3) / (m.convergence * 1e-3))

    return round(_PAPER_PSF_SIGMA * width(microscope) / width(_PAPER), 4)


def _wavelength(energy: float) -> float:
    from surrogate.groundtruth.multislice import _wavelength as wl

    return wl(energy)


def _potential_sampling(energy: float, outer: float) -> float:
    # the coarsest potential sampling (Å, at most the paper-default 0.05) that simulates the detector's outer angle
    from surrogate.groundtruth.multislice import _sampling_for_angle

    return min(0.05, math.floor(0.98 * _sampling_for_angle(energy, outer) * 1e4) / 1e4)


def _check_atom_range(pair, what: str) -> None:
    """Raise :class:`InputError` ("``what`` with 2 <= MIN <= MAX, got lo:hi") unless ``pair`` is whole 2 <= lo <= hi."""
    lo, hi = pair
    if not (int(lo) == lo and int(hi) == hi and 2 <= lo <= hi):
        raise InputError(f"{what} with 2 <= MIN <= MAX, got {lo}:{hi}")


def detect_device() -> str:
    """"gpu" when CuPy sees a CUDA device (abTEM then simulates there), else "cpu"."""
    try:
        import cupy

        return "gpu" if cupy.cuda.runtime.getDeviceCount() > 0 else "cpu"
    except Exception:  # no CuPy, no driver, no device: all mean the CPU
        return "cpu"


def build_spec(settings: BuildSettings, device: str = "cpu") -> dict:
    """The :mod:`surrogate.training.builder` spec of a build (one particle table per particle)."""
    m = settings.microscope
    energy = m.voltage * 1e3
    sim = {"method": "prism", "interpolation": int(settings.interpolation), "phonons": int(settings.phonons),
           "energy": energy, "semiangle": m.convergence, "Cs": m.cs * 1e4, "detector": list(m.detector),
           "source_fwhm": m.source_size, "potential_sampling": _potential_sampling(energy, m.detector[1])}
    parts = []
    for family in particle_families(settings.elements, int(settings.particles)) + ["column_rod"] * int(settings.rods):
        p = {"family": family, "count": 1, "n_atoms": [int(v) for v in settings.sizes], "element": settings.elements[0]}
        if len(settings.elements) == 2:
            p.update(solute=settings.elements[1], solute_fraction=float(settings.solute_fraction))
        if family == "column_rod" and tuple(settings.rod_heights) != tuple(ROD_COLUMN_HEIGHTS):
            # only when not the default, so that a build from before this option resumes with its spec
            p["column_heights"] = [int(v) for v in settings.rod_heights]
        parts.append(p)
    return {"name": "model-build", "seed": int(settings.seed), "pixel_size": float(settings.sampling), "margin": 3.0,
            "device": device, "simulation": sim, "convolution": {"sigma": psf_sigma(m)}, "particles": parts}


def work_dir_for_model(out) -> str:
    """``OUT.work``: the build's work folder, next to the model file."""
    return os.fspath(out) + ".work"


def _say_default(msg: str) -> None:
    logger.info(msg)


def build_model(settings: BuildSettings, out, *, scheduler: str | None = None, workers: int = 1,
                threads: int | None = None, device: str = "auto", progress: bool = True,
                command: str | None = None, say=_say_default):
    """Build (or resume building) a model file for ``settings`` (module docstring).

    Parameters
    ----------
    out : path
        The model file (``.npz``); ``out.work/`` holds the stages' results.
    scheduler, workers, threads
        As :func:`surrogate.training.build_dataset`: None for a LocalCluster of
        ``workers`` processes, ``"synchronous"`` for none, or a scheduler address.
    device : {"auto", "cpu", "gpu"}
        abTEM's device; "auto" is :func:`detect_device`.
    progress : bool
        Per-particle progress bar (stderr).
    say : callable
        Receives one line per stage (the CLI prints them).

    Returns
    -------
    model : PolynomialSurrogate
        As written to ``out``.
    record : dict
        ``{"model", "work", "microscope", "cv", "source_fit", "seconds", "n_images"}``.
    """
    from surrogate.imaging import ModelDiscrepancy, PolynomialSurrogate, save_model
    from surrogate.imaging.convolution import ConvolutionParameters
    from surrogate.training import build_dataset, calibrate_discrepancy, pooled_metrics, read_dataset, residual_images

    settings.validate()
    if device == "auto":
        device = detect_device()
    out = os.fspath(out)
    if not out.endswith(".npz"):
        raise InputError(f"the model file must end in .npz, got {out!r}")
    work = work_dir_for_model(out)
    os.makedirs(work, exist_ok=True)
    first_fit = _check_settings(work, settings)
    seconds = {}
    t_all = time.perf_counter()

    source_fit = None
    if settings.microscope.source_size is None:
        t0 = time.perf_counter()
        say(f"stage 0/3: source size from the column widths of {settings.fit_source}")
        source_fit = _cached(os.path.join(work, "source.json"), lambda: _fit_source_stage(settings, device, threads))
        settings = _with_source(settings, source_fit["source_size"])
        say(f"  source size {source_fit['source_size']:.2f} Å FWHM "
            f"({source_fit['low']:.2f}–{source_fit['high']:.2f}; {source_fit['n_columns']} columns)")
        seconds["source"] = round(time.perf_counter() - t0, 1)

    spec = build_spec(settings, device)
    dataset_path = os.path.join(work, "dataset.npz")
    t0 = time.perf_counter()
    say(f"stage 1/3: {settings.particles} particles of {settings.sizes[0]}–{settings.sizes[1]} atoms, "
        f"abTEM PRISM f={settings.interpolation}, {settings.phonons} phonons on {device} "
        f"({settings.microscope.describe()})")
    if os.path.exists(dataset_path):
        ds = read_dataset(dataset_path)
    else:
        ds = build_dataset(spec, dataset_path, scheduler=scheduler, n_workers=workers, threads_per_task=threads,
                           progress=progress, command=command)
    seconds["particles"] = round(time.perf_counter() - t0, 1)
    conv, ms = list(ds.convolution_images), list(ds.multislice_images)
    params = ConvolutionParameters.from_dict(ds.meta["convolution"])
    if settings.depth_blur != params.depth_blur:
        from dataclasses import replace

        from surrogate.imaging import convolution_image

        params = replace(params, depth_blur=float(settings.depth_blur))
        conv = [convolution_image(a, g, params) for a, g in zip(ds.atoms, ds.grids)]
        say(f"  convolution images with depth blur β = {params.depth_blur:g}")
    template = PolynomialSurrogate(**settings.polynomial, convolution=params)

    t0 = time.perf_counter()
    say("stage 2/3: image-based 2-fold cross-validation (2 repeats) and the model-error calibration")

    def validate():
        predictions, residuals = residual_images(template, conv, ms, folds=2, repeats=2, seed=settings.seed)
        p = np.concatenate([a.ravel() for a in predictions])
        r = np.concatenate([a.ravel() for a in residuals])
        cv = dict(pooled_metrics(p + r, p), scheme="image", folds=2, repeats=2, seed=settings.seed,
                  n_images=len(conv), n_terms=template.n_terms)
        disc = calibrate_discrepancy(predictions, residuals, atom_sigma=template.convolution_parameters.sigma,
                                     pixel_size=template.convolution_parameters.pixel_size,
                                     source=f"2-fold image CV (2 repeats, seed {settings.seed}) of the "
                                            f"{len(conv)} training images")
        return {"cv": cv, "discrepancy": disc.to_dict()}

    validation = _cached(os.path.join(work, _validation_file(settings, first_fit)), validate)
    cv = validation["cv"]
    say(f"  CV 1 − R² = {cv['one_minus_r2']:.4f}, fractional RMS = {cv['frms']:.3f} over {cv['n_pixels']} pixels")
    seconds["validation"] = round(time.perf_counter() - t0, 1)

    t0 = time.perf_counter()
    say(f"stage 3/3: fit {template.n_terms} terms on {len(conv)} images and write {out}")
    elements = sorted({s for a in ds.atoms for s in a.get_chemical_symbols()})
    model = PolynomialSurrogate(**template.get_params()).fit(conv, ms, elements=elements)
    model.discrepancy_ = ModelDiscrepancy.from_dict(validation["discrepancy"])
    seconds["fit"] = round(time.perf_counter() - t0, 1)
    seconds["total_this_run"] = round(time.perf_counter() - t_all, 1)
    prov = ds.meta.get("provenance", {})
    model.provenance_ = {
        "made_by": "stem-refine model build", "command": command, "microscope": settings.microscope.to_dict(),
        "simulation": ds.meta.get("microscope"), "build": settings.to_dict(), "cv": cv, "source_fit": source_fit,
        "dataset": os.path.abspath(dataset_path), "device": device,
        "simulation_seconds_total": prov.get("simulation_seconds_total"), "seconds": seconds,
    }
    save_model(model, out)
    record = {"model": out, "work": work, "microscope": settings.microscope.to_dict(), "cv": cv,
              "source_fit": source_fit, "seconds": seconds, "n_images": len(conv)}
    return model, record


#: settings that only the fit uses: a work folder's simulations serve any value of them
_FIT_ONLY = ("polynomial", "depth_blur")


def _validation_file(settings: BuildSettings, first: dict) -> str:
    """The stage-2 cache of these fit settings: ``validation.json`` for those the work folder was made with
    (``first``, what :func:`_check_settings` returns), ``validation-HASH.json`` for any other."""
    mine = json.loads(json.dumps({k: settings.to_dict()[k] for k in _FIT_ONLY}))
    if mine == first:
        return "validation.json"
    import hashlib

    return f"validation-{hashlib.sha256(json.dumps(mine, sort_keys=True).encode()).hexdigest()[:12]}.json"


def _check_settings(work: str, settings: BuildSettings) -> dict:
    """Refuse a work folder of other simulations; return the fit settings it was first made with."""
    path = os.path.join(work, "settings.json")
    mine = json.loads(json.dumps(settings.to_dict()))
    if not os.path.exists(path):
        write_json(path, mine, indent=1, sort_keys=True)
        return {k: mine[k] for k in _FIT_ONLY}
    with open(path) as fh:
        theirs = json.load(fh)
    theirs.setdefault("rods", 0)  # builds from before column rods existed had none
    theirs.setdefault("rod_heights", list(ROD_COLUMN_HEIGHTS))
    theirs.setdefault("depth_blur", 0.0)  # nor a depth blur
    theirs.get("polynomial", {}).setdefault("saturation", None)  # nor an input saturation
    first = {k: theirs.pop(k) for k in _FIT_ONLY}
    # compared without what only the fit uses: stage 2 is cached per fit setting (_validation_file)
    if theirs != {k: v for k, v in mine.items() if k not in _FIT_ONLY}:
        raise InputError(f"{work} holds a build with other settings; delete it or choose another output")
    return first


def _cached(path: str, compute):
    """The JSON at ``path``, else ``compute()`` written there atomically (a stage's result)."""
    if os.path.exists(path):
        try:
            with open(path) as fh:
                return json.load(fh)
        except ValueError:
            logger.warning("%s is unreadable; recomputing it", path)
    result = compute()
    write_json(path, result, indent=1)
    return json.loads(json.dumps(result, default=float))


def _with_source(settings: BuildSettings, source_size: float) -> BuildSettings:
    from dataclasses import replace

    return replace(settings, microscope=settings.microscope.merged(source_size=round(float(source_size), 3)))


def _fit_source_stage(settings: BuildSettings, device: str, threads) -> dict:
    """Stage 0: the source size from the image's column widths against an abTEM reference at source size 0."""
    from surrogate.groundtruth import HAADFParameters, haadf_image, make_particle
    from surrogate.imaging import ProbeGrid
    from surrogate.training.sourcesize import fit_source_size, read_image_for_fit

    image, pixel = read_image_for_fit(settings.fit_source, settings.fit_source_pixel_size)
    spec = build_spec(_with_source(settings, 0.0), device)
    atoms = make_particle("cuboctahedron", 79, np.random.default_rng([settings.seed, 2**31 - 2]),
                          base=settings.elements[0])
    grid = ProbeGrid.around(atoms, pixel_size=settings.sampling, margin=2.0)
    params = HAADFParameters.from_dict(dict(spec["simulation"], phonons=1))
    reference = haadf_image(atoms, grid, params, seed=settings.seed, device=device, num_threads=threads)
    fit = fit_source_size(image, pixel, reference, settings.sampling, reference_source_size=0.0)
    return dict(fit.to_dict(), image=str(settings.fit_source), reference="abTEM PRISM, 79-atom cuboctahedron, "
                                                                           "1 phonon, source size 0")
