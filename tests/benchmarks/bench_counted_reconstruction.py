"""A counted reconstruction against a known truth: count the columns of an abTEM image, stack, relax in columns.

``stem-refine refine ... --start counts`` builds its first structure the way
atom-counting reconstructions do: the image's columns are found and counted
from their cross-sections, stacked about a mid-plane
(:mod:`refine.search.column_start`) and relaxed on EMT with every atom tied
to its column by a spring of stiffness k (:mod:`refine.search.column_restraint`).
This measures that structure where the truth is known, on an image the
surrogate did not make: the abTEM image of the 800-atom ⟨110⟩ Pt truncated
octahedron of ``bench_tall_columns.py`` for the model's microscope (made
there, or here, once, into ``--work``), clean or with Poisson noise
(``--dose``).

For each stiffness (``--stiffness``; 0 = a free FIRE relaxation, ``none`` =
the stacked structure unrelaxed; every counting round counts the relaxed
structure), with the number of atoms taken from the image as ``-c Pt
--start counts`` does (the sum of the column counts; ``--known-total`` gives
the truth's instead), and for k > 0 with the columns then slid along the
beam on EMT as the product does where it does not settle the columns
(``--no-slides`` leaves that out), it reports:

``--count-weight`` (comma-separated; ``none`` = not settled, ``inf`` = depths
only) settles the counted columns with that weight of the image's count
evidence instead of the EMT slides, as ``refine --count-weight`` does
(:mod:`refine.search.column_stacks`). ``--rough N`` replaces the truth by
the same particle with N end atoms moved to other columns' ends and
relaxed (:func:`rough_particle`: one-atom steps and ad-atoms on its top and
bottom facets, real counts that the energy would rather smooth away; its
abTEM image is made once into ``--work``, 4 phonons ~18 min on 2 cores).
``--shape decahedron`` takes a twinned truth instead: a 780-atom Marks
decahedron down its five-fold axis (five [110] grains around one column,
:func:`decahedron_particle`; its image is made once, ~15–20 min with 4 phonons).
``--seeds`` seeds both the noise and the reconstruction's moves, so that a
clean image with several seeds shows the moves' spread.

* E/atom (EMT) against the truth relaxed on EMT;
* atoms within 0.5 Å of the truth after alignment (``compare_structures``; both
  in the image's frame, so only a translation and the mirror z → −z);
* column counts against the truth's (fraction of the truth's columns equal);
* the ``counts.csv`` agreement: the image's cross-section count in each of the
  reconstruction's columns against the reconstruction's own (equal, ±1),
  what issue 18 asks of a real image's answer.

::

    python tests/benchmarks/bench_counted_reconstruction.py --work /tmp/tall --model pt_rods.npz --phonons 8
    python tests/benchmarks/bench_counted_reconstruction.py --work /tmp/tall --model pt_rods.npz --dose 5e5 --seeds 0,1
    python tests/benchmarks/bench_counted_reconstruction.py --work /tmp/tall --model pt_rods.npz --stiffness 1.5 \
        --count-weight none,inf,3,1 --seeds 0,1,2 [--rough 30 --phonons 4] [--dose 1e5]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))
sys.path.insert(0, str(HERE))


def _energy_per_atom(atoms, relax: bool = False) -> float:
    """EMT energy per atom (eV), optionally after a free FIRE relaxation."""
    from ase.optimize import FIRE

    from refine.cost import make_calculator

    a = atoms.copy()
    a.cell = np.diag(np.ptp(a.positions, axis=0) + 20.0)
    a.calc = make_calculator("auto", tuple(sorted(set(a.get_chemical_symbols()))))
    if relax:
        FIRE(a, logfile=None).run(fmax=0.02, steps=3000)
    return float(a.get_potential_energy()) / len(a)


def reference_image(work: Path, atoms, grid, model, phonons: int, interpolation: int = 4,
                    name: str = "", axis: str = "110") -> np.ndarray:
    """The abTEM image of ``bench_tall_columns.py`` (same file name, the model's microscope), simulated once;
    ``name`` is added to the file name of another truth."""
    from bench_tall_columns import _save_npy, reference_settings

    params, tag = reference_settings(model)
    path = work / f"abtem_{axis}_{len(atoms)}{name}_f{interpolation}_p{phonons}{tag}.npy"
    if path.is_file():
        return np.load(path)
    from surrogate.groundtruth import haadf_image

    t0 = time.perf_counter()
    image = haadf_image(atoms, grid, params, seed=0, interpolation=interpolation, phonons=phonons)
    work.mkdir(parents=True, exist_ok=True)
    _save_npy(path, image)
    print(f"abTEM, {len(atoms)} atoms, {grid.shape} px: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return image


def rough_particle(atoms, moves: int, seed: int = 0):
    """``atoms`` (columns along z) with ``moves`` end atoms of random columns put on random columns' ends.

    A test of counts that the energy would rather smooth: each move takes the top or bottom atom of a column
    of ≥ 2 and puts it on top of (or under) another column, on a site of at least 3 bonds (an ad-atom or a
    step on a facet, not a needle), so that the truth's top and bottom facets carry real one-atom steps.
    Relaxed freely on EMT afterwards (FIRE, 0.02 eV/Å).
    """
    from refine.search.column_stacks import ColumnStacks

    st = ColumnStacks.from_atoms(atoms, nearest_neighbour_distance_pt())
    rng = np.random.default_rng(seed)
    m, done = len(st.counts), 0
    while done < int(moves):
        src, dst = (int(c) for c in rng.integers(m, size=2))
        if src == dst or st.counts[src] < 2:
            continue
        from_top, to_top = rng.random() < 0.5, rng.random() < 0.5
        if st.move_end_atom(src, from_top, dst, to_top) is None:
            continue
        on = st.site(dst, st.first[dst] + st.counts[dst] - 1 if to_top else st.first[dst])
        if st.coordination[on] < 3:
            st.move_end_atom(dst, to_top, src, from_top)
            continue
        done += 1
    return _relaxed_centred(atoms.numbers, st.positions())


def decahedron_particle():
    """A 780-atom Pt Marks decahedron (:class:`ase.cluster.Decahedron` (7, 2, 1)) with its five-fold axis along z,
    relaxed on EMT (FIRE, 0.02 eV/Å) and centred: a twinned truth, five [110] grains around one column."""
    from ase.cluster import Decahedron

    atoms = Decahedron("Pt", 7, 2, 1, latticeconstant=3.92)
    return _relaxed_centred(atoms.numbers, atoms.positions - atoms.positions.mean(axis=0))


def _relaxed_centred(numbers, positions):
    """Pt atoms relaxed freely on EMT (FIRE, 0.02 eV/Å, at most 3000 steps), centred on their mean, no cell."""
    from ase import Atoms
    from ase.optimize import FIRE

    from refine.cost import make_calculator

    out = Atoms(numbers, positions=positions)
    out.cell = np.diag(np.ptp(out.positions, axis=0) + 20.0)
    out.calc = make_calculator("auto", ("Pt",))
    FIRE(out, logfile=None).run(fmax=0.02, steps=3000)
    return Atoms(numbers, positions=out.positions - out.positions.mean(axis=0))


def nearest_neighbour_distance_pt() -> float:
    from refine.search.geometry import nearest_neighbour_distance

    return nearest_neighbour_distance({"Pt": 1})


def _relaxer(stiffness):
    """Atoms → Atoms: relaxed in columns (k > 0), freely (k = 0), or None (no relaxation)."""
    if stiffness is None:
        return None
    from functools import partial

    from ase.optimize import FIRE

    from refine.cost import make_calculator
    from refine.search.column_restraint import relax_in_columns

    calc = make_calculator("auto", ("Pt",))
    if stiffness > 0:
        return partial(relax_in_columns, calculator=calc, stiffness=float(stiffness))

    def free(atoms):
        a = atoms.copy()
        a.cell = np.diag(np.ptp(a.positions, axis=0) + 20.0)
        a.calc = calc
        FIRE(a, logfile=None).run(fmax=0.02, steps=2000)
        a.calc = None
        a.cell = np.zeros((3, 3))
        return a

    return free


def reconstruct(image, model, guess: int, stiffness, *, known_total: bool = False, seed: int = 0,
                slides: bool = True, count_weight: float | None = None):
    """What ``refine -c Pt --start counts --generations 0`` builds: the number of atoms from the column counts
    (unless ``known_total``), then the counted structure, each counting round on the relaxed structure, then
    (with ``count_weight``) its columns settled on the coordination proxy with the image's count evidence
    (:func:`refine.search.column_stacks.settle_columns`), or else (with a stiffness > 0 and ``slides``) its
    columns slid along the beam on EMT."""
    from refine.search.column_start import (COUNT_ROUNDS, RELAXED_COUNT_ROUNDS, column_count_total,
                                            counted_structure)

    relax = _relaxer(stiffness)
    rounds = COUNT_ROUNDS if relax is None else RELAXED_COUNT_ROUNDS
    n = guess if known_total else column_count_total(image, model, "Pt", guess, rounds=rounds, relax=relax)[0]
    rng = np.random.default_rng(seed)
    atoms = counted_structure(image, model, f"Pt{n}", rng, rounds=rounds, relax=relax)
    if count_weight is not None:
        from refine.search.column_stacks import settle_columns

        atoms = settle_columns(atoms, image, model, rng, weight=count_weight, relax=relax)
    elif stiffness and slides:  # the product's last step where it does not settle: columns slid along the beam
        from refine.cost import make_calculator
        from refine.search.column_restraint import slide_columns

        atoms = slide_columns(atoms, make_calculator("auto", ("Pt",)), rng, stiffness=float(stiffness))
    return atoms


def measure(rec, truth, image, model, e_truth: float) -> dict:
    """The numbers of the module docstring for one reconstruction."""
    from refine.analysis.columns import column_counts
    from refine.analysis.comparison import compare_structures
    from refine.analysis.cross_sections import column_count_table

    # both are in the image's frame (x, y fixed by the image): only the mirror z → −z is free. A free 3-D
    # rotation can map a near-symmetric particle onto itself turned, pairing columns with the wrong ones
    cmp = compare_structures(rec, truth, rotation="none", allow_unmatched=len(rec) != len(truth))
    # the counts column by column without any alignment: the image fixes both structures' x, y (an aligning
    # translation by one lattice vector pairs every column with its neighbour and still puts ~90 % of the atoms
    # within 0.5 Å)
    columns = column_counts(truth.positions[:, :2], rec.positions[:, :2])
    table = column_count_table(rec, image, model)
    e = _energy_per_atom(rec)
    return {"atoms": len(rec), "energy_per_atom": e, "above_truth": e - e_truth,
            "within_0.5": float(cmp.within[0.5]), "columns_equal_truth": columns.fraction_equal,
            "counts_equal": table.fraction_equal, "counts_within_1": table.fraction_within_1,
            "n_columns": int(len(table.xy))}


def main(argv=None) -> int:
    from bench_tall_columns import test_particle

    from refine.analysis.atom_number import estimate_atom_number
    from refine.io.images import ExperimentalImage
    from surrogate.imaging import ProbeGrid
    from surrogate.imaging.model import load_model

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, required=True, help="folder of the abTEM image (bench_tall_columns.py's)")
    p.add_argument("--model", required=True, help="model file (the abTEM image uses its microscope)")
    p.add_argument("--phonons", type=int, default=8, help="frozen phonons of the abTEM image (default 8)")
    p.add_argument("--dose", type=float, default=None, help="e/Å²: Poisson noise on the clean image (default none)")
    p.add_argument("--seeds", default="0", help="seeds of the noise and of the reconstruction's moves, e.g. 0,1 (default 0)")
    p.add_argument("--stiffness", default="none,0,0.5,1,1.5,2,8",
                   help="eV/Å², comma-separated; 0 = free relaxation, none = unrelaxed (default none,0,0.5,1,1.5,2,8)")
    p.add_argument("--known-total", action="store_true", help="use the truth's number of atoms, not the estimate")
    p.add_argument("--no-slides", action="store_true", help="leave out the column slides (k > 0 only)")
    p.add_argument("--count-weight", default="none",
                   help="count weights w of settle_columns, comma-separated; none = not settled, inf = slides on "
                        "the proxy only (default none)")
    p.add_argument("--rough", type=int, default=0, metavar="N",
                   help="the truth with N end atoms moved to other columns' ends (rough_particle; default 0: "
                        "the truncated octahedron itself)")
    p.add_argument("--axis", choices=("110", "100"), default="110",
                   help="zone axis of the truth along the beam (default 110; a 100 image is made once into --work)")
    p.add_argument("--shape", choices=("octahedron", "decahedron"), default="octahedron",
                   help="the truth: the 800-atom truncated octahedron (default) or a 780-atom Marks decahedron "
                        "down its five-fold axis (decahedron_particle: five twinned [110] grains; --axis is ignored)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    model = load_model(args.model)
    ideal = decahedron_particle() if args.shape == "decahedron" else test_particle(args.axis, 800)
    truth = rough_particle(ideal, args.rough) if args.rough else ideal
    # the ideal truth's image is centred on the particle; a rough truth keeps that grid, so the two compare
    grid = ProbeGrid.around(ideal, pixel_size=model.convolution_parameters.pixel_size)
    name = ("_decahedron" if args.shape == "decahedron" else "") + (f"_rough{args.rough}" if args.rough else "")
    clean = reference_image(args.work, truth, grid, model, args.phonons, name=name,
                            axis="110" if args.shape == "decahedron" else args.axis)
    e_truth = _energy_per_atom(truth, relax=True)
    ks = [None if s.strip() == "none" else float(s) for s in args.stiffness.split(",") if s.strip()]
    ws = [None if s.strip() == "none" else float(s) for s in args.count_weight.split(",") if s.strip()]
    rows = []
    for seed in [int(s) for s in args.seeds.split(",") if s.strip()]:
        data = clean
        if args.dose:
            per_pixel = args.dose * grid.pixel_size ** 2
            data = np.random.default_rng(seed).poisson(np.clip(clean, 0, None) * per_pixel) / per_pixel
        image = ExperimentalImage(data=np.asarray(data, float), pixel_size=grid.pixel_size,
                                  mask=np.ones(grid.shape, bool), origin=tuple(grid.origin))
        n = len(truth) if args.known_total else int(estimate_atom_number(image, model, "Pt").n)
        for k, w in [(k, w) for k in ks for w in ws]:
            t0 = time.perf_counter()
            rec = reconstruct(image, model, n, k, known_total=args.known_total, slides=not args.no_slides, seed=seed,
                              count_weight=w)
            row = {"seed": seed, "dose": args.dose, "stiffness": k, "count_weight": w,
                   **measure(rec, truth, image, model, e_truth), "seconds": time.perf_counter() - t0}
            rows.append(row)
            if not args.json:
                label = "unrelaxed" if k is None else ("free" if k == 0 else f"k={k:g}")
                label += "" if w is None else f" w={w:g}"
                print(f"seed {seed} {label:15s} atoms {row['atoms']} (truth {len(truth)})  E/atom {row['energy_per_atom']:.4f} "
                      f"(truth {e_truth:.4f}, {row['above_truth']:+.4f})  within 0.5 Å {row['within_0.5']:.1%}  "
                      f"columns = truth {row['columns_equal_truth']:.1%}  counts.csv: {row['counts_equal']:.1%} equal, "
                      f"{row['counts_within_1']:.1%} ±1 ({row['n_columns']} columns)  {row['seconds']:.0f} s", flush=True)
    if args.json:
        print(json.dumps({"truth_energy_per_atom": e_truth, "phonons": args.phonons, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
