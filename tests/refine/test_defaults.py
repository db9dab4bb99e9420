"""One default everywhere: ``stem-refine refine``, ``refine_image``, batch manifests and ``stem-refine demo``.

Each entry point is run up to the end of its input checks: the checked
inputs that :func:`refine.workflows.refinement._run_refinement` receives are
captured there, and the run stops before anything is computed or written.
The expected values are written out here; they are the CLI's defaults
before the defaults were gathered in :mod:`refine.workflows.defaults`.
"""

from __future__ import annotations

import numpy as np
import pytest
from ase.cluster import Icosahedron

import refine.workflows.refinement as refinement
from refine.cli.main import main
from surrogate.imaging.grid import ProbeGrid

PIXEL = 0.1

#: the anneal recipe by flat names, with the default population and generations (the CLI's settings)
DEFAULT_SEARCH = {
    "population_size": 20, "offspring_size": None, "generations": 100, "crossover_probability": 0.5,
    "mutation_probability": 0.3, "mutation_weights": {"depth_flip": 1.0, "depth_move": 4.0}, "tournament_size": 3,
    "hall_of_fame_size": 10, "replacement": "plus", "elite": 2, "stagnation": None, "stagnation_tol": 1e-6,
    "time_limit": None, "checkpoint_every": 1, "multi_objective": False, "alpha": "auto", "min_distance": None,
    "rattle_sigma": 0.25, "rotation_max_angle": np.pi / 12, "relax_steps": 20, "relax_fmax": 0.05,
    "relax_image": True, "beam_parallel_cuts": 0.8, "anneal_every": 3, "anneal_count": 2, "anneal_steps": 20000,
    "anneal_temperature": 1500.0, "anneal_image_weight": 0.3, "polish_every": 5, "polish_atoms": 60, "polish_patches": 4,
    "polish_image_moves": 16, "polish_dark_sites": 6, "polish_adatom_flips": True, "polish_annealed": True, "polish_shifts": 2, "polish_seed": 0,
    "finish_fraction": 0.15, "finish_alpha": "thermal", "finish_weights": {"image_guided": 4.0},
    "duplicate_cost_tol": 1e-4, "duplicate_fingerprint_tol": 0.03, "align_individuals": True, "immigrants": 0,
    "image_guided_moves": 1,
}
#: what the demo changes to fit its 90 s budget (refine.cli.demo)
DEMO_BUDGET = {"generations": 300, "time_limit": 90.0, "relax_steps": 10, "anneal_every": 2, "anneal_steps": 6000,
               "polish_every": 4, "polish_atoms": 40}


class _Captured(BaseException):
    """Stops a run once its inputs are checked (a BaseException: the CLI's handlers let it through)."""


@pytest.fixture
def capture(monkeypatch):
    """The checked inputs (RefinementInputs) of each run started from now on."""
    seen = []

    def stop(inputs, **kw):
        seen.append(inputs)
        raise _Captured

    monkeypatch.setattr(refinement, "_run_refinement", stop)
    return seen


@pytest.fixture(scope="module")
def image_file(small_model, tmp_path_factory):
    truth = Icosahedron("Pt", 2)
    truth.positions += 2.4 - truth.positions.mean(axis=0)
    grid = ProbeGrid(origin=(0.0, 0.0), shape=(48, 48), pixel_size=PIXEL)
    data = 20.0 * small_model.simulate(truth, grid) + 0.05 + np.random.default_rng(2).normal(0.0, 5e-4, grid.shape)
    path = tmp_path_factory.mktemp("image") / "image.npy"
    np.save(path, data)
    return path


def _cli(image_file, model_file, out, *extra):
    with pytest.raises(_Captured):
        main(["refine", str(image_file), "-c", "Pt13", "-o", str(out), "--model", str(model_file),
              "--pixel-size", str(PIXEL), *extra])


def _library(image_file, model_file, out):
    from refine.workflows import ImageSettings, refine_image

    with pytest.raises(_Captured):  # only what an uncalibrated array file needs
        refine_image(image_file, "Pt13", model=model_file, out_dir=out, image_settings=ImageSettings(pixel_size=PIXEL))


