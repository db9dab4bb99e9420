"""GA settings by concern, their one flat name each, the recipes, and refine_image's settings from flat keywords."""

from __future__ import annotations

import dataclasses
import json

import pytest

from refine.search import (
    FLAT_NAMES,
    AnnealingSettings,
    FinishingSettings,
    GASettings,
    PolishSettings,
    RelaxationSettings,
    SelectionSettings,
    StoppingSettings,
    VariationSettings,
    search_settings,
)
from surrogate.common.errors import InputError

#: the names summary.json and checkpoints have always used, in their order (the flat GASettings of before)
#: every flat name, in order (names are never changed: manifests and checkpoints use them)
OLD_NAMES = [
    "population_size", "offspring_size", "generations", "crossover_probability", "mutation_probability",
    "mutation_weights", "tournament_size", "hall_of_fame_size", "replacement", "elite", "stagnation",
    "stagnation_tol", "time_limit", "checkpoint_every", "multi_objective", "alpha", "min_distance", "rattle_sigma",
    "rotation_max_angle", "relax_steps", "relax_fmax", "relax_image", "beam_parallel_cuts", "anneal_every",
    "anneal_count", "anneal_steps", "anneal_temperature", "anneal_image_weight", "polish_every", "polish_atoms", "polish_patches",
    "polish_image_moves", "polish_dark_sites", "polish_adatom_flips", "polish_annealed", "polish_shifts", "polish_seed", "finish_fraction", "finish_alpha",
    "finish_weights", "duplicate_cost_tol", "duplicate_fingerprint_tol", "align_individuals", "immigrants",
    "image_guided_moves", "progress",
]
PARTS = {"stopping": StoppingSettings, "selection": SelectionSettings, "variation": VariationSettings,
         "relaxation": RelaxationSettings, "annealing": AnnealingSettings, "polish": PolishSettings,
         "finishing": FinishingSettings}


def test_every_setting_has_one_flat_name_and_the_names_did_not_change():
    fields = {(None, f.name) for f in dataclasses.fields(GASettings) if f.name not in PARTS}
    fields |= {(part, f.name) for part, cls in PARTS.items() for f in dataclasses.fields(cls)}
    assert sorted(FLAT_NAMES.values(), key=str) == sorted(fields, key=str)  # each field once
    assert list(FLAT_NAMES) == OLD_NAMES
    assert list(GASettings().to_flat()) == OLD_NAMES


def test_flat_names_round_trip_and_copies():
    changed = {"population_size": 7, "generations": 3, "time_limit": 12.5, "relax_image": True, "relax_steps": 4,
               "polish_atoms": 9, "polish_seed": 2, "finish_fraction": 0.2, "finish_alpha": "thermal",
               "mutation_weights": {"rattle": 2.0}, "finish_weights": {"image_guided": 3.0},
               "duplicate_cost_tol": 1e-3, "immigrants": 1, "anneal_temperature": 900.0}
    s = GASettings.from_flat(changed)
    assert (s.population_size, s.stopping.generations, s.stopping.time_limit) == (7, 3, 12.5)
    assert (s.relaxation.image, s.relaxation.steps, s.polish.atoms, s.polish.seed) == (True, 4, 9, 2)
    assert (s.finishing.fraction, s.finishing.alpha, s.finishing.weights) == (0.2, "thermal", {"image_guided": 3.0})
    assert (s.selection.duplicate_cost_tol, s.variation.immigrants, s.annealing.temperature) == (1e-3, 1, 900.0)
    flat = s.to_flat()
    assert {k: flat[k] for k in changed} == changed
    assert GASettings.from_flat(flat) == s
    assert json.loads(json.dumps(flat)) == flat  # what summary.json and the checkpoint header hold
    # no dict is shared: changing a copy changes nothing else
    flat["mutation_weights"]["rattle"] = 5.0
    t = s.with_flat({"polish_atoms": 1})
    t.finishing.weights["rattle"] = 0.0
    assert s.variation.mutation_weights == {"rattle": 2.0} and s.finishing.weights == {"image_guided": 3.0}
    assert (s.polish.atoms, t.polish.atoms, t.polish.seed) == (9, 1, 2)
    with pytest.raises(InputError, match="unknown GA option.*'polish_atom'"):
        GASettings.from_flat({"polish_atom": 3})


