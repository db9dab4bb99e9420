"""``stem-refine model``: a surrogate model for your microscope in one command, and what a model file records.

::

    stem-refine model build -o my_model.npz --preset probe-corrected-300kv --elements Pt,Ir
    stem-refine model build -o au.npz --from-image particle.emd --elements Au --source-size 0.8
    stem-refine model build -o ptir.npz --preset combs2019-200kv --elements Pt,Ir \\
        --fit-source ExamplePtIr_dx0_1211.txt --pixel-size 0.1211
    stem-refine model show my_model.npz
    stem-refine model fit-source IMAGE -m my_model.npz [--pixel-size Å]

``build`` starts from a preset (default combs2019-200kv, the paper's
microscope) or the metadata of ``--from-image`` (Velox EMD records voltage,
convergence and detector angles; what it lacks is listed), and explicit flags
override either. It generates particles, simulates them with abTEM PRISM on
Dask (``--scheduler ADDRESS`` for a cluster, ``--workers N`` local processes,
the GPU when CuPy sees one), cross-validates, calibrates the model error,
fits, and writes ONE model file that records the microscope, the CV numbers
and the calibration. Its work folder ``OUT.work/`` makes a rerun of the same
command continue where it stopped. Defaults: 6 particles of 120–200 atoms,
PRISM f=4, 3 phonons, 0.1 Å probe step (≈ 25 min on 2 cores at 200 kV,
aiming at CV 1 − R² ≤ 0.015; see surrogate/training/modelbuild.py).

``--sampling`` is the model's probe step (the training images' pixel size);
``--pixel-size`` is the pixel size of the image given to ``--from-image`` or
``--fit-source`` (one grammar with every other command).

A source size that is unknown (no preset, no flag, no metadata) is fitted to
``--fit-source IMAGE`` before the build: its atom columns' width against an
abTEM image of the same microscope at source size 0, blurred until the widths
match (surrogate/training/sourcesize.py). ``fit-source`` does the same against
an existing model's own images, to check a model against an image.
"""

from __future__ import annotations

import argparse
import sys

from surrogate.cli.training_options import add_model_args
from surrogate.cli.options import (add_json, add_model, add_no_progress, add_out, add_pixel_size, add_sampling, add_seed,
                                   add_workers, command_line)

help = "build a surrogate model for a microscope (simulate, fit, CV, model error) or show what a model records"
description = __doc__


def add_arguments(parser):
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    fmt = argparse.RawDescriptionHelpFormatter
    b = sub.add_parser("build", help="simulate particles and fit, cross-validate and calibrate a model",
                       description=__doc__, allow_abbrev=False, formatter_class=fmt)
    add_out(b, folder=False, help="the model file to write (.npz); OUT.work/ keeps the stages so a rerun resumes")
    g = b.add_argument_group("microscope (a preset or an image's metadata, then these flags)")
    g.add_argument("--preset", metavar="NAME", help="combs2019-200kv (default) or probe-corrected-300kv")
    g.add_argument("--from-image", metavar="FILE", help="read voltage, convergence, detector from the file's metadata")
    g.add_argument("--voltage", type=float, metavar="kV", help="acceleration voltage in kV")
    g.add_argument("--convergence", type=float, metavar="mrad", help="probe convergence semi-angle in mrad")
    g.add_argument("--cs", type=float, metavar="µm", help="spherical aberration in µm")
    g.add_argument("--defocus", type=float, metavar="Å", help="defocus in Å (only 0 is simulated)")
    g.add_argument("--source-size", type=float, metavar="Å", help="source size, FWHM in Å")
    g.add_argument("--detector", metavar="INNER,OUTER", help="annular detector angles in mrad, e.g. 50,150")
    g.add_argument("--fit-source", metavar="IMAGE",
                   help="fit the source size to this image's column widths (when it is otherwise unknown)")
    add_pixel_size(g, "the --from-image/--fit-source image in Å (when its file has none, or to override it)")
    p = b.add_argument_group("particles and simulation")
    p.add_argument("--elements", default=None, metavar="LIST",
                   help="host element and optional solute, e.g. Pt or Pt,Ir (default Pt)")
    p.add_argument("--solute-fraction", type=float, default=None, metavar="F",
                   help="fraction of host atoms replaced by the solute (default 0.2)")
    p.add_argument("--sizes", metavar="MIN:MAX", help="atoms per particle (default 120:200)")
    p.add_argument("--particles", type=int, metavar="N", help="number of particles (default 6)")
    p.add_argument("--rods", type=int, default=0, metavar="N",
                   help="column rods added (a zone axis along the beam, 8-16 atoms per column): for images of "
                        "particles thicker than the size range's compact shapes (default 0)")
    p.add_argument("--depth-blur", type=float, default=0.0, metavar="β",
                   help="PSF width grows with depth below the entrance surface as sqrt(σ² + (β·depth)²) (Å per Å); "
                        "columns longer than the probe's depth of focus then look as they do (default 0: the "
                        "paper's depth-blind convolution image; 0.01 for the paper's 200 kV microscope, "
                        "docs/benchmarks.md)")
    p.add_argument("--rod-heights", metavar="MIN:MAX",
                   help="atoms per column of the rods (default 8:16; taller rods, longer than the probe's "
                        "depth of focus, make the model worse)")
    add_sampling(p, "the model's pixel size; default 0.1")
    p.add_argument("--interpolation", type=int, metavar="F", help="PRISM interpolation factor (default 4)")
    p.add_argument("--phonons", type=int, metavar="N", help="frozen-phonon configurations (default 3)")
    p.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto",
                   help="abTEM device (default auto: the GPU when CuPy sees one)")
    add_seed(p, "the particles and the CV folds (default 0)")
    add_model_args(b)
    d = b.add_argument_group("Dask")
    d.add_argument("--scheduler", metavar="ADDRESS",
                   help="existing Dask scheduler address; default: a LocalCluster; 'synchronous': no Dask")
    add_workers(d, "of the LocalCluster; default 1", default=1)
    d.add_argument("--threads", type=int, metavar="N", help="threads per simulation (default: cores / workers)")
    add_json(b, "a summary (model file, microscope, CV, seconds)")
    add_no_progress(b)

    s = sub.add_parser("show", help="print what a model file records (microscope, CV, model error, build)",
                       description="Print what a model file records.", allow_abbrev=False, formatter_class=fmt)
    s.add_argument("file", metavar="MODEL", nargs="?", help="model file (default: the shipped model)")
    add_json(s, "the record")

    f = sub.add_parser("fit-source", help="fit the effective source size of an image against a model's images",
                       description="Fit an image's effective source size (FWHM, Å) from its column widths, against "
                                   "the model's own images blurred by trial Gaussians (see "
                                   "surrogate/training/sourcesize.py).", allow_abbrev=False, formatter_class=fmt)
    f.add_argument("image", metavar="IMAGE", help="the image (any format stem-refine refine reads)")
    add_model(f)
    add_pixel_size(f, "IMAGE in Å (when its file has none, or to override it)")
    add_seed(f, "the reference particles")
    add_json(f, "the fit")


