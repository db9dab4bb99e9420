"""Make the shipped demo image of ``stem-refine demo`` (refine/data/demo_image.npy).

Run from the repository root::

    python refine/data/make_demo_image.py            # PRISM ground truth (default)
    python refine/data/make_demo_image.py --surrogate MODEL.npz   # surrogate image instead

What it does (all seeded):

1. a Pt Marks decahedron of ``--atoms`` atoms (:func:`surrogate.groundtruth.particles.make_particle`,
   zone-axis orientation with a random rotation about the beam), EMT-relaxed
   (asap3, FIRE to 0.05 eV/Å);
2. a probe grid around it (Δ = 0.1 Å, the default model's pixel size; 3 Å margin),
   with the atoms translated so that pixel (0, 0) is at (0, 0) Å;
3. a HAADF image by abTEM PRISM (:func:`surrogate.groundtruth.multislice.haadf_image`,
   paper microscope, ``--phonons`` frozen phonons, interpolation ``--interpolation``),
   or, with ``--surrogate``, the surrogate image of that model;
4. Poisson noise at ``--dose`` e/Å²: counts ~ Poisson(I·dose·Δ²), stored back as a
   fraction of the beam (counts / (dose·Δ²)), float32.

Writes ``demo_image.npy``, ``demo_truth.xyz`` and ``demo_image.json`` (pixel
size, origin, composition, dose, how it was simulated, the command line) next to
this script.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from surrogate.common.atomic import atomic_write_with

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--atoms", type=int, default=130, help="number of Pt atoms (default 130)")
    p.add_argument("--seed", type=int, default=2016, help="seed (default 2016)")
    p.add_argument("--dose", type=float, default=1e5, help="electron dose in e/Å² (default 1e5)")
    p.add_argument("--phonons", type=int, default=4, help="frozen phonons (default 4)")
    p.add_argument("--interpolation", type=int, default=4, help="PRISM interpolation (default 4)")
    p.add_argument("--threads", type=int, default=2, help="threads for abTEM (default 2)")
    p.add_argument("--surrogate", metavar="MODEL", help="use this surrogate model instead of PRISM")
    p.add_argument("--out", type=Path, default=HERE, help="output folder (default: next to this script)")
    args = p.parse_args(argv)

    from ase.io import write

    from surrogate.imaging.grid import ProbeGrid
    from surrogate.groundtruth.particles import make_particle, relax

    rng = np.random.default_rng(args.seed)
    atoms = make_particle("marks_decahedron", args.atoms, rng, orientation="zone")
    relax(atoms, fmax=0.05, steps=500)
    atoms.calc = None
    atoms.cell = None
    atoms.pbc = False
    pixel = 0.1
    grid = ProbeGrid.around(atoms, pixel_size=pixel, margin=3.0)
    atoms.positions[:, 0] -= grid.origin[0]
    atoms.positions[:, 1] -= grid.origin[1]
    atoms.positions[:, 2] -= atoms.positions[:, 2].mean()
    grid = ProbeGrid(origin=(0.0, 0.0), shape=grid.shape, pixel_size=pixel)

    t0 = time.perf_counter()
    if args.surrogate:
        from surrogate.imaging.model import load_model

        image = load_model(args.surrogate).simulate(atoms, grid)
        simulation = {"method": "surrogate", "model": str(args.surrogate)}
    else:
        from surrogate.groundtruth.multislice import HAADFParameters, haadf_image

        params = HAADFParameters(method="prism", phonons=args.phonons, interpolation=args.interpolation)
        image = haadf_image(atoms, grid, params, seed=rng, num_threads=args.threads, progress=True)
        simulation = {"method": "prism", "parameters": params.to_dict()}
    seconds = time.perf_counter() - t0

    per_pixel = args.dose * pixel * pixel
    counts = rng.poisson(np.clip(image, 0.0, None) * per_pixel)
    noisy = (counts / per_pixel).astype(np.float32)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    truth = atoms.copy()
    truth.info = {"composition": f"Pt{len(atoms)}", "family": "marks_decahedron", "seed": args.seed}
    atomic_write_with(out / "demo_image.npy", lambda t: np.save(open(t, "wb"), noisy))
    atomic_write_with(out / "demo_truth.xyz", lambda t: write(t, truth, format="extxyz"))
    meta = {
        "image": "demo_image.npy",
        "truth": "demo_truth.xyz",
        "pixel_size": pixel,
        "origin": [0.0, 0.0],
        "shape": list(grid.shape),
        "units": "fraction of the incident beam (counts / (dose * pixel_size^2))",
        "composition": f"Pt{len(atoms)}",
        "particle": "EMT-relaxed Marks decahedron, zone axis along the beam, random rotation about it",
        "dose": args.dose,
        "noise": "Poisson",
        "simulation": simulation,
        "simulation_seconds": round(seconds, 1),
        "seed": args.seed,
        "command": "python refine/data/make_demo_image.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    atomic_write_with(out / "demo_image.json", lambda t: Path(t).write_text(json.dumps(meta, indent=2) + "\n"))
    print(f"wrote {out / 'demo_image.npy'} {grid.shape} ({seconds:.0f} s of simulation), "
          f"{out / 'demo_truth.xyz'}, {out / 'demo_image.json'}")


if __name__ == "__main__":
    main()
