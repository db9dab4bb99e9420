"""Search tuning on the small shipped abTEM image (``tests/data/small``, Pt70): seeds × doses × settings.

The default suite refines this image for a few generations
(``tests/refine/test_independent_refinement.py``); this runner measures the
same kind of run over several seeds, both doses and any search settings, so
that a change to the search is judged on an image the surrogate did not make.
Runs are bounded by generations (deterministic on a loaded machine); each
prints one JSON row: fractions within 0.3/0.5 Å after alignment, E and χ²/px
of the answer, generations, evaluations and wall time::

    python tests/benchmarks/bench_search_small.py --seeds 0,1,2,3 --doses high,realistic --generations 6 \\
        --population 10 --set anneal_steps=2000

``--set NAME=VALUE`` changes a search setting by its flat name (see
``refine.search.FLAT_NAMES``; values are read as JSON where they parse).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "refine"))
from small_case import HIGH_DOSE, REALISTIC_DOSE, SMALL, noisy_small_image  # noqa: E402

#: dose name -> electrons per Å²
DOSES = {"realistic": REALISTIC_DOSE, "high": HIGH_DOSE}


def _value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def run_one(dose_name: str, seed: int, args, ga_options: dict) -> dict:
    from ase.io import read

    from refine.analysis import compare_structures
    from refine.workflows import refine_image
    from refine.workflows.settings import refinement_settings

    meta = json.loads((SMALL / "image.json").read_text())
    truth = read(str(SMALL / "truth.xyz"))
    pixel, dose = float(meta["pixel_size"]), DOSES[dose_name]
    image = noisy_small_image(dose)  # the noise the default suite's tests draw
    with tempfile.TemporaryDirectory() as tmp:
        if args.keep:
            tmp = Path(args.keep) / f"{dose_name}-seed{seed}"
        t0 = time.perf_counter()
        res = refine_image(image, meta["composition"], out_dir=tmp, **refinement_settings(
            pixel_size=pixel, dose=dose, seed=seed, generations=args.generations, population=args.population,
            progress=False, ga_options=ga_options))
        wall = time.perf_counter() - t0
        best = read(str(Path(tmp) / "best.xyz"))
    cmp = compare_structures(best, truth, mirror=True)
    s = res.summary
    return {"dose": dose_name, "seed": seed, "within_0.5": round(cmp.within[0.5], 3),
            "within_0.3": round(cmp.within[0.3], 3), "energy": round(s["energy"], 2),
            "chi2_per_pixel": round(s["chi2_per_pixel"], 3), "generations": s["generations"],
            "evaluations": s["evaluations"], "wall_s": round(wall, 1), "population": args.population,
            **ga_options}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0,1,2,3")
    p.add_argument("--doses", default="high,realistic")
    p.add_argument("--generations", type=int, default=6)
    p.add_argument("--population", type=int, default=10)
    p.add_argument("--keep", metavar="DIR", help="keep each run's folder under DIR (default: discarded)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    args = p.parse_args(argv)
    ga_options = {}
    for item in args.set:
        name, _, value = item.partition("=")
        ga_options[name.strip()] = _value(value.strip())
    for dose_name in args.doses.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            print(json.dumps(run_one(dose_name, seed, args, ga_options)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