def _sizes(text, flag="--sizes", example="120:200"):
    from surrogate.common import InputError

    try:
        lo, hi = (int(v) for v in text.split(":"))
    except ValueError:
        raise InputError(f"{flag} takes MIN:MAX atoms, e.g. {example}, got {text!r}") from None
    return lo, hi


def _polynomial(args) -> dict:
    from surrogate.cli.training_options import model_from_args

    return {k: v for k, v in model_from_args(args).get_params().items() if k != "convolution"}


def settings_from_args(args):
    """The :class:`~surrogate.training.modelbuild.BuildSettings` and the image-metadata report of ``build``'s flags."""
    from surrogate.common import InputError
    from surrogate.common.microscope import Microscope, parse_detector, read_image_microscope
    from surrogate.groundtruth.particles import ROD_COLUMN_HEIGHTS
    from surrogate.training.modelbuild import DEFAULTS, BuildSettings
    from surrogate.training.presets import DEFAULT_PRESET, preset

    from_image = None
    if args.from_image:
        from_image = read_image_microscope(args.from_image)
        scope = Microscope.from_dict(from_image["microscope"])
        if args.preset:  # the preset fills what the image does not say
            base = preset(args.preset)
            scope = base.merged(**{k: v for k, v in scope.to_dict().items() if v is not None})
        elif scope.defocus is None:
            scope = scope.merged(defocus=0.0)  # no file records it; the focused probe
    else:
        scope = preset(args.preset or DEFAULT_PRESET)
    if args.fit_source and args.source_size is None:  # fitted to the image instead (stage 0)
        scope = Microscope.from_dict(dict(scope.to_dict(), source_size=None))
    scope = scope.merged(voltage=args.voltage, convergence=args.convergence, cs=args.cs, defocus=args.defocus,
                         source_size=args.source_size,
                         detector=None if args.detector is None else parse_detector(args.detector))
    if from_image is not None:
        still = [k for k in scope.missing() if not (k == "source_size" and args.fit_source)]
        if still:
            flags = {"voltage": "--voltage", "convergence": "--convergence", "detector": "--detector", "cs": "--cs",
                     "defocus": "--defocus", "source_size": "--source-size (or --fit-source IMAGE)"}
            raise InputError(f"{args.from_image} does not record {', '.join(still)}; give "
                             f"{', '.join(flags[k] for k in still)} or a --preset to fill them")
    elements = tuple(e.strip() for e in (args.elements or "Pt").split(",") if e.strip())
    if not elements:
        raise InputError("--elements needs at least one element, e.g. Pt")
    settings = BuildSettings(
        microscope=scope, elements=elements,
        solute_fraction=DEFAULTS["solute_fraction"] if args.solute_fraction is None else args.solute_fraction,
        sizes=_sizes(args.sizes) if args.sizes else DEFAULTS["sizes"],
        particles=DEFAULTS["particles"] if args.particles is None else args.particles,
        rods=args.rods,
        rod_heights=_sizes(args.rod_heights, "--rod-heights", "8:16") if args.rod_heights else ROD_COLUMN_HEIGHTS,
        sampling=DEFAULTS["sampling"] if args.sampling is None else args.sampling,
        interpolation=DEFAULTS["interpolation"] if args.interpolation is None else args.interpolation,
        phonons=DEFAULTS["phonons"] if args.phonons is None else args.phonons,
        seed=args.seed, fit_source=args.fit_source, fit_source_pixel_size=args.pixel_size,
        polynomial=_polynomial(args), depth_blur=args.depth_blur)
    return settings.validate(), from_image


