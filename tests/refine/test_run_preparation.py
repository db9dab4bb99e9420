"""The refinement's use of image preparation and of the image's recorded microscope.

``refine_image`` (and the CLI's ``refine``, ``cost`` and ``counts``) read the image
through :func:`refine.io.prepare_image`: the steps it took are in
``summary.json``, ``preparation.png`` shows them, and a microscope recorded in
the file that is not the model's is warned about and listed in the summary.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from ase.cluster import Icosahedron

from refine.cli.main import main
from refine.io import ExperimentalImage
from refine.workflows import refine_image, refinement_settings
from refine.workflows.inputs import validate_image, warn_if_microscope_differs
from surrogate.common.errors import InputError
from surrogate.imaging.grid import ProbeGrid

PIXEL = 0.1
OFFSET = 0.05  # vacuum level of the image, image units
SCALE = 20.0  # image units per fraction of the incident beam
EMD = Path(__file__).resolve().parents[3] / "shared" / "data" / "experimental" / "au-temul" / \
    "example_Au_nanoparticle.emd"


@pytest.fixture(scope="module")
def truth():
    a = Icosahedron("Pt", 2)
    a.positions -= a.positions.mean(axis=0)
    a.positions[:, :2] += 10.0
    return a


@pytest.fixture(scope="module")
def raw_file(small_model, truth, tmp_path_factory):
    """A particle on an offset, in arbitrary detector units, with vacuum all round (200 × 200 px)."""
    grid = ProbeGrid(origin=(0.0, 0.0), shape=(200, 200), pixel_size=PIXEL)
    rng = np.random.default_rng(11)
    clean = SCALE * small_model.simulate(truth, grid) + OFFSET
    np.save(path := tmp_path_factory.mktemp("raw") / "raw.npy", clean + rng.normal(0.0, 5e-4, grid.shape))
    return path


@pytest.fixture(scope="module")
def vacuum_level(small_model, truth):
    """The noise-free image's level far from the particle (OFFSET plus the model's own vacuum intensity)."""
    grid = ProbeGrid(origin=(0.0, 0.0), shape=(200, 200), pixel_size=PIXEL)
    clean = SCALE * small_model.simulate(truth, grid) + OFFSET
    return float(np.median(np.concatenate([clean[:10].ravel(), clean[-10:].ravel()])))


def test_the_refinement_prepares_the_image_and_records_each_step(raw_file, vacuum_level, model_file, tmp_path):
    out = tmp_path / "out"
    res = refine_image(raw_file, "Pt13", model=model_file, out_dir=out, **refinement_settings(
        population=6, generations=1, seed=2, pixel_size=PIXEL, noise=5e-4, progress=False, search="plain",
        background="vacuum", detector=SCALE, crop="auto", particle_margin=2.0))
    summary = json.loads((out / "summary.json").read_text())
    image = summary["image"]
    steps = {s["step"]: s for s in image["preparation"]}
    assert {"read", "background", "normalisation", "crop"} <= set(steps)
    # the measured vacuum is the image's level far from the particle (noise σ 5e-4 over thousands of pixels)
    assert steps["background"]["values"]["offset"] == pytest.approx(vacuum_level, abs=2e-4)
    assert image["beam_units"] is True
    # cropped to the particle: smaller than the file, and the data are beam fractions (≤ 1, vacuum ≈ 0)
    assert image["shape"][0] < 200 and image["shape"][1] < 200
    data = np.load(out / "experimental.npy")
    assert data.max() < 1.0 and abs(np.median(data[:3, :])) < 2e-3
    assert (out / "preparation.png").is_file() and summary["files"]["preparation.png"] == "preparation.png"
    assert res.summary["microscope_mismatch"] == []  # a .npy records no microscope


def test_an_unprepared_image_draws_no_preparation_figure(raw_file, model_file, tmp_path):
    out = tmp_path / "out"
    refine_image(raw_file, "Pt13", model=model_file, out_dir=out, **refinement_settings(
        population=6, generations=0, seed=2, pixel_size=PIXEL, noise=5e-4, progress=False, search="plain"))
    summary = json.loads((out / "summary.json").read_text())
    assert not (out / "preparation.png").exists()
    assert summary["image"]["beam_units"] is False
    assert [s["step"] for s in summary["image"]["preparation"]][0] == "read"


def test_an_image_in_detector_counts_is_counted_on_the_scale_of_the_answers_atoms(small_model, truth, model_file,
                                                                                  tmp_path):
    from ase.io import write

    # as a Velox file holds it: thousands of counts per beam fraction on an offset of 15,000
    grid = ProbeGrid(origin=(0.0, 0.0), shape=(200, 200), pixel_size=PIXEL)
    counts_per_beam = 3600.0
    raw = counts_per_beam * small_model.simulate(truth, grid) + 15000.0
    np.save(path := tmp_path / "counts.npy", raw + np.random.default_rng(3).normal(0.0, 2.0, grid.shape))
    write(start := tmp_path / "truth.xyz", truth)
    out = tmp_path / "out"
    refine_image(path, "Pt13", model=model_file, out_dir=out, **refinement_settings(
        population=4, generations=0, seed=2, pixel_size=PIXEL, noise=2.0, progress=False, search="plain",
        background="vacuum", start=str(start)))
    assert json.loads((out / "summary.json").read_text())["image"]["beam_units"] is False
    counts = json.loads((out / "counts.json").read_text())
    # counted where the columns hold the answer's 13 atoms: at the file's counts per beam (the model's own error
    # aside), not at the model's scale of 1 that would read every column empty
    assert counts["library"]["scale_rule"] == "total"
    assert counts["library"]["scale"] == pytest.approx(counts_per_beam, rel=0.3)
    assert counts["atoms_image"] == 13


def test_the_cost_command_takes_the_preparation_options(raw_file, model_file, truth, tmp_path, capsys):
    from ase.io import write

    structure = tmp_path / "truth.xyz"
    write(structure, truth)
    common = ["cost", str(structure), str(raw_file), "-m", str(model_file), "--pixel-size", str(PIXEL), "--json"]
    assert main(common) == 0
    plain = json.loads(capsys.readouterr().out)
    assert main(common + ["--background", "vacuum", "--detector-scale", str(SCALE), "--crop", "auto", "--particle-margin", "2"]) == 0
    prepared = json.loads(capsys.readouterr().out)
    # the crop leaves fewer pixels to compare; without it every pixel of the file is used
    assert prepared[0]["n_valid_pixels"] < plain[0]["n_valid_pixels"] == 200 * 200
    # in beam units the fitted scale is ≈ 1 instead of the file's SCALE (the surrogate's own error aside)
    assert prepared[0]["scale"] == pytest.approx(plain[0]["scale"] / SCALE, rel=1e-2)


def test_preparation_of_an_already_read_image_is_refused(small_model):
    image = ExperimentalImage(data=np.zeros((40, 40)), pixel_size=float(small_model.convolution_parameters.pixel_size),
                              mask=np.ones((40, 40), bool))
    with pytest.raises(InputError, match="background.*preparation applies to an image file"):
        validate_image(image, small_model, pixel_size=None, mask=None, resample=True,
                       preparation={"background": "vacuum"})
    # the defaults (what ImageSettings().preparation() gives) are no request
    from refine.workflows import ImageSettings

    same = validate_image(image, small_model, pixel_size=None, mask=None, resample=True,
                          preparation=ImageSettings().preparation())
    assert same.shape == (40, 40)


def test_a_microscope_unlike_the_models_is_warned_about(small_model, caplog):
    import copy

    model = copy.deepcopy(small_model)  # the session's model stays as it is
    model.provenance_ = dict(getattr(model, "provenance_", None) or {}, microscope={"voltage": 200.0})
    mine = type("Scope", (), {"voltage": 200.0})
    other = ExperimentalImage(data=np.zeros((20, 20)), pixel_size=PIXEL, mask=np.ones((20, 20), bool),
                              metadata={"microscope": {"voltage": mine.voltage + 100.0}})
    same = ExperimentalImage(data=np.zeros((20, 20)), pixel_size=PIXEL, mask=np.ones((20, 20), bool),
                             metadata={"microscope": {"voltage": mine.voltage}})
    with caplog.at_level(logging.WARNING, logger="refine.workflows.inputs"):
        messages = warn_if_microscope_differs(other, model)
    assert len(messages) == 1 and "voltage" in messages[0]
    assert any("voltage" in r.getMessage() and "model build" in r.getMessage() for r in caplog.records)
    assert warn_if_microscope_differs(same, model) == []
    assert warn_if_microscope_differs(same, small_model) == []  # a model that records nothing: nothing to compare


@pytest.mark.skipif(not EMD.is_file(), reason="the shared Au EMD image (../shared/data/experimental) is absent")
def test_the_velox_files_microscope_is_read_with_its_pixels():
    from refine.io import read_image
    from surrogate.training.modelinfo import microscope_mismatch
    from refine.workflows.inputs import load_model_or_default

    image = read_image(EMD)
    scope = image.metadata["microscope"]
    assert scope["voltage"] == pytest.approx(300.0)
    assert 10.0 < scope["convergence"] < 40.0
    model, _ = load_model_or_default(None)
    messages = microscope_mismatch(image.metadata, model)
    assert any(m.startswith("voltage") for m in messages)


def test_the_atom_number_is_not_estimated_from_an_image_in_detector_counts(raw_file, small_model):
    from refine.workflows.inputs import composition_from_image

    raw = np.load(raw_file)
    counts = ExperimentalImage(data=1000.0 * raw, pixel_size=PIXEL, mask=np.ones(raw.shape, bool))
    with pytest.raises(InputError, match="fractions of the incident beam.*Pt900"):
        composition_from_image("Pt", small_model, counts)
    # the same image normalised by its preparation is estimated (a number, not an error)
    prepared = validate_image(raw_file, small_model, pixel_size=PIXEL, mask=None, resample=True,
                              preparation={"background": "vacuum", "detector": SCALE, "particle_margin": 2.0})
    composition, estimate = composition_from_image("Pt", small_model, prepared)
    assert set(composition) == {"Pt"} and composition["Pt"] > 0 and estimate is not None


def test_the_atom_number_of_a_zero_padded_file_uses_the_vacuum_inside_its_valid_pixels(raw_file, small_model,
                                                                                         tmp_path):
    """A file zeroed outside a region round the particle (as the StatSTEM Pt–Ir example) counts as the whole one."""
    from refine.workflows.inputs import composition_from_image

    raw = (np.load(raw_file) - OFFSET) / SCALE  # beam units, vacuum ≈ the model's own vacuum level
    x, y = np.meshgrid(np.arange(200) * PIXEL, np.arange(200) * PIXEL, indexing="ij")
    padded = np.where(np.hypot(x - 10.0, y - 10.0) < 7.5, raw, 0.0)
    np.save(whole := tmp_path / "whole.npy", raw)
    np.save(zeroed := tmp_path / "zeroed.npy", padded)
    counts = []
    for path, mask in ((whole, None), (zeroed, "zeros")):
        image = validate_image(path, small_model, pixel_size=PIXEL, mask=mask, resample=True)
        composition, estimate = composition_from_image("Pt", small_model, image)
        counts.append(estimate.n_exact)
    assert counts[1] == pytest.approx(counts[0], rel=0.03)
    # nothing but padding and particle: no vacuum to measure from is an error, not a count of 1
    np.save(tight := tmp_path / "tight.npy", np.where(np.hypot(x - 10.0, y - 10.0) < 2.0, raw + 0.01, 0.0))
    image = validate_image(tight, small_model, pixel_size=PIXEL, mask="zeros", resample=True)
    with pytest.raises(InputError, match="vacuum around the particle"):
        composition_from_image("Pt", small_model, image)


def test_a_refinement_lists_the_microscope_mismatch_it_warned_about(model, tmp_path):
    """What refine.log warns about is what summary.json lists (one check, used for both)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from small_case import SMALL, as_image

    from dataclasses import replace

    image = replace(as_image(np.load(SMALL / "clean.npy")), metadata={"microscope": {"voltage": 300.0}})
    out = tmp_path / "out"
    settings = refinement_settings(population=4, generations=0, progress=False, search="plain", workers=1)
    settings["run"] = replace(settings["run"], log_file=True)
    res = refine_image(image, "Pt70", model=model, out_dir=out, **settings)
    listed = json.loads((out / "summary.json").read_text())["microscope_mismatch"]
    assert len(listed) == 1 and listed[0].startswith("voltage") and res.summary["microscope_mismatch"] == listed
    assert listed[0] in (out / "refine.log").read_text()
