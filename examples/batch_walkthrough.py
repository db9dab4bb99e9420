"""Batch walk-through (issue 4, "must show" 3): one image, four seeds, an ensemble, two comparisons.

What it does, step by step (everything goes to ``--work``):

1. **Model**: ``--model FILE``, else the shipped default model (378 terms).
2. **Truth and "experimental" image**: an EMT-relaxed Pt truncated
   octahedron (Pt38; Pt79 without ``--quick``) tilted off its zone axis, and
   its abTEM PRISM image (frozen phonons) with Poisson noise at ``--dose``
   e/Å², saved as ``experiment.npy`` (0.1 Å pixels, the paper's microscope).
   The image is a *multislice* image, not a surrogate one, so the refinement
   meets the surrogate's own error as it would on real data.
3. **Batch**: a TOML manifest with the image, the composition and four seeds
   (``manifest.toml``) run by ``stem-refine batch manifest.toml --out runs
   --workers 2``: four refinements as Dask tasks on a local cluster of two
   worker processes; results table ``runs/results.csv``.
4. **Ensemble** (:mod:`refine.analysis.ensemble`): the runs' best structures aligned
   and matched; consensus and per-atom spread in ``ensemble/``.
5. **Compare with the truth** (:mod:`refine.analysis.comparison`): RMSD, largest
   displacement and fractions within 0.3 / 0.5 / 1.0 Å, for the consensus and
   for every single run; and whether the spread flags the misplaced atoms.
6. **Compare with multislice** (:mod:`refine.analysis.image_comparison`): an abTEM PRISM
   image of the consensus against the experimental image (1 − R², fractional
   RMS), the surrogate image of the consensus against the same image, and the
   surrogate's own error on the consensus (surrogate vs PRISM image of the
   same atoms). For scale, the noise alone (noisy vs noise-free image of the
   truth) gives the floor.

Run from the repository root::

    python examples/batch_walkthrough.py --quick     # Pt38, ~3-5 min on 2 cores
    python examples/batch_walkthrough.py             # Pt79, longer runs, 8 phonons

The numbers are printed at the end and written to ``WORK/walkthrough.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

log = logging.getLogger("batch_walkthrough")

PIXEL = 0.1  # Å, the paper's (and the Combs et al. data's) pixel size
MARGIN = 3.0  # Å of image around the particle


# --------------------------------------------------------------------------- model

def get_model(path):
    """(model, description): the model file ``path``, else the shipped default model."""
    from refine.workflows import load_model_or_default

    return load_model_or_default(path)


# --------------------------------------------------------------------------- truth and image

def make_truth(n_layers: int, rng: np.random.Generator):
    """EMT-relaxed Pt truncated octahedron, tilted off its zone axis, centred in its probe grid.

    Returns (atoms, grid): the probe grid starts at (0, 0) so that an ``.npy``
    image file (origin (0, 0)) is in the truth's frame.
    """
    from ase.cluster import Octahedron
    from ase.optimize import FIRE
    from asap3 import EMT

    from surrogate.imaging import ProbeGrid

    atoms = Octahedron("Pt", n_layers, cutoff=(n_layers - 1) // 3 or 1)
    atoms.center(vacuum=10.0)
    atoms.calc = EMT()
    FIRE(atoms, logfile=None).run(fmax=0.02, steps=500)
    energy = float(atoms.get_potential_energy())
    atoms.calc = None
    axis = rng.normal(size=3)
    atoms.rotate(float(rng.uniform(8.0, 15.0)), axis, center="COP")  # a few degrees off the zone axis
    atoms.set_cell([0, 0, 0])
    atoms.pbc = False
    grid = ProbeGrid.around(atoms, PIXEL, MARGIN)
    atoms.positions[:, :2] -= np.asarray(grid.origin)
    grid = ProbeGrid(origin=(0.0, 0.0), shape=grid.shape, pixel_size=PIXEL)
    atoms.info["energy"] = energy
    return atoms, grid


def experimental_image(truth, grid, *, phonons: int, dose: float, rng: np.random.Generator):
    """(noisy, noise-free) PRISM images in units of the incident beam; Poisson noise at ``dose`` e/Å²."""
    import contextlib

    from surrogate.groundtruth import haadf_image

    with contextlib.redirect_stdout(sys.stderr):  # abTEM's progress bar; stdout is for the numbers
        clean = haadf_image(truth, grid, method="prism", phonons=phonons, seed=1, progress=True)
    electrons = dose * PIXEL ** 2  # incident electrons per probe position
    noisy = rng.poisson(np.clip(clean, 0.0, None) * electrons) / electrons
    return noisy, clean


def prepare_model(path, work: Path, timings: dict):
    """Step 1: (model, description, model file); the default model is saved as ``WORK/model.npz`` for the manifest."""
    t0 = time.perf_counter()
    model, model_desc = get_model(path)
    model_path = work / "model.npz"
    if path:
        model_path = Path(path).resolve()
    else:
        from surrogate.imaging import save_model

        save_model(model, model_path)
    timings["model_s"] = time.perf_counter() - t0
    print(f"model: {model_desc}", file=sys.stderr)
    return model, model_desc, model_path


def prepare_experiment(cfg: dict, dose: float, work: Path, rng: np.random.Generator, timings: dict):
    """Step 2: the truth (``truth.xyz``) and its noisy and noise-free PRISM images (``experiment*.npy``).

    Returns (truth, grid, noisy, clean, path of the noisy image).
    """
    from ase.io import write

    t0 = time.perf_counter()
    truth, grid = make_truth(cfg["n_layers"], rng)
    write(work / "truth.xyz", truth, format="extxyz")
    image_path = work / "experiment.npy"
    noisy, clean = experimental_image(truth, grid, phonons=cfg["phonons"], dose=dose, rng=rng)
    np.save(image_path, noisy)
    np.save(work / "experiment_noise_free.npy", clean)
    timings["experiment_s"] = time.perf_counter() - t0
    print(f"truth: {truth.get_chemical_formula()}, image {grid.shape[0]}x{grid.shape[1]} px at {PIXEL} Å, "
          f"dose {dose:g} e/Å²", file=sys.stderr)
    return truth, grid, noisy, clean, image_path


# --------------------------------------------------------------------------- the batch

def write_manifest(work: Path, *, model_path: Path, cfg: dict, dose: float, image_path: Path, composition: str,
                   seeds: list) -> Path:
    """``WORK/manifest.toml``: the image, its composition and one run per seed (``stem-refine batch``)."""
    manifest = work / "manifest.toml"
    manifest.write_text(
        "# one image refined from several seeds (stem-refine batch)\n"
        "[defaults]\n"
        f'model = "{model_path}"\n'
        f"population = {cfg['population']}\n"
        f"generations = {cfg['generations']}\n"
        f"time_limit = {cfg['time_limit']}\n"
        f"pixel_size = {PIXEL}\n"
        f'start = "{cfg["start"]}"\n'
        # the plain GA, as measured in examples/README.md (the default anneal search takes minutes per run)
        'search = "plain"\n'
        f"dose = {dose:g}              # Poisson noise model of chi2 (image in units of the beam)\n"
        "\n[[runs]]\n"
        f'name = "walkthrough"\n'
        f'image = "{image_path.name}"\n'
        f'composition = "{composition}"\n'
        f"seeds = {seeds}\n"
    )
    return manifest


# --------------------------------------------------------------------------- the numbers

def compare_with_truth(structures, consensus, truth) -> dict:
    """Per-run and consensus comparisons with the truth, and the ensemble spread of right and wrong atoms."""
    from refine.analysis import compare_structures

    per_run = [compare_structures(s, truth) for s in structures]
    cmp = compare_structures(consensus, truth)
    d = cmp.displacements
    spread = consensus.arrays["spread"]
    wrong = np.isfinite(d) & (d > 0.5)
    spread_right = float(spread[~wrong].mean()) if (~wrong).any() else float("nan")
    spread_wrong = float(spread[wrong].mean()) if wrong.any() else float("nan")
    return {"per_run": per_run, "consensus": cmp, "wrong": wrong, "spread_right": spread_right,
            "spread_wrong": spread_wrong}


def _within(c):
    return {f"within_{t}": c.within[t] for t in (0.3, 0.5, 1.0)}


def make_report(args, cfg, *, model_desc, composition, truth, grid, seeds, rows, ens, vs_truth, ms, floor,
                timings) -> dict:
    """What ``WORK/walkthrough.json`` holds."""
    cmp = vs_truth["consensus"]
    return {
        "quick": args.quick, "model": model_desc, "composition": composition, "n_atoms": len(truth),
        "image_shape": list(grid.shape), "pixel_size": PIXEL, "dose": args.dose, "phonons": cfg["phonons"],
        "settings": {k: cfg[k] for k in ("population", "generations", "time_limit", "start")},
        "seeds": seeds, "workers": args.workers,
        "runs": [{"name": r["name"], "best_cost": r["best_cost"], "chi2": r["chi2"], "energy": r["energy"],
                  "alpha": r["alpha"], "generations": r["generations"], "wall_time_s": r["wall_time_s"],
                  "rmsd": c.rmsd, **_within(c)} for r, c in zip(rows, vs_truth["per_run"])],
        "truth_energy": truth.info["energy"],
        "ensemble": {k: v for k, v in ens.to_dict().items() if k not in ("pairwise_rmsd",)},
        "consensus_vs_truth": {"rmsd": cmp.rmsd, "max_displacement": cmp.max_displacement, **_within(cmp),
                               "mirrored": cmp.mirrored,
                               "mean_spread_of_atoms_within_0.5": vs_truth["spread_right"],
                               "mean_spread_of_atoms_off_by_more_than_0.5": vs_truth["spread_wrong"],
                               "n_off_by_more_than_0.5": int(vs_truth["wrong"].sum())},
        "consensus_vs_image": {k: {m: v[m] for m in ("one_minus_r2", "frms")} for k, v in ms.items()
                               if k.endswith("_vs_image") or k == "surrogate_vs_multislice"},
        "noise_floor": {"one_minus_r2": floor["one_minus_r2"], "frms": floor["frms"]},
        "timings_s": timings,
    }


def print_report(report: dict, args, cfg, *, truth, grid, rows, vs_truth, work: Path) -> None:
    """The numbers on stdout: a table of the runs and the consensus against the truth and the image."""
    cmp, floor, timings = vs_truth["consensus"], report["noise_floor"], report["timings_s"]
    print()
    print(f"{len(truth)}-atom Pt truncated octahedron, {grid.shape[0]}x{grid.shape[1]} px PRISM image "
          f"({cfg['phonons']} phonons, dose {args.dose:g} e/Å²); model: {report['model']}")
    print(f"{len(rows)} refinements on {args.workers} workers in {timings['batch_s']:.0f} s "
          f"(population {cfg['population']}, ≤ {cfg['generations']} generations, start {cfg['start']!r})")
    print(f"{'run':<20} {'cost':>10} {'E (eV)':>9} {'RMSD (Å)':>9} {'≤0.3 Å':>7} {'≤0.5 Å':>7} {'≤1.0 Å':>7}")
    for r, c in zip(rows, vs_truth["per_run"]):
        print(f"{r['name']:<20} {r['best_cost']:>10.4g} {r['energy']:>9.3f} {c.rmsd:>9.3f} "
              f"{c.within[0.3]:>7.1%} {c.within[0.5]:>7.1%} {c.within[1.0]:>7.1%}")
    print(f"{'consensus':<20} {'':>10} {'':>9} {cmp.rmsd:>9.3f} "
          f"{cmp.within[0.3]:>7.1%} {cmp.within[0.5]:>7.1%} {cmp.within[1.0]:>7.1%}")
    print(f"{'truth':<20} {'':>10} {truth.info['energy']:>9.3f}   (EMT energy of the true structure)")
    e = report["ensemble"]
    print(f"ensemble spread per atom: mean {e['mean_spread']:.3f} Å (in-plane {e['mean_spread_xy']:.3f}, "
          f"along the beam {e['mean_spread_z']:.3f}); max {e['max_spread']:.3f} Å")
    print(f"spread of consensus atoms within 0.5 Å of the truth: {vs_truth['spread_right']:.3f} Å; of the "
          f"{int(vs_truth['wrong'].sum())} farther: {vs_truth['spread_wrong']:.3f} Å")
    ci = report["consensus_vs_image"]
    print("consensus against the experimental image (1 − R², fractional RMS):")
    print(f"  multislice (PRISM) image  {ci['multislice_vs_image']['one_minus_r2']:.4f}  "
          f"{ci['multislice_vs_image']['frms']:.4f}")
    print(f"  surrogate image           {ci['surrogate_vs_image']['one_minus_r2']:.4f}  "
          f"{ci['surrogate_vs_image']['frms']:.4f}")
    print(f"  surrogate vs multislice   {ci['surrogate_vs_multislice']['one_minus_r2']:.4f}  "
          f"{ci['surrogate_vs_multislice']['frms']:.4f}   (the surrogate's own error on the consensus)")
    print(f"  noise floor               {floor['one_minus_r2']:.4f}  {floor['frms']:.4f}   "
          "(noisy vs noise-free image of the truth)")
    print(f"total {timings['total_s']:.0f} s; files in {work}")


# --------------------------------------------------------------------------- main

def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="Pt38, short runs, 2 phonons (a few minutes on 2 cores)")
    ap.add_argument("--work", default="walkthrough", help="work folder (default ./walkthrough)")
    ap.add_argument("--model", default=None, help="surrogate model file (default: the shipped default model)")
    ap.add_argument("--workers", type=int, default=2, help="local Dask worker processes (default 2)")
    ap.add_argument("--seeds", type=int, default=4, help="refinements of the image, one per seed (default 4)")
    ap.add_argument("--dose", type=float, default=5e5, help="electron dose of the experiment, e/Å² (default 5e5)")
    ap.add_argument("--seed", type=int, default=2024, help="seed of the truth's tilt and the image noise")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    from ase.io import read

    from refine.analysis import build_ensemble, compare_with_image, plot_image_comparison, write_ensemble
    from refine.cli.main import main as stem_refine
    from refine.io import read_image
    from refine.workflows import read_results
    from surrogate.training import pooled_metrics

    cfg = {
        "n_layers": 4 if args.quick else 5,
        "phonons": 2 if args.quick else 8,
        "population": 24 if args.quick else 40,
        "generations": 150 if args.quick else 600,
        "time_limit": 120 if args.quick else 900,
        "start": "mixed",
    }
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    t_all = time.perf_counter()
    timings = {}

    # 1. model; 2. truth and its "experimental" PRISM image
    model, model_desc, model_path = prepare_model(args.model, work, timings)
    truth, grid, noisy, clean, image_path = prepare_experiment(cfg, args.dose, work, rng, timings)
    composition = truth.get_chemical_formula()

    # 3. the batch: one manifest, one command
    seeds = list(range(1, args.seeds + 1))
    manifest = write_manifest(work, model_path=model_path, cfg=cfg, dose=args.dose, image_path=image_path,
                              composition=composition, seeds=seeds)
    runs = work / "runs"
    command = ["batch", str(manifest), "--out", str(runs), "--workers", str(args.workers)]
    print("$ stem-refine " + " ".join(command), file=sys.stderr)
    t0 = time.perf_counter()
    rc = stem_refine(command)
    timings["batch_s"] = time.perf_counter() - t0
    if rc != 0:
        print(f"stem-refine batch ended with status {rc}", file=sys.stderr)
        return rc
    rows = read_results(runs)

    # 4. ensemble
    t0 = time.perf_counter()
    structures = [read(Path(r["out_dir"]) / "best.xyz") for r in rows]
    ens = build_ensemble(structures)
    write_ensemble(ens, work / "ensemble", sources=[r["out_dir"] for r in rows])
    consensus = ens.consensus
    timings["ensemble_s"] = time.perf_counter() - t0

    # 5. against the truth
    vs_truth = compare_with_truth(structures, consensus, truth)

    # 6. against multislice
    t0 = time.perf_counter()
    image = read_image(image_path, pixel_size=PIXEL, target_pixel_size=model.convolution_parameters.pixel_size)
    ms = compare_with_image(consensus, image, model, multislice=True, method="prism", phonons=cfg["phonons"])
    plot_image_comparison(ms, work / "consensus_vs_image.png")
    timings["multislice_s"] = time.perf_counter() - t0
    floor = pooled_metrics(noisy.ravel(), clean.ravel())
    timings["total_s"] = time.perf_counter() - t_all

    report = make_report(args, cfg, model_desc=model_desc, composition=composition, truth=truth, grid=grid,
                         seeds=seeds, rows=rows, ens=ens, vs_truth=vs_truth, ms=ms, floor=floor, timings=timings)
    (work / "walkthrough.json").write_text(json.dumps(report, indent=2, default=float) + "\n")
    print_report(report, args, cfg, truth=truth, grid=grid, rows=rows, vs_truth=vs_truth, work=work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
