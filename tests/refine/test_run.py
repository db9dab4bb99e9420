"""refine.workflows.refine_image: outputs, their consistency, resume, resampling and bad inputs."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from ase.cluster import Icosahedron
from ase.io import read

from surrogate.common.errors import InputError
from refine.cost.fitness import Fitness
from refine.io.images import read_image
from refine.search import CHECKPOINT_NAME
from refine.workflows import ImageSettings, RunSettings, refine_image, refinement_settings
from refine.workflows.outputs import OUTPUT_FILES
from surrogate.imaging.grid import ProbeGrid

SIGMA = 5e-4
PIXEL = 0.1


@pytest.fixture(scope="module")
def truth():
    a = Icosahedron("Pt", 2)
    a.positions -= a.positions.mean(axis=0)
    a.positions[:, :2] += 4.5
    return a


@pytest.fixture(scope="module")
def image_file(small_model, truth, tmp_path_factory):
    grid = ProbeGrid(origin=(0.0, 0.0), shape=(90, 90), pixel_size=PIXEL)
    rng = np.random.default_rng(3)
    data = 20.0 * small_model.simulate(truth, grid) + 0.05 + rng.normal(0.0, SIGMA, grid.shape)
    path = tmp_path_factory.mktemp("image") / "image.npy"
    np.save(path, data)
    return path


def _run(image_file, model_file, out, **kw):
    """A small, fast refinement (the plain search); settings by their flat keywords, as a manifest gives them."""
    opts = dict(population=6, generations=2, seed=5, pixel_size=PIXEL, noise=SIGMA, progress=False, search="plain")
    opts.update(kw)
    return refine_image(image_file, "Pt13", model=model_file, out_dir=out, **refinement_settings(**opts))


def test_outputs_exist_and_agree_with_a_fresh_evaluation(image_file, model_file, small_model, tmp_path):
    res = _run(image_file, model_file, tmp_path / "out")
    out = tmp_path / "out"
    for name in OUTPUT_FILES + ("logbook.csv", CHECKPOINT_NAME, "hall_of_fame.xyz", "inputs.json"):
        assert (out / name).is_file(), name
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left
    summary = json.loads((out / "summary.json").read_text())
    assert summary == json.loads(json.dumps(res.summary))
    best = read(out / "best.xyz")
    assert best.get_chemical_formula() == "Pt13"
    # an independent fitness with the same noise model and the run's α gives the summary's numbers
    img = read_image(image_file, pixel_size=PIXEL)
    fresh = Fitness(small_model, img, alpha=summary["alpha"], noise=SIGMA, calculator="emt")
    r = fresh.evaluate(best)
    assert r.chi2 == pytest.approx(summary["chi2"], rel=1e-6)
    assert r.chi2_per_pixel == pytest.approx(summary["chi2_per_pixel"], rel=1e-6)
    assert summary["chi2_per_pixel"] == pytest.approx(summary["chi2"] / img.data.size, rel=1e-12)
    assert r.energy == pytest.approx(summary["energy"], abs=1e-5)  # extxyz rounds positions to 1e-8 Å
    assert best.get_potential_energy() == pytest.approx(summary["energy"], rel=1e-9)
    assert best.info["chi2"] == pytest.approx(summary["chi2"], rel=1e-9)
    assert best.info["alpha"] == pytest.approx(summary["alpha"], rel=1e-12)
    assert summary["best_cost"] == pytest.approx(summary["energy"] + summary["alpha"] * summary["chi2"], rel=1e-9)
    # best.xyz sits on the image: re-aligning it moves it by (almost) nothing
    assert np.hypot(*r.shift) < 0.05
    # the image files: experimental is the input, difference = experimental − simulated
    exp = np.load(out / "experimental.npy")
    sim = np.load(out / "simulated.npy")
    diff = np.load(out / "difference.npy")
    assert np.array_equal(exp, np.load(image_file))
    assert sim.shape == diff.shape == exp.shape
    np.testing.assert_allclose(diff, exp - sim, atol=1e-12)
    # χ² from the saved images with the noise σ is the reported χ²
    assert np.sum(diff ** 2) / SIGMA ** 2 == pytest.approx(summary["chi2"], rel=1e-3)
    assert summary["generations"] == 2 and summary["seed"] == 5 and summary["composition"] == "Pt13"
    assert summary["model"]["source"] == str(model_file)
    assert isinstance(summary["domain_warning"], bool)
    assert summary["settings"]["population_size"] == 6
    assert summary["wall_time_s"] > 0
    # a model file without an error calibration: the noise alone, every pixel counting once
    assert summary["noise"] == {"model": "uniform", "sigma": SIGMA, "n_effective": float(exp.size)}


def test_same_seed_same_best_structure(image_file, model_file, tmp_path):
    a = _run(image_file, model_file, tmp_path / "a", generations=1)
    b = _run(image_file, model_file, tmp_path / "b", generations=1)
    assert np.array_equal(a.best.positions, b.best.positions)
    assert a.summary["chi2"] == b.summary["chi2"]


def test_resume_continues_from_the_checkpoint(image_file, model_file, tmp_path):
    out = tmp_path / "out"
    first = _run(image_file, model_file, out, generations=1)
    with pytest.raises(InputError, match="--resume"):
        _run(image_file, model_file, out, generations=3)
    second = _run(image_file, model_file, out, generations=3, resume=True)
    assert second.summary["resumed"] and second.summary["generations"] == 3
    rows = (out / "logbook.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 4  # header + generations 0..3
    assert second.summary["best_cost"] <= first.summary["best_cost"] * (1 + 1e-9) or \
        second.summary["alpha"] != first.summary["alpha"]
    assert second.summary["alpha"] == pytest.approx(first.summary["alpha"])
    # resuming with another image is refused
    other = tmp_path / "other.npy"
    np.save(other, np.load(image_file)[::-1].copy())
    with pytest.raises(InputError, match="another image"):
        _run(other, model_file, out, generations=4, resume=True)


def test_alpha_scale_multiplies_the_automatic_alpha(image_file, model_file, tmp_path):
    plain = _run(image_file, model_file, tmp_path / "plain", generations=0)
    scaled = _run(image_file, model_file, tmp_path / "scaled", generations=0, alpha_scale=10.0)
    assert scaled.summary["alpha"] == pytest.approx(10.0 * plain.summary["alpha"], rel=1e-12)
    assert scaled.summary["alpha_scale"] == 10.0 and scaled.summary["alpha_rule"] == "auto"
    # the scaled fitness pickles (the annealing workers get it that way) and keeps its scale and α
    copy = pickle.loads(pickle.dumps(scaled.fitness))
    assert type(copy) is type(scaled.fitness) and copy.alpha_scale == 10.0
    assert copy.alpha == scaled.fitness.alpha
    assert copy.evaluate(scaled.best).cost == scaled.fitness.evaluate(scaled.best).cost
    with pytest.raises(InputError, match="alpha_scale"):
        _run(image_file, model_file, tmp_path / "bad", alpha_scale=0.0)
    assert not (tmp_path / "bad").exists()


def test_image_is_resampled_to_the_model_pixel_size(image_file, model_file, tmp_path):
    from scipy.ndimage import zoom

    fine = tmp_path / "fine.npy"
    np.save(fine, zoom(np.load(image_file), 2.0, order=3)[:-1, :-1])
    res = _run(fine, model_file, tmp_path / "out", pixel_size=PIXEL / 2, generations=0)
    assert res.summary["image"]["pixel_size"] == pytest.approx(PIXEL)
    assert res.summary["image"]["resampled"]["from_pixel_size"] == pytest.approx(PIXEL / 2)
    assert tuple(res.summary["image"]["shape"]) == np.load(image_file).shape
    with pytest.raises(InputError, match="resampling is turned off"):
        _run(fine, model_file, tmp_path / "no", pixel_size=PIXEL / 2, resample=False)
    assert not (tmp_path / "no").exists()


def test_mask_excludes_pixels(image_file, model_file, tmp_path):
    mask = np.ones(np.load(image_file).shape, dtype=bool)
    mask[:10] = False
    res = _run(image_file, model_file, tmp_path / "out", mask=mask, generations=0)
    assert res.summary["n_valid_pixels"] == int(mask.sum())
    diff = np.load(tmp_path / "out" / "difference.npy")
    assert np.all(np.isnan(diff[:10])) and np.all(np.isfinite(diff[10:]))


def test_pareto_mode_writes_the_front(image_file, model_file, tmp_path):
    res = _run(image_file, model_file, tmp_path / "out", multi_objective=True, generations=1)
    front = read(tmp_path / "out" / "pareto.xyz", index=":")
    assert len(front) == res.summary["pareto_front_size"] >= 1
    chi2 = [a.info["chi2"] for a in front]
    energy = [a.get_potential_energy() for a in front]
    # a front: sorted by χ², the energy never increases along it
    assert chi2 == sorted(chi2)
    assert all(e2 <= e1 + 1e-6 for e1, e2 in zip(energy, energy[1:]))


def test_start_from_a_structure_file(image_file, model_file, truth, tmp_path):
    from ase.io import write

    path = tmp_path / "start.xyz"
    write(path, truth)
    res = _run(image_file, model_file, tmp_path / "out", start=str(path), generations=0)
    # the starts are the truth (kept in its orientation; copies after the first rattled): the best
    # is at the noise floor
    assert res.summary["chi2_per_pixel"] < 2.0


def _bad_image(tmp_path, kind):
    p = tmp_path / f"{kind}.npy"
    data = np.full((40, 40), 0.1)
    if kind == "nan":
        data[3, 4] = np.nan
    np.save(p, data)
    return p


@pytest.mark.parametrize("case, match", [
    ("nan", "NaN"),
    ("constant", "constant"),
    ("no_calibration", "calibration"),
    ("Au13", "not among the model's elements"),
    ("Pt0", "must be positive"),
    ("Xx5", "unknown element"),
    ("bad_start", "start must be"),
])
def test_bad_inputs_raise_before_writing_anything(image_file, model_file, tmp_path, case, match):
    image, comp, kw = image_file, "Pt13", {}
    if case in ("nan", "constant"):
        image = _bad_image(tmp_path, case)
    elif case == "no_calibration":
        kw["pixel_size"] = None
    elif case == "bad_start":
        kw["start"] = str(tmp_path / "missing.xyz")
    else:
        comp = case
    out = tmp_path / "out"
    opts = dict(population=4, generations=1, pixel_size=PIXEL, progress=False)
    opts.update(kw)
    with pytest.raises(InputError, match=match) as info:
        refine_image(image, comp, model=model_file, out_dir=out, **refinement_settings(**opts))
    assert "\n" not in str(info.value)
    assert not out.exists()


def test_missing_default_model_is_a_clear_error(image_file, tmp_path, monkeypatch):
    import surrogate

    monkeypatch.setattr(surrogate, "default_model_path", lambda: tmp_path / "absent" / "default_model.npz")
    with pytest.raises(InputError, match="default model") as info:
        refine_image(image_file, "Pt13", out_dir=tmp_path / "out", image_settings=ImageSettings(pixel_size=PIXEL),
                     run=RunSettings(progress=False))
    assert "--model" in str(info.value)
    assert not (tmp_path / "out").exists()


class _Marker:
    """Unpickling this creates a file: proof that a pickle was opened."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("resume", [False, True])
def test_folder_with_an_old_pickle_checkpoint_is_refused_unopened(image_file, model_file, tmp_path, resume):
    out = tmp_path / "old-run"
    out.mkdir()
    marker = tmp_path / "code-ran"
    (out / "checkpoint.pkl").write_bytes(pickle.dumps(_Marker(marker)))
    with pytest.raises(InputError, match="checkpoint.pkl") as info:
        refine_image(image_file, "Pt13", model=model_file, out_dir=out, search="plain",
                     image_settings=ImageSettings(pixel_size=PIXEL), run=RunSettings(progress=False, resume=resume))
    assert "\n" not in str(info.value)
    assert not marker.exists()
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pkl"]
