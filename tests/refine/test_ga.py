"""The DEAP loop: types, toolbox, logbook, stopping, checkpoints and exact resume (refine.search.ga, .checkpoint)."""

from __future__ import annotations

import csv
import math
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from ase.cluster import Icosahedron

from surrogate.common.errors import InputError, StemRefineError
from refine.search import CHECKPOINT_NAME, LOGBOOK_NAME, GASettings, load_checkpoint, make_toolbox, run_ga
from refine.search.geometry import composition_of, default_min_distance, min_interatomic_distance
from refine.search.individuals import StemIndividual, as_atoms, to_individual
from refine.search.logbook import LOGBOOK_COLUMNS
from refine.search.population import make_population
from refine.search.progress import PROGRESS_NAME, read_progress

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
from ga_toy import ToyFitness  # noqa: E402


def _target():
    t = Icosahedron("Pt", 2)  # Pt13
    t.positions -= t.positions.mean(axis=0)
    return t


def _settings(**kw):
    """Settings by flat names (what the CLI and manifests set), small defaults for these tests."""
    base = dict(population_size=6, generations=4, progress=False, hall_of_fame_size=3)
    base.update(kw)
    return GASettings.from_flat(base)


def _run(tmp_path, seed=11, fitness=None, **kw):
    rng = np.random.default_rng(seed)
    fit = fitness or ToyFitness(_target())
    pop = make_population("Pt13", 6, rng)
    return run_ga(fit, pop, _settings(**kw), tmp_path, rng=rng, difference=getattr(fit, "difference", None))


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_individuals_pickle_in_a_fresh_process():
    ind = to_individual(_target())
    ind.fitness.values = (1.5,)
    ind.info["cost"] = 1.5
    blob = pickle.dumps([ind])
    # a fresh interpreter that never imported refine (as a Dask worker might be)
    code = ("import pickle, sys, ase; (ind,) = pickle.loads(sys.stdin.buffer.read()); "
            "print(isinstance(ind, ase.Atoms), type(ind).__name__, ind.fitness.weights[0], ind.fitness.values[0], "
            "len(ind), 'refine' in sys.modules and 'refine.search.individuals' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], input=blob, capture_output=True, cwd=REPO, check=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    words = out.stdout.decode().split()
    assert words[:5] == ["True", "StemIndividual", "-1.0", "1.5", "13"]


def test_individual_is_atoms_with_fitness():
    ind = to_individual(_target())
    assert isinstance(ind, StemIndividual) and not ind.fitness.valid
    copy = ind.copy()
    assert isinstance(copy, StemIndividual) and composition_of(copy) == {"Pt": 13}
    plain = as_atoms(ind)
    assert type(plain).__name__ == "Atoms" and np.array_equal(plain.positions, ind.positions)


def test_make_toolbox_registers_the_deap_contract():
    rng = np.random.default_rng(0)
    tb = make_toolbox(ToyFitness(_target()), {"Pt": 13}, _settings(), rng)
    for name in ("mate", "mutate", "select", "evaluate", "map", "clone", "survive", "individual"):
        assert hasattr(tb, name), name
    ind = tb.individual(_target())
    cost, chi2, energy, dx, dy = tb.evaluate(ind)
    assert chi2 == pytest.approx(0.0, abs=1e-12) and cost == pytest.approx(energy)
    assert (dx, dy) == (0.0, 0.0)  # the toy fitness reports no alignment shift
    (m,) = tb.mutate(tb.clone(ind))
    assert composition_of(m) == {"Pt": 13}


def test_logbook_columns_csv_and_consistency(tmp_path):
    res = _run(tmp_path, generations=5, alpha=2.0)
    rows = _rows(tmp_path / LOGBOOK_NAME)
    assert tuple(rows[0].keys()) == LOGBOOK_COLUMNS
    assert [int(r["gen"]) for r in rows] == list(range(6))
    assert len(res.logbook) == 6 and res.generation == 5 and res.stop_reason == "generations"
    best = [float(r["best_cost"]) for r in rows]
    assert all(b2 <= b1 for b1, b2 in zip(best, best[1:]))  # (μ+λ) is elitist
    for r in rows:
        assert float(r["best_cost"]) == pytest.approx(float(r["best_energy"]) + 2.0 * float(r["best_chi2"]))
        assert float(r["min_cost"]) <= float(r["mean_cost"])
        assert float(r["alpha"]) == 2.0
    assert res.evaluations == sum(int(r["nevals"]) for r in rows) == 6 * 6
    # the best structure is the hall of fame's first, consistent with the logbook
    assert res.best.info["cost"] == pytest.approx(best[-1])
    assert res.hall_of_fame[0].info["cost"] == res.best.info["cost"]
    assert composition_of(res.best) == {"Pt": 13}
    assert min_interatomic_distance(res.best.positions) >= default_min_distance({"Pt": 13}) * (1 - 1e-6)


def test_generational_replacement_keeps_the_elite(tmp_path):
    res = _run(tmp_path, generations=6, replacement="generational", elite=1, crossover_probability=0.9,
               mutation_probability=1.0)
    best = [r["best_cost"] for r in res.logbook]
    assert all(b2 <= b1 for b1, b2 in zip(best, best[1:]))
    assert len(res.population) == 6
    # the hall of fame holds distinct structures, best first
    from refine.search.selection import SimilarityCriterion

    same = SimilarityCriterion(1e-4, 0.03)
    fame = res.hall_of_fame
    costs = [a.info["cost"] for a in fame]
    assert costs == sorted(costs)
    assert not any(same(fame[i], fame[j]) for i in range(len(fame)) for j in range(i + 1, len(fame)))


def test_immigrants_are_evaluated_each_generation(tmp_path):
    res = _run(tmp_path, generations=3, immigrants=2)
    assert [r["nevals"] for r in res.logbook] == [6, 8, 8, 8]
    assert res.evaluations == 6 + 3 * 8


def test_ga_improves_on_the_starting_population(tmp_path):
    res = _run(tmp_path, generations=25, alpha=1.0, relax_steps=0)
    first, last = res.logbook[0]["best_cost"], res.logbook[-1]["best_cost"]
    assert last < first - 0.2 * abs(first)


def test_alpha_auto_calls_calibrate(tmp_path):
    fit = ToyFitness(_target(), alpha=123.0)
    res = _run(tmp_path, fitness=fit, generations=1, alpha="auto")
    assert res.alpha == fit.alpha != 123.0
    assert res.best.info["alpha"] == res.alpha


def test_same_seed_same_run(tmp_path):
    a = _run(tmp_path / "a", generations=4)
    b = _run(tmp_path / "b", generations=4)
    assert np.array_equal(a.best.positions, b.best.positions)
    strip = [{k: v for k, v in r.items() if k != "elapsed_s"} for r in a.logbook]
    assert strip == [{k: v for k, v in r.items() if k != "elapsed_s"} for r in b.logbook]


def test_resume_in_process_equals_uninterrupted(tmp_path):
    full = _run(tmp_path / "full", generations=6, checkpoint_every=2)
    _run(tmp_path / "part", generations=3, checkpoint_every=2)
    assert load_checkpoint(tmp_path / "part")["generation"] == 3
    rng = np.random.default_rng(999)  # any state: the checkpoint's is restored
    fit = ToyFitness(_target())
    resumed = run_ga(fit, None, _settings(generations=6, checkpoint_every=2), tmp_path / "part",
                     rng=rng, resume=True, composition={"Pt": 13}, difference=fit.difference)
    assert np.array_equal(full.best.positions, resumed.best.positions)
    assert full.best.info["cost"] == resumed.best.info["cost"]
    assert [r["best_cost"] for r in full.logbook] == [r["best_cost"] for r in resumed.logbook]
    frames = read_progress(tmp_path / "part" / PROGRESS_NAME)
    assert [f.info["generation"] for f in frames] == list(range(len(full.logbook)))
    # the best of each generation, as the logbook has it (plus replacement: never worse)
    assert [f.info["cost"] for f in frames] == pytest.approx([r["best_cost"] for r in full.logbook], rel=1e-12)
    assert np.allclose(frames[-1].positions, full.best.positions, atol=1e-6)


def test_stagnation_stop(tmp_path):
    class Flat:
        alpha = 1.0

        def evaluate(self, atoms):
            return {"cost": 1.0, "chi2": 0.0, "energy": 1.0}

    res = _run(tmp_path, fitness=Flat(), generations=50, stagnation=3)
    assert res.stop_reason == "stagnation"
    assert res.generation == 3 and len(res.logbook) == 4


def test_time_limit_stop(tmp_path):
    fit = ToyFitness(_target(), delay=0.01)
    t0 = time.perf_counter()
    res = _run(tmp_path, fitness=fit, generations=1000, time_limit=0.5)
    assert res.stop_reason == "time_limit"
    assert time.perf_counter() - t0 < 10
    assert 1 <= res.generation < 1000


def test_multi_objective_returns_a_pareto_front(tmp_path):
    res = _run(tmp_path, generations=4, multi_objective=True, alpha=1.0)
    front = res.pareto_front
    assert front and res.hall_of_fame == front
    pts = np.array([(a.info["chi2"], a.info["energy"]) for a in front])
    assert np.all(np.diff(pts[:, 0]) >= 0)  # sorted by χ²
    for i, p in enumerate(pts):  # mutually non-dominated
        others = np.delete(pts, i, axis=0)
        assert not np.any(np.all(others <= p, axis=1) & np.any(others < p, axis=1))
    assert any(np.array_equal(res.best.positions, a.positions) for a in front)


def test_multi_objective_without_alpha_and_stagnation(tmp_path):
    class Pareto:  # like Fitness(mode="pareto") before calibration: no cost
        alpha = None

        def __init__(self):
            self.toy = ToyFitness(_target())

        def evaluate(self, atoms):
            r = self.toy.evaluate(atoms)
            return {"cost": math.nan, "chi2": r.chi2, "energy": r.energy}

    res = _run(tmp_path, fitness=Pareto(), generations=40, multi_objective=True, alpha=None, stagnation=2)
    front = res.pareto_front
    assert res.best.info["chi2"] == min(a.info["chi2"] for a in front)  # best = lowest χ² without a cost
    assert res.stop_reason == "stagnation" and res.generation < 40
    assert math.isnan(res.logbook[-1]["min_cost"]) and math.isfinite(res.logbook[-1]["best_chi2"])


def test_bad_inputs(tmp_path):
    fit = ToyFitness(_target())
    rng = np.random.default_rng(0)
    with pytest.raises(InputError, match="composition"):
        run_ga(fit, make_population("Pt12", 2, rng), _settings(), tmp_path, rng=rng, composition={"Pt": 13})
    with pytest.raises(InputError, match="population"):
        run_ga(fit, [], _settings(), tmp_path, rng=rng)
    with pytest.raises(InputError, match="population_size"):
        _settings(population_size=0).validate()
    with pytest.raises(InputError, match="mutation"):
        _settings(mutation_weights={"teleport": 1.0}).validate()
    with pytest.raises(InputError, match="alpha"):
        _settings(alpha="big").validate()
    _run(tmp_path / "so", generations=1)
    with pytest.raises(InputError, match="objective"):
        run_ga(fit, None, _settings(multi_objective=True), tmp_path / "so", rng=rng, resume=True)
    with pytest.raises(InputError, match="no checkpoint"):
        load_checkpoint(tmp_path / "nowhere")


def test_multi_objective_needs_chi2_and_energy(tmp_path):
    with pytest.raises(StemRefineError, match="finite"):
        _run(tmp_path, fitness=lambda atoms: 1.0, multi_objective=True, alpha=None)


# --- checkpoints: npz + JSON, exact, never unpickled ------------------------------------------

def _bits(values) -> list[str]:
    return [float(v).hex() for v in np.ravel(values)]


def test_checkpoint_holds_the_run_exactly(tmp_path):
    # the checkpoint written at the end of a run holds its population, hall of fame, logbook and generator state,
    # bit for bit, and the generator restored from it draws what the run's own would draw next
    rng = np.random.default_rng(11)
    fit = ToyFitness(_target())
    res = run_ga(fit, make_population("Pt13", 6, rng), _settings(generations=3), tmp_path, rng=rng,
                 difference=fit.difference)
    state = load_checkpoint(tmp_path)
    assert state["generation"] == 3 and state["evaluations"] == res.evaluations
    assert state["alpha"] == res.alpha and state["composition"] == {"Pt": 13}
    for saved, final in ((state["population"], res.population), (list(state["hall_of_fame"]), res.hall_of_fame)):
        assert len(saved) == len(final) > 0
        for ind, atoms in zip(saved, final):
            assert isinstance(ind, StemIndividual)
            assert _bits(ind.positions) == _bits(atoms.positions) and list(ind.numbers) == list(atoms.numbers)
            assert ind.info == atoms.info and _bits(ind.fitness.values) == _bits([atoms.info["cost"]])
    keys = [k.values[0] for k in state["hall_of_fame"].keys]
    assert keys == sorted(keys, reverse=True)  # DEAP's order: worst first, the reverse of the items
    assert list(state["logbook"]) == list(res.logbook)
    assert [_bits([r[k] for k in LOGBOOK_COLUMNS]) for r in state["logbook"]] == \
        [_bits([r[k] for k in LOGBOOK_COLUMNS]) for r in res.logbook]
    assert state["rng_state"] == rng.bit_generator.state
    again = np.random.default_rng(0)
    again.bit_generator.state = state["rng_state"]
    assert _bits(again.random(8)) == _bits(rng.random(8))
    assert list(again.integers(0, 2**63 - 1, size=4)) == list(rng.integers(0, 2**63 - 1, size=4))


def test_checkpoint_round_trip_keeps_every_float_and_type(tmp_path):
    # awkward values through save and load: NaN, ±inf, −0.0, a subnormal, 17-digit floats, NumPy scalars in info,
    # an invalid fitness, a two-objective Pareto front, 128-bit generator state
    from deap import tools

    from refine.search.checkpoint import save_checkpoint

    rng = np.random.default_rng(2024)
    awkward = [math.nan, math.inf, -math.inf, -0.0, 5e-324, 0.1 + 0.2, 1 / 3, -2.718281828459045e100]
    inds = []
    for k in range(3):
        ind = to_individual(_target(), multi_objective=True)
        ind.positions = ind.positions + rng.normal(size=ind.positions.shape) * 1e-3
        ind.info.update(cost=awkward[k], chi2=np.float64(awkward[k + 3]), energy=awkward[k + 5], gen=np.int64(k),
                        operator="rattle", flag=np.bool_(k % 2), note=None)
        if k:
            ind.fitness.values = (awkward[k + 4], rng.normal())
        inds.append(ind)
    front = tools.ParetoFront()
    front.update(inds[1:])
    logbook = tools.Logbook()
    logbook.header = list(LOGBOOK_COLUMNS)
    logbook.record(gen=0, nevals=3, best_cost=math.nan, elapsed_s=0.125, alpha=1 / 7)
    settings = _settings(multi_objective=True).to_flat()
    state = {"generation": 7, "population": inds, "hall_of_fame": front, "logbook": logbook, "best_cost": math.inf,
             "stale": 2, "evaluations": 40, "elapsed": 12.345678901234567, "alpha": None,
             "rng_state": rng.bit_generator.state, "settings": settings, "composition": {"Pt": 13},
             "operators": "MutationSelector(1.00:rattle)", "finishing": False, "search_alpha": None,
             "anneal_seconds": 0.0, "polish_seconds": 1e-9, "n_out_of_domain": 5}
    save_checkpoint(tmp_path / "c.npz", state)
    back = load_checkpoint(tmp_path / "c.npz")
    for key in ("generation", "stale", "evaluations", "alpha", "rng_state", "settings", "composition", "operators",
                "finishing", "search_alpha", "n_out_of_domain"):
        assert back[key] == state[key], key
    for key in ("best_cost", "elapsed", "anneal_seconds", "polish_seconds"):
        assert _bits([back[key]]) == _bits([state[key]]), key
    for a, b in zip(back["population"], inds):
        assert _bits(a.positions) == _bits(b.positions) and a.positions.dtype == np.float64
        assert a.fitness.valid == b.fitness.valid and _bits(a.fitness.values) == _bits(b.fitness.values)
        assert a.fitness.weights == (-1.0, -1.0)
        assert list(a.info) == list(b.info) and a.info["operator"] == "rattle" and a.info["note"] is None
        assert _bits([a.info[k] for k in ("cost", "chi2", "energy")]) == _bits([b.info[k] for k in ("cost", "chi2",
                                                                                                 "energy")])
        assert a.info["gen"] == b.info["gen"] and type(a.info["gen"]) is int
        assert a.info["flag"] == b.info["flag"] and type(a.info["flag"]) is bool
    assert isinstance(back["hall_of_fame"], tools.ParetoFront)
    assert [_bits(h.positions) for h in back["hall_of_fame"]] == [_bits(h.positions) for h in front]
    assert [k.values for k in back["hall_of_fame"].keys] == [k.values for k in front.keys]
    assert _bits([back["logbook"][0]["best_cost"], back["logbook"][0]["alpha"]]) == _bits([math.nan, 1 / 7])


class _Payload:
    """Unpickling it opens (creates) a file: the stand-in for code that a crafted pickle runs on load."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_the_payload_runs_when_unpickled(tmp_path):
    # the marker trick below is live: plain unpickling does create the file
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(_Payload(marker))).close()
    assert marker.exists()


def test_a_crafted_checkpoint_cannot_run_code(tmp_path):
    # a checkpoint.npz whose positions are an object array holding a pickled payload: np.load would need to
    # unpickle it; load_checkpoint (allow_pickle=False) refuses the file and the payload never runs
    _run(tmp_path / "run", generations=1)
    good = tmp_path / "run" / CHECKPOINT_NAME
    marker = tmp_path / "ran"
    with np.load(good) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["population_positions"] = np.array([_Payload(marker)], dtype=object)
    with open(good, "wb") as fh:
        np.savez(fh, **arrays)  # np.savez pickles object arrays
    with pytest.raises(InputError, match="cannot read checkpoint") as err:
        load_checkpoint(tmp_path / "run")
    assert "\n" not in str(err.value)
    fit = ToyFitness(_target())
    with pytest.raises(InputError, match="cannot read checkpoint"):
        run_ga(fit, None, _settings(generations=2), tmp_path / "run", rng=np.random.default_rng(0), resume=True)
    assert not marker.exists()


def test_an_old_pickled_checkpoint_is_refused_without_being_opened(tmp_path):
    # a folder from an older stem-refine holds checkpoint.pkl: loading and resuming refuse it with a one-line
    # error, and the pickle is never loaded (its payload would create the marker)
    out = tmp_path / "old"
    out.mkdir()
    marker = tmp_path / "ran"
    (out / "checkpoint.pkl").write_bytes(pickle.dumps({"version": 1, "generation": 3, "x": _Payload(marker)}))
    for where in (out, out / "checkpoint.pkl", out / CHECKPOINT_NAME):
        with pytest.raises(InputError, match="old pickle format") as err:
            load_checkpoint(where)
        assert "\n" not in str(err.value) and "new run" in str(err.value)
    fit = ToyFitness(_target())
    with pytest.raises(InputError, match="old pickle format"):
        run_ga(fit, None, _settings(generations=2), out, rng=np.random.default_rng(0), resume=True)
    assert not marker.exists()


_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    from ase.cluster import Icosahedron
    from ga_toy import ToyFitness
    from refine.search import GASettings, StoppingSettings, run_ga
    from refine.search.population import make_population

    out, resume = sys.argv[1], sys.argv[2] == "resume"
    target = Icosahedron("Pt", 2)
    target.positions -= target.positions.mean(axis=0)
    fit = ToyFitness(target, delay=float(sys.argv[3]))
    rng = np.random.default_rng(2024)
    pop = make_population("Pt13", 6, rng)
    settings = GASettings(population_size=6, alpha="auto", checkpoint_every=1, progress=False,
                          stopping=StoppingSettings(generations=12))
    res = run_ga(fit, pop, settings, out, rng=rng, resume=resume, difference=fit.difference)
    np.save(out + "/best.npy", np.column_stack([res.best.numbers, res.best.positions]))
""")


