"""``stem-refine compare``: JSON output, one-line errors, and the image/multislice form."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase import Atoms
from ase.cluster import Icosahedron, Octahedron
from ase.io import read, write

from refine.cli.main import main

PIXEL = 0.1


@pytest.fixture
def seed():
    return 2019


@pytest.fixture(scope="module")
def truth():
    o = Octahedron("Pt", 6, 1)  # 140 atoms
    return Atoms(o.get_chemical_symbols(), positions=o.positions.copy())


@pytest.fixture
def files(truth, seed, tmp_path):
    rng = np.random.default_rng(seed)
    refined = truth.copy()
    moved = rng.choice(len(truth), 7, replace=False)
    v = rng.normal(size=(7, 3))
    refined.positions[moved] += v / np.linalg.norm(v, axis=1)[:, None]
    refined = refined[rng.permutation(len(refined))]
    refined.rotate(70, (1, 2, 3))
    refined.translate((4.0, -1.0, 2.0))
    write(tmp_path / "refined.xyz", refined)
    write(tmp_path / "truth.xyz", truth)
    return tmp_path / "refined.xyz", tmp_path / "truth.xyz"


def _one_line_error(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_json_output(files, tmp_path, capsys):
    refined, truth = files
    png = tmp_path / "overlay.png"
    aligned = tmp_path / "aligned.xyz"
    assert main(["compare", str(refined), str(truth), "--json", "--figure", str(png), "--aligned", str(aligned)]) == 0
    d = json.loads(capsys.readouterr().out)
    for key in ("rmsd", "max_displacement", "within_0.3", "within_0.5", "within_1.0"):
        assert isinstance(d[key], float)
    assert d["within_0.3"] == pytest.approx(0.95) and d["within_0.5"] == pytest.approx(0.95)
    assert 0.9 < d["max_displacement"] < 1.1
    assert d["rmsd"] == pytest.approx(np.sqrt(0.05), rel=0.15)
    assert sum(d["coordination"]["truth"]) == 140
    assert png.read_bytes()[:4] == b"\x89PNG"
    a = read(aligned)
    assert np.count_nonzero(a.arrays["displacement"] > 0.5) == 7


def test_text_output(files, capsys):
    refined, truth = files
    assert main(["compare", str(refined), str(truth)]) == 0
    out = capsys.readouterr().out
    assert "RMSD" in out and "within_0.3" in out and "95.0 %" in out


def test_beam_mode_from_the_cli(files, capsys):
    refined, truth = files  # refined is tilted: beam-only rotation cannot undo it
    assert main(["compare", str(refined), str(truth), "--json", "--rotation", "beam"]) == 0
    assert json.loads(capsys.readouterr().out)["rmsd"] > 0.5


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "does not exist"),
        ("this is\nnot an xyz file\n", "cannot read structure"),
        ("2\n\nXx 0 0 0\nPt 0 0 2.7\n", "unknown element"),
        ("0\n\n", "cannot read structure"),
    ],
    ids=["missing", "unreadable", "unknown-element", "empty"],
)
def test_bad_files_give_one_line_errors(files, tmp_path, capsys, content, message):
    refined, truth = files
    bad = tmp_path / "bad.xyz"
    if content is not None:
        bad.write_text(content)
    for argv in (["compare", str(bad), str(truth)], ["compare", str(refined), str(bad), "--json"]):
        assert main(argv) == 2
        err = _one_line_error(capsys)
        assert err.startswith("stem-refine compare: error:") and (message in err or "no atoms" in err), err


def test_usage_errors(files, tmp_path, capsys):
    refined, truth = files
    assert main(["compare", str(refined)]) == 2
    assert "give TRUTH, or --image" in _one_line_error(capsys)
    assert main(["compare", str(refined), "--with-multislice"]) == 2
    assert "--with-multislice needs --image" in _one_line_error(capsys)
    fewer = tmp_path / "fewer.xyz"
    write(fewer, read(truth)[:-1])
    assert main(["compare", str(fewer), str(truth)]) == 2
    assert "different compositions" in _one_line_error(capsys)
    assert main(["compare", str(fewer), str(truth), "--allow-unmatched", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert len(d["unmatched_truth"]) == 1 and d["n_matched"] == 139


# --------------------------------------------------------------------------- image form


def _stand_in_multislice(conv):
    """A smooth nonlinear function of the convolution image standing in for multislice."""
    from scipy.ndimage import gaussian_filter

    return 0.5 * np.sqrt(np.maximum(gaussian_filter(conv, 1.0), 0.0)) + 0.01


def _fake_haadf(atoms, grid=None, params=None, *, seed=None, device="cpu", progress=False, **overrides):
    from surrogate.imaging.convolution import convolution_image

    return _stand_in_multislice(convolution_image(atoms, grid))


@pytest.fixture(scope="module")
def particle():
    a = Icosahedron("Pt", 3)
    a = Atoms(a.get_chemical_symbols(), positions=a.positions - a.positions.mean(axis=0))
    a.rotate(17, "z")
    return a


@pytest.fixture(scope="module")
def model(particle):
    """A small surrogate (s=3, d=2) fitted on the stand-in multislice of a few particles."""
    from surrogate.imaging.convolution import convolution_image
    from surrogate.imaging.grid import ProbeGrid
    from surrogate.imaging.model import PolynomialSurrogate

    rng = np.random.default_rng(0)
    convs, ms = [], []
    for k in range(4):
        a = [Icosahedron("Pt", 4), Octahedron("Pt", 5, 1), Icosahedron("Pt", 3), particle.copy()][k]
        if k < 3:
            a.rotate(rng.uniform(0, 360), rng.normal(size=3))
        c = convolution_image(a, ProbeGrid.around(a, PIXEL, 3.0))
        convs.append(c)
        ms.append(_stand_in_multislice(c))
    return PolynomialSurrogate(size=3, degree=2, log_term=False).fit(convs, ms, elements=["Pt"])


@pytest.fixture
def experiment(particle, tmp_path):
    """The stand-in multislice image of the particle on a 0.1 Å grid, as a .npy file, and its grid."""
    from surrogate.imaging.grid import ProbeGrid

    grid = ProbeGrid(origin=(0.0, 0.0), shape=(140, 150), pixel_size=PIXEL)
    placed = particle.copy()
    placed.positions[:, :2] += (7.0, 7.5)
    image = _fake_haadf(placed, grid)
    path = tmp_path / "image.npy"
    np.save(path, image)
    return placed, path


def test_image_comparison_with_stand_in_multislice(model, experiment, monkeypatch):
    import surrogate.groundtruth
    from refine.analysis.image_comparison import compare_with_image
    from refine.io.images import read_image
    from surrogate.training.validation import pooled_metrics

    # compare_with_image calls the package's haadf_image (cross-package imports go through the package)
    monkeypatch.setattr(surrogate.groundtruth, "haadf_image", _fake_haadf)
    placed, path = experiment
    image = read_image(path, pixel_size=PIXEL, target_pixel_size=PIXEL)
    off = placed.copy()
    off.positions[:, :2] += (0.23, -0.31)  # not where the image has it: the comparison aligns it
    r = compare_with_image(off, image, model)
    assert r["shift"] == pytest.approx([-0.23, 0.31], abs=0.02)
    # the stand-in multislice of the right structure reproduces the image
    assert r["multislice_vs_image"]["one_minus_r2"] < 1e-3
    # the surrogate's own error on this structure is that of the model vs the stand-in
    own = pooled_metrics(image.data, model.simulate(placed, image.grid))
    assert r["surrogate_vs_multislice"]["one_minus_r2"] == pytest.approx(own["one_minus_r2"], rel=0.1, abs=1e-4)
    assert r["surrogate_vs_multislice"]["frms"] == pytest.approx(np.sqrt(r["surrogate_vs_multislice"]["one_minus_r2"]))
    # a wrong structure scores worse against the image
    wrong = placed.copy()
    wrong.positions += np.random.default_rng(1).normal(0, 0.4, wrong.positions.shape)
    rw = compare_with_image(wrong, image, model)
    assert rw["multislice_vs_image"]["one_minus_r2"] > 10 * max(r["multislice_vs_image"]["one_minus_r2"], 1e-4)


def test_the_multislice_image_is_made_for_the_model_s_own_microscope(model, experiment, monkeypatch):
    """A model built for a 300 kV microscope with a 1.2 Å source is compared with abTEM at those settings."""
    import copy

    import surrogate.groundtruth
    from refine.analysis.image_comparison import compare_with_image
    from refine.io.images import read_image

    seen = []

    def spy(atoms, grid=None, params=None, **kw):
        seen.append((params, kw))
        return _fake_haadf(atoms, grid, params, **kw)

    monkeypatch.setattr(surrogate.groundtruth, "haadf_image", spy)
    placed, path = experiment
    image = read_image(path, pixel_size=PIXEL, target_pixel_size=PIXEL)
    built = copy.deepcopy(model)
    built.provenance_ = {"simulation": {"method": "prism", "interpolation": 8, "phonons": 3, "energy": 300e3,
                                        "semiangle": 17.9, "Cs": 0.0, "detector": [41.0, 248.0],
                                        "source_fwhm": 1.2, "potential_sampling": 0.025}}
    r = compare_with_image(placed, image, built, phonons=2)
    params, kw = seen[-1]
    assert (params.energy, params.semiangle, params.detector, params.source_fwhm) == (300e3, 17.9, (41.0, 248.0), 1.2)
    # the comparison's own accuracy settings, not the build's: PRISM f and phonons as asked or by default
    assert params.interpolation == 4 and kw["phonons"] == 2
    assert r["multislice"]["microscope"] == "the model's"
    # a model that records no microscope: the paper's defaults, said so
    bare = copy.deepcopy(model)
    bare.provenance_ = {}
    r = compare_with_image(placed, image, bare)
    assert seen[-1][0] is None and r["multislice"]["microscope"].startswith("paper defaults")


def test_cli_image_form(model, experiment, monkeypatch, tmp_path, capsys):
    import surrogate.groundtruth
    from surrogate.imaging.model import save_model

    # compare_with_image calls the package's haadf_image (cross-package imports go through the package)
    monkeypatch.setattr(surrogate.groundtruth, "haadf_image", _fake_haadf)
    placed, path = experiment
    model_path = save_model(model, tmp_path / "model.npz")
    refined = tmp_path / "best.xyz"
    write(refined, placed)
    png = tmp_path / "images.png"
    argv = ["compare", str(refined), "--image", str(path), "--pixel-size", "0.1", "--model", str(model_path),
            "--with-multislice", "--method", "multislice", "--phonons", "2", "--json", "--figure", str(png)]
    assert main(argv) == 0
    d = json.loads(capsys.readouterr().out)
    for key in ("multislice_vs_image", "surrogate_vs_image", "surrogate_vs_multislice"):
        assert set(d[key]) >= {"one_minus_r2", "frms"}
    assert d["multislice"]["method"] == "multislice" and d["multislice"]["phonons"] == 2
    assert d["multislice_vs_image"]["one_minus_r2"] < 1e-3
    assert png.read_bytes()[:4] == b"\x89PNG"
    # without --with-multislice only the surrogate is compared
    assert main(argv[:8] + ["--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert "surrogate_vs_image" in d and "multislice_vs_image" not in d
    # a missing image is a one-line error
    assert main(["compare", str(refined), "--image", str(tmp_path / "nope.npy"), "--pixel-size", "0.1",
                 "--model", str(model_path)]) == 2
    assert "nope.npy" in _one_line_error(capsys)


@pytest.mark.slow
def test_real_multislice_of_a_small_particle(tmp_path):
    """abTEM end to end: the multislice image of Pt13 is reproduced on the image's own grid."""
    from refine.analysis.image_comparison import compare_with_image
    from refine.io.images import read_image
    from surrogate.imaging.convolution import convolution_image
    from surrogate.imaging.grid import ProbeGrid
    from surrogate.imaging.model import PolynomialSurrogate
    from surrogate.groundtruth.multislice import haadf_image

    a = Icosahedron("Pt", 2)
    a = Atoms(a.get_chemical_symbols(), positions=a.positions - a.positions.mean(axis=0) + (3.0, 3.0, 0.0))
    grid = ProbeGrid(origin=(0.0, 0.0), shape=(60, 60), pixel_size=0.1)
    ms = haadf_image(a, grid, method="multislice", phonons=2, seed=1)
    conv = convolution_image(a, grid)
    model = PolynomialSurrogate(size=3, degree=1, log_term=False).fit([conv], [ms], elements=["Pt"])
    image = read_image(ms, pixel_size=0.1, target_pixel_size=0.1)
    r = compare_with_image(a, image, model, method="multislice", phonons=2, seed=1)
    # same atoms, same phonon seed: the grid conventions agree pixel for pixel
    assert np.hypot(*r["shift"]) < 0.05
    assert r["multislice_vs_image"]["one_minus_r2"] < 1e-3
    assert r["surrogate_vs_multislice"]["one_minus_r2"] < 0.2
    assert r["multislice_vs_image"]["one_minus_r2"] < r["surrogate_vs_image"]["one_minus_r2"]


