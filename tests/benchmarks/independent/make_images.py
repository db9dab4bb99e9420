"""Simulate, once, the clean abTEM images of the independent-image benchmark (issue 16).

The refinement must be judged on images its surrogate did not make. Each case
is an EMT-relaxed ~300-atom Pt particle whose HAADF image is simulated here by
abTEM PRISM with settings unlike the shipped model's training set (PRISM
interpolation 2 instead of 4, 8 frozen phonons instead of 3), with the paper's
microscope (200 kV, 24.5 mrad, Cs 1.2 µm, 50–150 mrad, 0.88 Å FWHM source),
on 0.1 Å pixels:

(a) ``decahedron``: a 300-atom Marks decahedron, five-fold axis 10° off the beam;
(b) ``icosahedron``: a 309-atom icosahedron, a zone axis 10° off the beam;
(c) ``far-side``: a 309-atom icosahedron in a random orientation with 6 surface
    atoms moved to hollow sites on the far side of the particle;
(d) ``recrystallised``: a 300-atom truncated octahedron melted at 1400 K for
    10 ps (asap3 EMT), cooled at 3 K/ps (it recrystallises with twins and
    stacking faults) and relaxed;
(s) ``small``: a 70-atom Marks decahedron, five-fold axis 10° off the beam:
    the default test suite's independent image (``tests/data/small``), made with
    ``--cases s --out tests/data``.

The truths are the self-consistency benchmark's builders
(``examples/self_consistency.py``), seeded per case here. Each case writes
``<case>/clean.npy`` (float32, fraction of the incident beam),
``<case>/truth.xyz`` (extxyz, positions in the image frame: the grid origin is
(0, 0)) and ``<case>/image.json`` (pixel size, shape, the abTEM settings, the
seconds it took, versions, the command). Noise is never stored: the benchmark
draws Poisson noise at its doses from ``clean.npy``. A case that exists is
skipped (rerun with ``--force``); files are written atomically, so an
interrupted run loses at most the case in progress.

Run from the repository root (each case takes ~15–40 min on 2 cores)::

    python tests/benchmarks/independent/make_images.py                 # all four
    python tests/benchmarks/independent/make_images.py --cases a --threads 2
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "examples"))

#: case letter -> folder name
CASES = {"a": "decahedron", "b": "icosahedron", "c": "far-side", "d": "recrystallised", "s": "small"}
PIXEL = 0.1  # Å
MARGIN = 4.0  # Å of vacuum around the particle's projection
DATA = HERE / "data"
#: abTEM settings unlike the shipped model's training set (PRISM f=4, 3 phonons)
SIMULATION = {"method": "prism", "interpolation": 2, "phonons": 8}


def tilted_icosahedron(rng, n_atoms=309, tilt=10.0):
    """EMT-relaxed icosahedron with a zone axis tilted ``tilt`` degrees off the beam."""
    import self_consistency as sc
    from surrogate.groundtruth.particles import make_particle

    atoms = sc._relax(make_particle("icosahedron", n_atoms, rng, orientation="zone"))
    axis = rng.normal(size=3)
    axis[2] = 0.0
    sc._rotate(atoms, axis / np.linalg.norm(axis), tilt)
    sc._rotate(atoms, (0, 0, 1), rng.uniform(0, 360))
    return atoms, {"tilt_degrees": tilt}


def make_truth(case: str, seed: int):
    """(atoms, info) of benchmark case ``case``; atoms centred on the origin."""
    import self_consistency as sc

    rng = np.random.default_rng([seed, ord(case)])
    if case == "a":
        atoms, info = sc.decahedron(rng, 300, 10.0)
    elif case == "b":
        atoms, info = tilted_icosahedron(rng)
    elif case == "c":
        atoms, info = sc.icosahedron_with_adatoms(rng)
    elif case == "s":
        atoms, info = sc.decahedron(rng, 70, 10.0)
    else:
        atoms, info = sc.annealed(rng, 300, 1400.0, 10.0, 3.0)
    atoms.positions -= atoms.positions.mean(axis=0)
    return atoms, info, rng


def _versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in ("abtem", "ase", "asap3", "numpy"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:  # pragma: no cover
            out[name] = None
    return out


def _save_npy(path, array) -> None:
    with open(path, "wb") as fh:  # a file object: np.save would append .npy to a temporary name
        np.save(fh, array)


def simulate_case(case: str, args) -> Path:
    """Simulate case ``case`` into ``args.out/<name>/`` and return that folder."""
    from ase.io import write

    from surrogate.common.atomic import atomic_write_with
    from surrogate.common.jsonio import write_json
    from surrogate.groundtruth import HAADFParameters, haadf_image
    from surrogate.imaging import ProbeGrid

    folder = Path(args.out) / CASES[case]
    t0 = time.perf_counter()
    truth, info, rng = make_truth(case, args.seed)
    grid = ProbeGrid.around(truth, pixel_size=PIXEL, margin=MARGIN)
    truth.positions[:, 0] -= grid.origin[0]
    truth.positions[:, 1] -= grid.origin[1]
    grid = ProbeGrid(origin=(0.0, 0.0), shape=grid.shape, pixel_size=PIXEL)
    build_seconds = time.perf_counter() - t0
    params = HAADFParameters(**SIMULATION)
    print(f"({case}) {CASES[case]}: Pt{len(truth)}, grid {grid.shape}, {params.method} f={params.interpolation}, "
          f"{params.phonons} phonons", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    clean = haadf_image(truth, grid, params, seed=rng, num_threads=args.threads, progress=not args.no_progress)
    seconds = time.perf_counter() - t0
    folder.mkdir(parents=True, exist_ok=True)
    truth.info = {"case": case, "name": CASES[case], "composition": f"Pt{len(truth)}", **info}
    atomic_write_with(folder / "truth.xyz", lambda t: write(t, truth, format="extxyz"))
    atomic_write_with(folder / "clean.npy", lambda t: _save_npy(t, clean.astype(np.float32)))
    write_json(folder / "image.json", {
        "case": case, "name": CASES[case], "composition": f"Pt{len(truth)}", "truth_info": info,
        "image": "clean.npy", "truth": "truth.xyz", "pixel_size": PIXEL, "origin": [0.0, 0.0],
        "shape": list(grid.shape), "units": "fraction of the incident beam (noise-free)",
        "simulation": params.to_dict(), "simulation_seconds": round(seconds, 1),
        "truth_seconds": round(build_seconds, 1), "threads": args.threads, "seed": args.seed,
        "versions": _versions(), "machine": platform.processor() or platform.machine(),
        "command": "python tests/benchmarks/independent/make_images.py --cases " + case
                   + ("" if Path(args.out) == DATA else f" --out {args.out}"),
    })
    print(f"({case}) wrote {folder} ({seconds:.0f} s of simulation)", file=sys.stderr, flush=True)
    return folder


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", default="a,b,c,d", help="comma-separated subset of a,b,c,d,s (default a,b,c,d)")
    p.add_argument("--seed", type=int, default=0, help="seed of the truths and the phonons (default 0)")
    p.add_argument("--threads", type=int, default=2, help="threads for abTEM (default 2)")
    p.add_argument("-o", "--out", type=Path, default=DATA, help="output folder (default: data/ beside this script)")
    p.add_argument("--force", action="store_true", help="simulate cases that exist again")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        p.error(f"unknown case(s) {unknown}; choose from {sorted(CASES)}")
    for case in cases:
        if (Path(args.out) / CASES[case] / "image.json").is_file() and not args.force:
            print(f"({case}) exists; skipped (--force to redo)", file=sys.stderr)
            continue
        simulate_case(case, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
