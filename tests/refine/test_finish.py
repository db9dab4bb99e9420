"""The thermal α (k_B·T/2) and the GA's finishing stage (selection at another α)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from ase.units import kB

from surrogate.common.errors import InputError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from image_case import image, model, truth  # noqa: E402,F401  (module fixtures)


def _fitness(model, image, alpha=1e-3, **kw):  # noqa: F811
    from refine.cost.fitness import Fitness

    return Fitness(model, image, alpha=alpha, align="none", calculator="emt", symbols=["Pt"], noise=0.01, **kw)


def test_thermal_alpha_is_half_kT_of_the_prior_temperature(model, image):  # noqa: F811
    f300 = _fitness(model, image, alpha="thermal")
    assert f300.alpha == pytest.approx(0.5 * kB * 300.0) and f300.alpha_rule == "thermal"
    f600 = _fitness(model, image, alpha="thermal", prior_temperature=600.0)
    assert f600.alpha == pytest.approx(2.0 * f300.alpha)
    # a fixed α keeps its value; thermal_alpha() is still available for a finishing stage
    fixed = _fitness(model, image, alpha=2e-3)
    assert fixed.alpha == 2e-3 and fixed.thermal_alpha() == pytest.approx(f300.alpha)
    with pytest.raises(InputError, match="'auto', 'thermal'"):
        _fitness(model, image, alpha="boltzmann")
    with pytest.raises(InputError, match="prior temperature"):
        _fitness(model, image, alpha="thermal", prior_temperature=-5.0)


def test_finish_settings_are_checked():
    from refine.search import FinishingSettings, GASettings

    def settings(**finishing):
        return GASettings(finishing=FinishingSettings(**finishing))

    with pytest.raises(InputError, match="finish_fraction"):
        settings(fraction=1.0).validate()
    with pytest.raises(InputError, match="finish_alpha"):
        settings(fraction=0.2).validate()
    with pytest.raises(InputError, match="finish_alpha"):
        settings(fraction=0.2, alpha=-1.0).validate()
    with pytest.raises(InputError, match="single-objective"):
        GASettings(multi_objective=True, finishing=FinishingSettings(fraction=0.2, alpha="thermal")).validate()
    with pytest.raises(InputError, match="unknown mutation"):
        settings(fraction=0.2, alpha=0.01, weights={"teleport": 1.0}).validate()
    settings(fraction=0.2, alpha="thermal", weights={"rattle": 0.0}).validate()


def test_reweighted_selector_can_switch_operators_on_and_off():
    from refine.search.operators import MutationSelector

    class Op:
        def __init__(self, name):
            self.name = name

    rng = np.random.default_rng(0)
    a, b, c = Op("a"), Op("b"), Op("c")
    sel = MutationSelector(rng, [(1.0, a), (3.0, b), (0.0, c)])
    assert sel.operators == [a, b]
    new = sel.reweighted({"b": 0.0, "c": 2.0})
    assert new.operators == [a, c] and new.rng is rng
    np.testing.assert_allclose(new.probabilities, [1 / 3, 2 / 3])
    np.testing.assert_allclose(sel.probabilities, [0.25, 0.75])  # the original is unchanged


def test_finishing_stage_selects_at_its_alpha_and_relaxes_at_the_search_alpha(tmp_path, model, image):  # noqa: F811
    from refine.search import (
        FinishingSettings,
        GASettings,
        RelaxationSettings,
        StoppingSettings,
        make_toolbox,
        run_ga,
    )
    from refine.search.population import make_population

    fitness = _fitness(model, image, alpha=1e-3)
    settings = GASettings(population_size=4, alpha=1e-3, progress=False, stopping=StoppingSettings(generations=4),
                          relaxation=RelaxationSettings(steps=2, image=True),
                          finishing=FinishingSettings(fraction=0.5, alpha=0.05, weights={
                              "rattle": 0.0, "rotation": 0.0, "mirror": 0.0, "depth_move": 1.0}))
    rng = np.random.default_rng(0)
    tb = make_toolbox(fitness, {"Pt": 55}, settings, rng, calculator="emt")
    res = run_ga(fitness, make_population("Pt55", 4, rng), settings, tmp_path, rng=rng, toolbox=tb)
    # generations 0–2 at the search α, 3–4 (the last half, from generation 2 on) at the finishing α
    assert [rec["alpha"] for rec in res.logbook] == [1e-3, 1e-3, 1e-3, 0.05, 0.05]
    assert res.alpha == 0.05 and fitness.alpha == 0.05
    for a in [res.best, *res.hall_of_fame, *res.population]:
        assert a.info["cost"] == pytest.approx(a.info["energy"] + 0.05 * a.info["chi2"])
    assert res.best.info["cost"] == min(a.info["cost"] for a in res.population + res.hall_of_fame)
    # the offspring relaxation kept the search's α; the mutations got the finishing weights
    assert tb.relax_alpha() == 1e-3
    names = [op.name for op in tb.mutate.func.operators]
    assert "rattle" not in names and "rotation" not in names and "depth_move" in names

    # resumed in the finishing stage: it stays there (α, relaxation α, weights)
    settings2 = settings.with_flat({"generations": 6})
    rng2 = np.random.default_rng(99)
    f2 = _fitness(model, image, alpha=1e-3)
    tb2 = make_toolbox(f2, {"Pt": 55}, settings2, rng2, calculator="emt")
    res2 = run_ga(f2, None, settings2, tmp_path, rng=rng2, toolbox=tb2, resume=True)
    assert [rec["alpha"] for rec in res2.logbook][-3:] == [0.05, 0.05, 0.05] and res2.generation == 6
    assert tb2.relax_alpha() == 1e-3
    assert "rattle" not in [op.name for op in tb2.mutate.func.operators]


def test_finish_alpha_thermal_needs_a_fitness_that_knows_it(tmp_path):
    from refine.search import FinishingSettings, GASettings, RelaxationSettings, StoppingSettings, run_ga
    from refine.search.population import make_population

    class Plain:
        alpha = 1.0

        def evaluate(self, atoms):
            return {"cost": 1.0, "chi2": 1.0, "energy": 0.0}

    rng = np.random.default_rng(0)
    settings = GASettings(population_size=2, alpha=None, progress=False, stopping=StoppingSettings(generations=2),
                          relaxation=RelaxationSettings(steps=0),
                          finishing=FinishingSettings(fraction=0.5, alpha="thermal"))
    with pytest.raises(InputError, match="thermal_alpha"):
        run_ga(Plain(), make_population("Pt13", 2, rng), settings, tmp_path, rng=rng)