def test_the_error_where_the_model_extrapolates_is_reported(model, experiment, monkeypatch):
    import surrogate.groundtruth
    from refine.analysis.image_comparison import compare_with_image
    from refine.io.images import read_image
    from surrogate.imaging.grid import ProbeGrid

    monkeypatch.setattr(surrogate.groundtruth, "haadf_image", _fake_haadf)
    placed, path = experiment
    image = read_image(path, pixel_size=PIXEL, target_pixel_size=PIXEL)
    inside = compare_with_image(placed, image, model)["surrogate_vs_multislice"]["beyond_training_range"]
    # the particle the model was fitted on (here on another probe grid: a few peak pixels a hair beyond)
    assert inside["pixels"] < 0.002
    # the particle on top of itself along the beam: columns twice as dense as any the model was fitted on
    top = placed.copy()
    top.positions[:, 2] += np.ptp(placed.positions[:, 2]) + 2.8
    double = placed + top
    grid = ProbeGrid(origin=(0.0, 0.0), shape=(140, 150), pixel_size=PIXEL)
    dense = read_image(_fake_haadf(double, grid), pixel_size=PIXEL, target_pixel_size=PIXEL)
    r = compare_with_image(double, dense, model)["surrogate_vs_multislice"]
    beyond = r["beyond_training_range"]
    assert 10 * inside["pixels"] < beyond["pixels"] < 1
    # the model's error on this structure sits where it extrapolates: a larger share than those pixels' share
    assert beyond["error_share"] > 3 * beyond["pixels"], (inside, beyond)