def test_killed_and_resumed_run_ends_like_an_uninterrupted_one(tmp_path):
    script = tmp_path / "ga_run.py"
    script.write_text(_SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(HERE)])}

    def run(out, mode, delay):
        return subprocess.Popen([sys.executable, str(script), str(out), mode, str(delay)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    full_dir, killed_dir = tmp_path / "full", tmp_path / "killed"
    full = run(full_dir, "new", 0.0)
    victim = run(killed_dir, "new", 0.05)  # ~0.3 s per generation: killed mid-run
    ckpt = killed_dir / CHECKPOINT_NAME
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if ckpt.exists():
            try:
                if load_checkpoint(ckpt)["generation"] >= 2:
                    break
            except InputError:
                pass  # os.replace makes this impossible; kept for safety
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait(timeout=60) == -signal.SIGKILL, victim.stderr.read().decode()[-2000:]
    stopped_at = load_checkpoint(ckpt)["generation"]
    assert 2 <= stopped_at < 12
    assert not (killed_dir / "best.npy").exists()
    resumed = run(killed_dir, "resume", 0.0)
    for p in (full, resumed):
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()[-2000:]
    assert np.array_equal(np.load(full_dir / "best.npy"), np.load(killed_dir / "best.npy"))
    strip = [{k: v for k, v in r.items() if k != "elapsed_s"} for r in _rows(full_dir / LOGBOOK_NAME)]
    assert strip == [{k: v for k, v in r.items() if k != "elapsed_s"} for r in _rows(killed_dir / LOGBOOK_NAME)]
    assert math.isfinite(float(_rows(full_dir / LOGBOOK_NAME)[-1]["alpha"]))
    # progress.xyz: one frame per generation, the generations the kill cut short written once
    full_frames, killed_frames = read_progress(full_dir / PROGRESS_NAME), read_progress(killed_dir / PROGRESS_NAME)
    assert [f.info["generation"] for f in full_frames] == list(range(len(strip)))
    assert [f.info["generation"] for f in killed_frames] == list(range(len(strip)))
    for a, b in zip(full_frames, killed_frames):
        assert np.array_equal(a.positions, b.positions) and a.info["cost"] == b.info["cost"]


@pytest.fixture(scope="module")
def real_fitness_factory():
    """Builds refine.cost.fitness.Fitness objects on a small fitted surrogate and a synthetic image."""
    fitness_mod = pytest.importorskip("refine.cost.fitness")
    from scipy.ndimage import gaussian_filter

    from refine.io.images import read_image
    from surrogate.imaging.convolution import convolution_image
    from surrogate.imaging.grid import ProbeGrid
    from surrogate.imaging.model import PolynomialSurrogate

    rng = np.random.default_rng(0)
    convs, ms = [], []
    for a in (Icosahedron("Pt", 3), Icosahedron("Pt", 2)):
        a.rotate(rng.uniform(0, 360), rng.normal(size=3))
        c = convolution_image(a, ProbeGrid.around(a, 0.1, 3.0))
        convs.append(c)
        ms.append(0.5 * np.sqrt(np.maximum(gaussian_filter(c, 1.0), 0.0)) + 0.01)
    model = PolynomialSurrogate(size=3, degree=2, log_term=False).fit(convs, ms, elements=["Pt"])
    truth = _target()
    grid = ProbeGrid(origin=(-7.0, -6.5), shape=(130, 140), pixel_size=0.1)
    img = read_image(3 * model.simulate(truth, grid) + 0.2, pixel_size=0.1, origin=grid.origin)
    return lambda: fitness_mod.Fitness(model, img, alpha="auto", noise=0.01, calculator="emt")


def test_with_the_real_fitness_individuals_end_aligned_on_the_image(tmp_path, real_fitness_factory):
    from refine.search import FitnessDifference

    rng = np.random.default_rng(0)
    fit = real_fitness_factory()
    pop = make_population("Pt13", 6, rng)
    for a in pop:
        a.positions[:, :2] += 1.0  # start off the image centre
    res = run_ga(fit, pop, _settings(generations=3, mutation_weights={"image_guided": 5.0}), tmp_path, rng=rng,
                 difference=FitnessDifference(fit))
    assert res.alpha == fit.alpha and res.alpha > 0
    # re-evaluated from its aligned position: equal up to the alignment tolerance
    assert res.best.info["chi2"] == pytest.approx(fit.evaluate(res.best).chi2, rel=1e-3)
    # every survivor was moved by its alignment shift: re-evaluating finds little of the
    # 1.41 Å start offset left (wrong structures have fuzzy optima: ~0.1 Å)
    for a in res.population:
        assert np.hypot(*fit.evaluate(a).shift) < 0.3
    assert any(a.info.get("operator") == "image_guided" for a in res.population + res.hall_of_fame) or \
        res.logbook[-1]["best_cost"] <= res.logbook[0]["best_cost"]


def test_resume_with_the_real_fitness_equals_uninterrupted(tmp_path, real_fitness_factory):
    from refine.search import FitnessDifference

    def run(out, generations, resume=False):
        rng = np.random.default_rng(3)
        fit = real_fitness_factory()
        pop = make_population("Pt13", 6, rng)
        return run_ga(fit, pop, _settings(generations=generations, relax_steps=5), out, rng=rng, resume=resume,
                      difference=FitnessDifference(fit), calculator="emt")

    full = run(tmp_path / "full", 4)
    run(tmp_path / "part", 2)
    resumed = run(tmp_path / "part", 4, resume=True)
    assert np.array_equal(full.best.positions, resumed.best.positions)
    assert [r["best_cost"] for r in full.logbook] == [r["best_cost"] for r in resumed.logbook]
    frames = read_progress(tmp_path / "part" / PROGRESS_NAME)
    assert [f.info["generation"] for f in frames] == list(range(len(full.logbook)))
    # the best of each generation, as the logbook has it (plus replacement: never worse)
    assert [f.info["cost"] for f in frames] == pytest.approx([r["best_cost"] for r in full.logbook], rel=1e-12)
    assert np.allclose(frames[-1].positions, full.best.positions, atol=1e-6)


@pytest.mark.parametrize("moves", [1, 4])
def test_image_guided_moves_sets_atoms_moved_per_mutation(moves):
    fit = ToyFitness(_target())
    rng = np.random.default_rng(3)
    only_guided = {k: 0.0 for k in ("rattle", "surface_move", "rotation", "mirror")} | {"image_guided": 1.0}
    tb = make_toolbox(fit, {"Pt": 13}, _settings(mutation_weights=only_guided, image_guided_moves=moves), rng,
                      difference=fit.difference)
    moved = []
    for seed in range(6):
        start = to_individual(make_population("Pt13", 1, np.random.default_rng(seed))[0])
        (child,) = tb.mutate(tb.clone(start))
        moved.append(int(np.count_nonzero(np.linalg.norm(child.positions - start.positions, axis=1) > 1e-9)))
    if moves == 1:
        assert max(moved) <= 1
    else:
        assert max(moved) >= 2 and max(moved) <= moves
    with pytest.raises(InputError, match="image_guided_moves"):
        _settings(image_guided_moves=0).validate()


def test_a_time_limited_run_keeps_room_to_polish_its_last_generation():
    # a timeline: generations of 10 s, polishes of 30 s, a limit of 200 s, polish due every 5 generations, run
    # as the GA's loop runs it (stop check before each generation, the polish decided within it)
    from refine.search.ga import FINAL_POLISH_RESERVE, generations_end, polish_now

    every, gen_s, polish_s, limit = 5, 10.0, 30.0, 200.0
    elapsed, timed, polished, generation = 0.0, 0.0, [], 0
    while elapsed < generations_end(limit, timed):
        generation += 1
        if polish_now(generation, every, elapsed, gen_s, timed, limit):
            polished.append(generation)
            elapsed += polish_s
            timed = polish_s
        elapsed += gen_s
    assert elapsed <= limit  # the room kept was enough
    assert polished[-1] == generation  # the answer (the last generation's best) was polished
    assert polished[0] == every and all(g % every == 0 for g in polished[:-1])  # the others were the due ones
    assert generation % every != 0  # here the last one is not a due one: it polished because it was the last
    # the rules one by one: the end of generations is the limit less 1.2 polishes (none before one is timed)
    assert generations_end(limit, 30.0) == limit - FINAL_POLISH_RESERVE * 30.0 == 164.0
    assert generations_end(limit, 0.0) == limit and generations_end(None, 30.0) is None
    assert polish_now(7, every, 155.0, gen_s, 30.0, limit)  # 155 + 10 passes 164: the last generation
    assert not polish_now(7, every, 150.0, gen_s, 30.0, limit)  # another generation still starts before 164
    assert not polish_now(10, every, 140.0, gen_s, 30.0, limit)  # due, but it would eat into the room kept
    assert polish_now(10, every, 130.0, gen_s, 30.0, limit)  # due, and 160 leaves the room
    assert not polish_now(7, every, 195.0, gen_s, 0.0, limit)  # no polish timed yet: only the due ones
    assert [g for g in range(1, 30) if polish_now(g, every, 0.0, gen_s, 0.0, None)] == [5, 10, 15, 20, 25]
    assert not polish_now(7, 0, 155.0, gen_s, 30.0, limit)  # no polish at all


def test_a_generations_usual_duration_ignores_the_annealing_and_polish_ones():
    from refine.search.ga import typical_generation_seconds

    # the end of the (c) 5e5 seed-2 run: annealing + polish generations of 120-162 s between ones of 3 s
    elapsed = [0, 4, 8, 130, 133, 176, 300, 303, 306, 427, 471, 474, 594, 597, 600, 763]
    assert typical_generation_seconds(elapsed) == 3.0  # the last five: 3, 120, 3, 3, 163; their mean is 58
    assert typical_generation_seconds([0.0, 5.0]) == 5.0
    assert typical_generation_seconds([7.0]) == typical_generation_seconds([]) == 0.0