@pytest.mark.parametrize("settings, name", [
    (GASettings(population_size=0), "population_size"),
    (GASettings(stopping=StoppingSettings(generations=-1)), "generations"),
    (GASettings(selection=SelectionSettings(tournament_size=0)), "tournament_size"),
    (GASettings(variation=VariationSettings(beam_parallel_cuts=1.5)), "beam_parallel_cuts"),
    (GASettings(relaxation=RelaxationSettings(fmax=0.0)), "relax_fmax"),
    (GASettings(annealing=AnnealingSettings(steps=-1)), "anneal_steps"),
    (GASettings(annealing=AnnealingSettings(temperature=-5.0)), "anneal_temperature"),
    (GASettings(annealing=AnnealingSettings(image_weight=0.0)), "anneal_image_weight"),
    (GASettings(annealing=AnnealingSettings(image_weight=1.5)), "anneal_image_weight"),
    (GASettings(polish=PolishSettings(image_moves=-1)), "polish_image_moves"),
    (GASettings(polish=PolishSettings(dark_sites=-1)), "polish_dark_sites"),
    (GASettings(polish=PolishSettings(adatom_flips="yes")), "polish_adatom_flips"),
    (GASettings(finishing=FinishingSettings(fraction=-0.1)), "finish_fraction"),
])
def test_a_bad_value_is_reported_by_its_flat_name(settings, name):
    # the name the user typed (an option, a manifest key), not the field's name in its part
    with pytest.raises(InputError, match=name):
        settings.validate()


def test_the_recipes_and_their_rules():
    anneal = search_settings("anneal")
    assert anneal.relaxation == RelaxationSettings(steps=20, image=True)
    assert anneal.annealing == AnnealingSettings(every=3, count=2, steps=20000)
    assert anneal.finishing == FinishingSettings(fraction=0.15, alpha="thermal", weights={"image_guided": 4.0})
    assert search_settings("plain") == GASettings(relaxation=RelaxationSettings(steps=0))
    # relax steps go with the relaxation when only relax_image is given
    assert search_settings("plain", relax_image=True).relaxation.steps == 20
    assert search_settings("anneal", relax_image=False).relaxation.steps == 0
    assert search_settings("anneal", relax_image=False, relax_steps=7).relaxation.steps == 7
    assert search_settings("plain", relax_steps=None).relaxation.steps == 0
    # NSGA-II keeps the recipe but not its finishing stage; one asked for explicitly is refused
    pareto = search_settings("anneal", multi_objective=True).validate()
    assert pareto.finishing == FinishingSettings() and pareto.annealing.every == 3
    with pytest.raises(InputError, match="single-objective"):
        search_settings("anneal", multi_objective=True, finish_fraction=0.2).validate()
    with pytest.raises(InputError, match="unknown search"):
        search_settings("fast")
    assert search_settings("anneal") is not search_settings("anneal")  # a fresh object each time


def test_refine_image_settings_from_flat_keywords():
    from refine.workflows import CostSettings, ImageSettings, RunSettings, StartSettings, refinement_settings

    s = refinement_settings(population=8, generations=5, alpha=0.5, pixel_size=0.2, start="shapes",
                            start_relax_steps=3, dose=1e4, multi_objective=True, workers=2, seed=4, search="plain",
                            ga_options={"polish_atoms": 5, "relax_image": True}, log_file=True)
    assert s["cost"] == CostSettings(alpha=0.5, dose=1e4)
    assert s["image_settings"] == ImageSettings(pixel_size=0.2)
    assert s["start"] == StartSettings(source="shapes", relax_steps=3)
    assert s["run"] == RunSettings(seed=4, workers=2, log_file=True)
    g = s["search"]
    assert (g.population_size, g.stopping.generations, g.multi_objective) == (8, 5, True)
    assert (g.polish.atoms, g.relaxation.image, g.relaxation.steps) == (5, True, 20)
    with pytest.raises(InputError, match="population"):
        refinement_settings(ga_options={"population_size": 8})  # it has a keyword of its own
    with pytest.raises(InputError, match="unknown setting.*'populaton'"):
        refinement_settings(populaton=8)
    assert refinement_settings(undistort=True)["image_settings"] == ImageSettings(undistort=True)
    with pytest.raises(InputError, match="undistort must be True or False"):
        refinement_settings(undistort="yes")
    assert refinement_settings(lattice_pixel_size=True)["image_settings"] == ImageSettings(lattice_pixel_size=True)
    with pytest.raises(InputError, match="lattice_pixel_size must be True or False"):
        refinement_settings(lattice_pixel_size="yes")