def _build(args) -> int:
    from surrogate.common import print_json
    from surrogate.training.modelbuild import build_model

    settings, from_image = settings_from_args(args)

    def say(line):
        if args.progress or not args.json:
            print(line, file=sys.stderr, flush=True)

    if from_image is not None:
        missing = [m for m in from_image["missing"]]
        say(f"{args.from_image}: read {', '.join(k for k, v in from_image['microscope'].items() if v is not None) or 'nothing'}"
            f"; not in the file: {', '.join(missing) or 'nothing'} (taken from "
            f"{'the flags/preset' if missing else 'the file'})")
    _, record = build_model(settings, args.out, scheduler=args.scheduler, workers=args.workers, threads=args.threads,
                            device=args.device, progress=args.progress, command=command_line(), say=say)
    if from_image is not None:
        record["from_image"] = from_image
    if args.json:
        print_json(record)
    else:
        cv = record["cv"]
        print(f"wrote {record['model']}: CV 1 − R² = {cv['one_minus_r2']:.4f}, fractional RMS = {cv['frms']:.3f} "
              f"({cv['n_images']} images); {record['seconds']['total_this_run']:.0f} s this run")
    return 0


def _show(args) -> int:
    from surrogate import default_model_path
    from surrogate.common import print_json
    from surrogate.imaging import load_model
    from surrogate.training.modelinfo import model_record

    path = args.file or str(default_model_path())
    record = model_record(load_model(path), path)
    if args.json:
        print_json(record)
        return 0
    from surrogate.common.microscope import Microscope

    scope = record["microscope"]
    print(f"{path}: {record['n_terms']} terms (s={record['hyperparameters']['size']}, "
          f"d={record['hyperparameters']['degree']}"
          + (f", input saturation {record['hyperparameters']['saturation']:g}"
             if record["hyperparameters"].get("saturation") is not None else "")
          + f"), pixel {record['pixel_size']:g} Å, "
          f"elements {','.join(record['elements']) or '?'}, {record['n_images']} training images")
    print(f"microscope: {Microscope.from_dict(scope).describe() if scope else 'not recorded'}"
          + (f" (from the {record['microscope_from']})" if scope else ""))
    cv = record["cv"]
    print(f"CV: 1 − R² = {cv['one_minus_r2']:.4f}, fractional RMS = {cv['frms']:.3f}" if cv else "CV: not recorded")
    err = record["model_error"]
    print(f"model error: correlation area {err['correlation_area_px']:.1f} px, σ {err['sigma_brightest']:.2e} at "
          f"intensity {err['intensity_brightest']:.3g}" if err else "model error: not calibrated")
    return 0


def _fit_source(args) -> int:
    import numpy as np

    from surrogate.common import InputError, print_json
    from surrogate.groundtruth import make_particle
    from surrogate.imaging import ProbeGrid
    from surrogate.training.modelinfo import model_microscope
    from surrogate.training.sourcesize import fit_source_size, read_image_for_fit

    if args.model is None:
        from surrogate import default_model

        model, source = default_model(), "the shipped model"
    else:
        from surrogate.imaging import load_model

        model, source = load_model(args.model), args.model
    scope = model_microscope(model)
    if scope is None or scope.source_size is None:
        raise InputError(f"{source} records no source size; fit against a model from 'stem-refine model build'")
    image, pixel = read_image_for_fit(args.image, args.pixel_size)
    build = (model.provenance_ or {}).get("build") or {}
    host = (build.get("elements") or [None])[0] or ("Pt" if "Pt" in model.elements_ or not model.elements_
                                                     else model.elements_[0])
    atoms = make_particle("cuboctahedron", 147, np.random.default_rng(args.seed), base=host)
    reference = model.simulate(atoms, ProbeGrid.around(atoms, pixel_size=model.convolution_parameters.pixel_size))
    fit = fit_source_size(image, pixel, reference, model.convolution_parameters.pixel_size,
                          reference_source_size=scope.source_size)
    result = dict(fit.to_dict(), image=str(args.image), model=source)
    if args.json:
        print_json(result)
        return 0
    note = " (sharper than the model's images: extrapolated)" if fit.extrapolated else ""
    print(f"{args.image}: effective source size {fit.source_size:.2f} Å FWHM ({fit.low:.2f}–{fit.high:.2f}){note}; "
          f"the model's is {scope.source_size:g} Å; {fit.n_columns} columns")
    return 0


def run(args) -> int:
    return {"build": _build, "show": _show, "fit-source": _fit_source}[args.action](args)
