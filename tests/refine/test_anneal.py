"""Image-restrained simulated annealing (refine.anneal) and its use in the GA."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from refine.anneal import AnnealSchedule, Annealing
from refine.compare import compare_structures
from refine.exceptions import InputError
from refine.population import random_cluster

sys.path.insert(0, str(Path(__file__).resolve().parent))
from image_case import image, model, truth  # noqa: E402,F401  (module fixtures)


@pytest.fixture(scope="module")
def fitness(model, image):  # noqa: F811
    from refine.fitness import Fitness

    return Fitness(model, image, alpha=1e-3, align="none", calculator="emt", symbols=["Pt"], noise=0.01)


@pytest.fixture(scope="module")
def start():
    a = random_cluster({"Pt": 55}, np.random.default_rng(3))
    a.positions[:, :2] -= a.positions[:, :2].mean(axis=0)
    return a


def test_annealing_beats_a_local_relaxation_from_the_same_start(fitness, start, truth):  # noqa: F811
    # the same cost, the same start: FIRE alone stays in the amorphous basin it starts in,
    # the annealing crystallises the particle under the image (Pt55 icosahedron)
    relaxed = Annealing(fitness, "emt", AnnealSchedule(steps=0, quench_steps=3000))(start, 0)
    annealed = Annealing(fitness, "emt", AnnealSchedule(steps=3000))(start, 1)
    r_relaxed, r_annealed = fitness.evaluate(relaxed), fitness.evaluate(annealed)
    assert r_annealed.cost < r_relaxed.cost
    within_relaxed = compare_structures(relaxed, truth, mirror=True).within[0.5]
    within_annealed = compare_structures(annealed, truth, mirror=True).within[0.5]
    assert within_annealed >= within_relaxed + 0.3


def test_annealing_is_reproducible_and_leaves_its_input_alone(fitness, start):
    before = start.positions.copy()
    ann = Annealing(fitness, "emt", AnnealSchedule(steps=200, quench_steps=20))
    a1, a2, b = ann(start, 5), ann(start, 5), ann(start, 6)
    np.testing.assert_array_equal(start.positions, before)
    np.testing.assert_array_equal(a1.positions, a2.positions)
    assert not np.allclose(a1.positions, b.positions)
    assert a1.info["anneal_seed"] == 5 and a1.calc is None and "cost" not in a1.info
    assert list(a1.numbers) == list(start.numbers)


def test_schedule_and_alpha_are_checked(model, image):  # noqa: F811
    from refine.fitness import Fitness

    with pytest.raises(InputError, match="steps"):
        AnnealSchedule(steps=-1)
    with pytest.raises(InputError, match="start_temperature"):
        AnnealSchedule(start_temperature=float("nan"))
    with pytest.raises(InputError, match="image_every"):
        AnnealSchedule(image_every=0)
    uncalibrated = Fitness(model, image, alpha="auto", align="none", calculator="emt", noise=0.01)
    with pytest.raises(InputError, match="α"):
        Annealing(uncalibrated, "emt")(random_cluster({"Pt": 13}, np.random.default_rng(0)), 0)


def test_ga_anneals_selected_individuals_every_n_generations(tmp_path, fitness):
    from refine.ga import GASettings, run_ga
    from refine.population import make_population

    calls = []

    def spy_map(f, xs):
        xs = list(xs)
        if type(getattr(f, "func", f)).__name__ == "_AnnealTask":  # DEAP registers partials
            calls.append(len(xs))
        return list(map(f, xs))

    rng = np.random.default_rng(0)
    pop = make_population("Pt55", 4, rng)
    settings = GASettings(population_size=4, generations=4, progress=False, anneal_every=2, anneal_count=2,
                          anneal_steps=100, alpha=1e-3, relax_steps=2)
    res = run_ga(fitness, pop, settings, tmp_path, rng=rng, calculator="emt", map_func=spy_map)
    assert calls == [2, 2]  # generations 2 and 4, two each
    # every annealed structure was evaluated with the offspring: μ + 4·λ + 2·2
    assert res.evaluations == 4 + 4 * 4 + 4
    with pytest.raises(InputError, match="anneal_count"):
        GASettings(anneal_count=0).validate()


def test_polish_sweeps_depth_moves_of_the_best(tmp_path, fitness, truth, monkeypatch):  # noqa: F811
    from refine.ga import GASettings, make_toolbox, run_ga, to_individual, _polish
    from refine.population import make_population

    # a truth with three surface atoms carried to the far side: the sweep must bring the cost down
    start = truth.copy()
    from refine.operators import DepthMoveMutation, coordination_numbers

    mover = DepthMoveMutation(np.random.default_rng(0), 2.0, nn_distance=2.77)
    cn = coordination_numbers(start.positions, 1.2 * 2.77)
    pos = start.positions.copy()
    for k in np.argsort(cn, kind="stable")[:3]:
        mover.move(pos, int(k))
    start.positions = pos
    settings = GASettings(population_size=2, relax_steps=10, relax_image=True, alpha=1e-3, polish_atoms=20,
                          progress=False)
    tb = make_toolbox(fitness, {"Pt": 55}, settings, np.random.default_rng(1), calculator="emt")
    ind = to_individual(start)
    ind.fitness.values = (fitness.evaluate(start).cost,)
    ind.info["cost"] = ind.fitness.values[0]
    polished, n = _polish(tb, [ind], settings, 1e-3)
    assert n == 21  # the start scored once (no vacancy here), then 20 depth moves
    assert fitness.evaluate(polished).cost < fitness.evaluate(start).cost
    assert compare_structures(polished, truth).within[0.5] > compare_structures(start, truth).within[0.5]

    import refine.ga as ga_module

    fills = []

    def spy(*args, **kw):
        out = real_fill(*args, **kw)
        fills.append(out[2])
        return out

    real_fill = ga_module.fill_vacancies
    monkeypatch.setattr(ga_module, "fill_vacancies", spy)
    rng = np.random.default_rng(0)
    res = run_ga(fitness, make_population("Pt55", 4, rng), GASettings(
        population_size=4, generations=2, progress=False, polish_every=2, polish_atoms=10, alpha=1e-3,
        relax_steps=2), tmp_path, rng=rng, calculator="emt")
    # μ + 2 λ + the polish of generation 2 (the start, vacancy trials, 10 depth moves) + its result
    assert len(fills) == 1 and res.evaluations == 4 + 2 * 4 + (1 + fills[0] + 10) + 1
    with pytest.raises(InputError, match="polish_atoms"):
        GASettings(polish_atoms=0).validate()
