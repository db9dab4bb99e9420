"""The pixel size from the columns' lattice (``--pixel-size-from-lattice``), on abTEM images at known wrong calibrations.

Each image is read at pixel sizes off by a known fraction from its true
one, and for each the runner records

* what :func:`refine.io.calibration.check_pixel_size` says (the factor, the
  zone axis and the cell's anisotropy, or nothing), and the pixel size it
  implies against the true one;
* what ``--pixel-size-from-lattice`` (:func:`refine.io.calibration.calibrate_pixel_size`
  through :func:`refine.workflows.inputs.validate_image`) sets, or its refusal.

The abTEM images are the project's own, 0.1 Å per pixel: ``tests/data/tall``
(an 800-atom Pt octahedron down [110]) and the four particles of
``tests/benchmarks/independent/data``, none of them one zone-axis crystal
(a decahedron and an icosahedron tilted 10°, a recrystallised particle, one
with atoms moved to its far side): for those the right answer is no
lattice. The real images of ``../shared/data/experimental`` (true pixel size
unknown) are read at several starting pixel sizes when present: a
calibration should land on the same value from any start.

::

    python tests/benchmarks/bench_pixel_calibration.py [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data" / "experimental"
ERRORS = (-0.2, -0.1, -0.05, 0.0, 0.05, 0.1, 0.2)


def abtem_cases():
    """(name, array, true pixel size Å, element, preparation)."""
    yield "tall [110] octahedron", np.load(ROOT / "tests" / "data" / "tall" / "abtem_110_800_f4_p8.npy"), 0.1, "Pt", {}
    for name in ("decahedron", "icosahedron", "recrystallised", "far-side"):
        data = ROOT / "tests" / "benchmarks" / "independent" / "data" / name
        yield name, np.load(data / "clean.npy"), float(json.loads((data / "image.json").read_text())["pixel_size"]), \
            "Pt", {}


def real_cases():
    """(name, file, starting pixel sizes Å, element, preparation) of the shared real images present."""
    ptir = SHARED / "ptir-statstem" / "ExamplePtIr_dx0_1211.txt"
    if ptir.is_file():
        yield "Pt–Ir (StatSTEM)", str(ptir), (0.11, 0.1211, 0.13), "Pt", {"crop": "auto"}
    au = SHARED / "au-temul" / "example_Au_nanoparticle.emd"
    if au.is_file():
        yield "Au (TEMUL EMD)", str(au), (0.07, 0.075, 0.08, 0.09), "Au", {"background": "vacuum", "crop": "auto"}


def _model(element):
    """A model of ``element`` for reading images: the shipped one (only its pixel size and elements matter here)."""
    from surrogate import default_model

    model = default_model()
    if element not in model.elements_:
        model = _with_elements(model, (element,))
    return model


def _with_elements(model, elements):
    import copy

    other = copy.copy(model)
    other.elements_ = tuple(elements)
    return other


def measure(source, declared, element, preparation, mask):
    """(check: dict or None, calibrated pixel size or the refusal's text)."""
    from refine.io.calibration import check_pixel_size
    from refine.search import nearest_neighbour_distance
    from refine.workflows.inputs import validate_image
    from surrogate.common import InputError

    model = _model(element)
    nn = nearest_neighbour_distance([element])
    image = validate_image(source, model, pixel_size=declared, mask=mask, resample=True, preparation=preparation)
    scale = check_pixel_size(image, nn, element=element)
    check = None if scale is None else {"zone_axis": scale.zone_axis, "factor": scale.factor,
                                        "anisotropy": scale.anisotropy, "n_columns": scale.n_columns,
                                        "implied": declared * scale.factor}
    try:
        img = validate_image(source, model, pixel_size=declared, mask=mask, resample=True, preparation=preparation,
                             lattice_pixel_size=True)
        calibrated = img.metadata["preparation"][-1]["values"]["pixel_size"]
    except InputError as exc:
        calibrated = str(exc)
    return check, calibrated


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", type=Path, help="write the rows as JSON")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    rows = []
    print("| image | true Å | read at Å | check: zone, anisotropy | check implies (error) | "
          "--pixel-size-from-lattice (error) |")
    print("|---|---|---|---|---|---|")
    for name, data, true, element, prep in abtem_cases():
        for e in ERRORS:
            declared = round(true * (1 + e), 6)
            check, cal = measure(data, declared, element, prep, None)
            rows.append({"image": name, "true": true, "declared": declared, "check": check, "calibrated": cal})
            print(_row(name, true, declared, check, cal))
    for name, path, starts, element, prep in real_cases():
        for declared in starts:
            check, cal = measure(path, declared, element, prep, "auto")
            rows.append({"image": name, "true": None, "declared": declared, "check": check, "calibrated": cal})
            print(_row(name, None, declared, check, cal))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


def _row(name, true, declared, check, cal):
    def err(v):
        return "" if true is None else f" ({100 * (v / true - 1):+.1f} %)"

    chk = "none" if check is None else f"{check['zone_axis']}, {100 * check['anisotropy']:.1f} %"
    imp = "–" if check is None else f"{check['implied']:.4f}{err(check['implied'])}"
    c = f"{cal:.4f}{err(cal)}" if isinstance(cal, float) else \
        ("refused (no zone-axis lattice)" if "no zone-axis lattice" in cal else f"refused ({cal})")
    return f"| {name} | {true if true is not None else '?'} | {declared} | {chk} | {imp} | {c} |"


if __name__ == "__main__":
    main()