def _manifest(image_file, model_file, out):
    from refine.workflows.batch import _refine_image_run
    from refine.workflows.manifest import parse_manifest

    (spec,) = parse_manifest({"runs": [{"image": str(image_file), "composition": "Pt13", "model": str(model_file),
                                        "pixel_size": PIXEL}]}, out.parent)
    with pytest.raises(_Captured):
        _refine_image_run(spec, out)


def _demo(model_file, out):
    with pytest.raises(_Captured):
        main(["demo", "-o", str(out), "--model", str(model_file)])


def _search(inputs) -> dict:
    """The GA settings by flat names, less the progress bar (a batch runs without one)."""
    flat = inputs.settings.to_flat()
    del flat["progress"]
    return flat


def test_the_entry_points_agree_on_search_alpha_noise_and_population(image_file, model_file, tmp_path, capture):
    _cli(image_file, model_file, tmp_path / "cli")
    _library(image_file, model_file, tmp_path / "library")
    _manifest(image_file, model_file, tmp_path / "batch" / "run")
    _demo(model_file, tmp_path / "demo")
    cli, library, batch, demo = capture
    for inputs in (cli, library, batch):
        assert _search(inputs) == DEFAULT_SEARCH
        assert (inputs.alpha, inputs.alpha_scale) == ("auto", 1.0)
        assert (inputs.noise, inputs.dose) == ("estimate", None)
        assert inputs.model_error is True  # the surrogate's own error in the noise of χ²
        assert inputs.start == "random" and inputs.start_relax_steps == 0 and inputs.calculator == "auto"
        assert inputs.settings.population_size == 20
    # the demo: the same search within its budget, the same α rule and population; its image has a dose, so
    # Poisson noise, as the CLI gives with --dose
    demo_search = _search(demo)
    assert {k: v for k, v in demo_search.items() if DEFAULT_SEARCH[k] != v} == DEMO_BUDGET
    assert (demo.alpha, demo.alpha_scale, demo.settings.population_size) == ("auto", 1.0, 20)
    assert demo.noise == "poisson" and demo.dose > 0 and demo.model_error is True
    _cli(image_file, model_file, tmp_path / "cli_dose", "--dose", str(demo.dose))
    assert (capture[-1].noise, capture[-1].dose) == ("poisson", demo.dose)
    # only how the runs are carried out differs: a log file on the command line, and a batch (one run per
    # worker core) anneals in the run's own process
    assert (cli.workers, library.workers, batch.workers) == (2, 2, 1)
    assert cli.settings.progress and library.settings.progress and not batch.settings.progress


def test_the_noise_default_is_read_from_one_place(image_file, model_file, tmp_path, capture, monkeypatch):
    # the default noise model is to change in one line (refine.workflows.defaults.NOISE): every entry point follows
    from refine.workflows import defaults

    monkeypatch.setattr(defaults, "NOISE", 0.02)  # a uniform σ in image units
    _cli(image_file, model_file, tmp_path / "cli")
    _library(image_file, model_file, tmp_path / "library")
    _manifest(image_file, model_file, tmp_path / "batch" / "run")
    assert [inputs.noise for inputs in capture] == [0.02, 0.02, 0.02]


def test_the_search_default_is_read_from_one_place(image_file, model_file, tmp_path, capture, monkeypatch):
    from refine.workflows import defaults

    monkeypatch.setattr(defaults, "SEARCH", "plain")
    _cli(image_file, model_file, tmp_path / "cli")
    _library(image_file, model_file, tmp_path / "library")
    _manifest(image_file, model_file, tmp_path / "batch" / "run")
    for inputs in capture:  # the plain recipe: no image forces, no annealing, no offspring relaxation
        s = inputs.settings
        assert (s.relaxation.image, s.relaxation.steps, s.annealing.every, s.finishing.fraction) == (False, 0, 0, 0)
