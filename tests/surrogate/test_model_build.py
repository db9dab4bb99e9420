"""stem-refine model build / show / fit-source, the microscope read from image metadata, and microscope_mismatch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from refine.cli.main import main
from surrogate.common.microscope import Microscope, microscope_from_metadata, read_image_microscope

REPO = Path(__file__).resolve().parents[2]
EMD = REPO.parent / "shared" / "data" / "experimental" / "au-temul" / "example_Au_nanoparticle.emd"
needs_emd = pytest.mark.skipif(not EMD.is_file(), reason="../shared/data/experimental (the Au EMD) is absent")

# Tiny but real: two 13–19-atom Pt particles, PRISM f=4, one phonon, 0.2 Å pixels, an 11-term polynomial
TINY = ["--particles", "2", "--sizes", "13:19", "--sampling", "0.2", "--phonons", "1", "--detector", "50,100",
        "--scheduler", "synchronous", "--threads", "1", "-s", "3", "-d", "1", "--no-progress"]


def run_cli(capsys, *argv):
    rc = main(list(map(str, argv)))
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture(scope="module")
def tiny_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("build") / "tiny.npz"
    rc = main(["model", "build", "-o", str(out), "--json", *TINY])
    assert rc == 0
    return out


# -- settings -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("flags, message", [
    (["--detector", "150,50"], "inner < outer"),
    (["--voltage", "0"], "voltage must be > 0"),
    (["--voltage", "200000"], "kV"),
    (["--elements", "Pt,Xx"], "unknown element 'Xx'"),
    (["--elements", "Mo"], "not fcc"),
    (["--preset", "tem-9000"], "unknown preset"),
    (["--sizes", "200:100"], "MIN:MAX"),
    (["--particles", "1"], "at least 2 particles"),
    (["--rods", "-1"], "--rods"),
    (["--rods", "2", "--rod-heights", "16:8"], "--rod-heights"),
    (["--rods", "2", "--rod-heights", "tall"], "--rod-heights takes MIN:MAX"),
    (["--defocus", "30"], "focused probe"),
    (["--source-size", "-1"], "source size"),
    (["--depth-blur", "-0.1"], "--depth-blur"),
])
def test_bad_settings_are_one_line_errors(capsys, tmp_path, flags, message):
    rc, _, err = run_cli(capsys, "model", "build", "-o", tmp_path / "m.npz", *flags)
    lines = [line for line in err.strip().splitlines() if "error" in line]
    assert rc == 2 and len(lines) == 1 and message in lines[0] and "Traceback" not in err, err
    assert not (tmp_path / "m.npz.work").exists()  # refused before any work


def test_flags_override_the_preset():
    from surrogate.cli.model import settings_from_args
    from refine.cli.main import build_parser

    args = build_parser().parse_args(["model", "build", "-o", "m.npz", "--preset", "probe-corrected-300kv",
                                      "--convergence", "18", "--elements", "Pt,Ir"])
    settings, _ = settings_from_args(args)
    m = settings.microscope
    assert (m.voltage, m.convergence, m.detector, m.source_size) == (300.0, 18.0, (60.0, 200.0), 0.7)
    assert settings.elements == ("Pt", "Ir")


def test_psf_sigma_is_the_papers_for_the_papers_microscope_and_narrower_for_a_sharper_probe():
    from surrogate.training.modelbuild import psf_sigma
    from surrogate.training.presets import preset

    assert psf_sigma(preset("combs2019-200kv")) == pytest.approx(0.38, abs=1e-3)
    assert psf_sigma(preset("combs2019-200kv").merged(source_size=0.5)) < 0.33


def test_spec_simulates_the_microscope_with_a_fine_enough_potential():
    from surrogate.groundtruth import HAADFParameters
    from surrogate.training.modelbuild import BuildSettings, build_spec
    from surrogate.training.builder import expand_spec

    m = Microscope(voltage=300, convergence=17.9, detector=(41.2, 247.5), cs=1.0, defocus=0, source_size=0.7)
    spec = build_spec(BuildSettings(microscope=m, elements=("Pt", "Ir"), particles=6))
    sim = HAADFParameters.from_dict(spec["simulation"])  # raises if the sampling cannot reach 247.5 mrad
    assert (sim.energy, sim.semiangle, sim.Cs, sim.detector) == (300e3, 17.9, 1e4, (41.2, 247.5))
    assert sim.potential_sampling < 0.03
    _, tasks = expand_spec(spec)
    assert len(tasks) == 6 and {t["solute"] for t in tasks} == {"Ir"}
    assert len({t["family"] for t in tasks}) == 6  # four shapes, disordered, amorphous


def test_rods_are_added_to_the_particles_with_the_host_and_solute():
    from surrogate.training.builder import _make_particle, expand_spec
    from surrogate.training.modelbuild import BuildSettings, build_spec
    from surrogate.training.presets import preset

    spec = build_spec(BuildSettings(microscope=preset("combs2019-200kv"), elements=("Pt", "Ir"), particles=4,
                                    rods=3, sizes=(60, 80)))
    _, tasks = expand_spec(spec)
    families = [t["family"] for t in tasks]
    assert len(tasks) == 7 and families.count("column_rod") == 3 and "column_rod" not in families[:4]
    rod = _make_particle(next(t for t in tasks if t["family"] == "column_rod"), np.random.default_rng(0))
    assert 60 <= len(rod) <= 80 and rod.get_chemical_symbols().count("Ir") == round(0.2 * len(rod))
    assert rod.info["column_height"] >= 8


def test_rod_heights_reach_the_rods_and_leave_default_specs_as_they_were():
    from surrogate.training.builder import _make_particle, expand_spec
    from surrogate.training.modelbuild import BuildSettings, build_spec
    from surrogate.training.presets import preset

    scope = preset("combs2019-200kv")
    tall = build_spec(BuildSettings(microscope=scope, particles=2, rods=3, sizes=(150, 200), rod_heights=(20, 22)))
    _, tasks = expand_spec(tall)
    rods = [_make_particle(t, np.random.default_rng(k)) for k, t in enumerate(tasks) if t["family"] == "column_rod"]
    assert len(rods) == 3 and all(20 <= r.info["column_height"] <= 22 for r in rods)
    # the default heights add nothing to the spec: a build from before the option resumes unchanged
    plain = build_spec(BuildSettings(microscope=scope, particles=2, rods=3, sizes=(150, 200)))
    assert all("column_heights" not in p for p in plain["particles"])


def test_a_pt_ir_particle_has_the_solute_fraction(seed):
    from surrogate.training.builder import _make_particle

    task = {"family": "cuboctahedron", "n_atoms": 40, "mo_fraction": 0.0, "options": {}, "element": "Pt",
            "solute": "Ir", "solute_fraction": 0.25}
    atoms = _make_particle(task, np.random.default_rng(seed))
    assert atoms.get_chemical_symbols().count("Ir") == 10 and len(atoms) == 40


# -- image metadata and the mismatch -----------------------------------------------------------------------------

VELOX = {"Optics": {"AccelerationVoltage": "300000", "BeamConvergence": "0.0179034323264196"},
         "BinaryResult": {"Detector": "HAADF"},
         "Detectors": {"Detector-0": {"DetectorName": "BF", "CollectionAngleRange": {"begin": "0", "end": "0"}},
                       "Detector-4": {"DetectorName": "HAADF",
                                      "CollectionAngleRange": {"begin": "0.0412", "end": "0.2475"}}}}


def test_velox_original_metadata_in_microscope_units():
    m = microscope_from_metadata({"original_metadata": VELOX})
    assert m.voltage == 300 and m.convergence == pytest.approx(17.9034, abs=1e-3)
    assert m.detector == pytest.approx((41.2, 247.5))
    assert m.missing() == ["cs", "defocus", "source_size"]
    assert microscope_from_metadata({"acquisition_instrument": {"TEM": {"beam_energy": 80}}}).voltage == 80
    assert microscope_from_metadata({}).missing() == ["voltage", "convergence", "detector", "cs", "defocus",
                                                      "source_size"]


def test_mismatch_names_each_setting_that_differs():
    from surrogate import default_model
    from surrogate.training.modelinfo import microscope_mismatch

    model = default_model()  # 200 kV, 24.5 mrad, 50–150 mrad (read from its training dataset)
    messages = microscope_mismatch({"original_metadata": VELOX}, model)
    assert len(messages) == 3 and [m.split(":")[0] for m in messages] == ["voltage", "convergence", "detector"]
    assert "300 kV" in messages[0] and "200 kV" in messages[0]
    same = {"microscope": {"voltage": 200.5, "convergence": 24.0, "detector": [51, 148]}}
    assert microscope_mismatch(same, model) == []  # within the tolerances
    assert microscope_mismatch({}, model) == []  # nothing recorded: nothing to compare


@needs_emd
def test_the_au_emd_against_the_shipped_200kv_model():
    from surrogate import default_model
    from surrogate.training.modelinfo import microscope_mismatch

    meta = read_image_microscope(EMD)
    assert meta["microscope"]["voltage"] == 300 and meta["missing"] == ["cs", "defocus", "source_size"]
    messages = microscope_mismatch(meta, default_model())
    assert [m.split(":")[0] for m in messages] == ["voltage", "convergence", "detector"]


@needs_emd
def test_from_image_reports_what_the_file_lacks_and_flags_fill_it(capsys, tmp_path):
    rc, _, err = run_cli(capsys, "model", "build", "-o", tmp_path / "m.npz", "--from-image", EMD, "--elements", "Au")
    assert rc == 2 and "does not record cs, source_size" in err
    from surrogate.cli.model import settings_from_args
    from refine.cli.main import build_parser

    args = build_parser().parse_args(["model", "build", "-o", "m.npz", "--from-image", str(EMD), "--cs", "0.5",
                                      "--source-size", "0.8", "--voltage", "299"])
    m = settings_from_args(args)[0].microscope
    assert (m.voltage, round(m.convergence, 1), m.cs, m.source_size) == (299.0, 17.9, 0.5, 0.8)


# -- the source size -------------------------------------------------------------------------------------------

def _convolution(family, n, rng, pixel):
    from surrogate.groundtruth import make_particle
    from surrogate.imaging import ConvolutionParameters, ProbeGrid, convolution_image

    atoms = make_particle(family, n, rng)
    return convolution_image(atoms, ProbeGrid.around(atoms, pixel_size=pixel), ConvolutionParameters(pixel_size=pixel))


@pytest.mark.parametrize("blur", [0.5, 0.9])
def test_a_known_blur_is_recovered_from_another_particle(seed, blur):
    from surrogate.training.sourcesize import _gaussian_blur, fit_source_size

    rng = np.random.default_rng(seed)
    reference = _convolution("cuboctahedron", 150, rng, 0.1)
    image = _gaussian_blur(_convolution("truncated_octahedron", 220, rng, 0.12), 0.12, blur)
    image = 3e4 * image + 1.5e4 + rng.normal(0, 0.02 * 3e4 * image.max(), image.shape)  # counts on an offset
    fit = fit_source_size(image, 0.12, reference, 0.1, reference_source_size=0.3)
    expected = np.hypot(0.3, blur)
    assert fit.source_size == pytest.approx(expected, abs=0.1) and not fit.extrapolated
    sharper = fit_source_size(reference, 0.1, _gaussian_blur(reference, 0.1, 0.6), 0.1, reference_source_size=0.8)
    assert sharper.extrapolated and sharper.source_size == pytest.approx(np.sqrt(0.8**2 - 0.6**2), abs=0.1)


def test_fit_source_against_the_shipped_model(capsys, tmp_path, seed):
    """An image of the shipped model (source 0.88 Å) blurred by 0.6 Å more: source √(0.88² + 0.6²) = 1.07 Å."""
    from surrogate import default_model
    from surrogate.groundtruth import make_particle
    from surrogate.imaging import ProbeGrid
    from surrogate.common import write_image
    from surrogate.training.sourcesize import _gaussian_blur

    atoms = make_particle("decahedron", 200, np.random.default_rng(seed))
    grid = ProbeGrid.around(atoms, pixel_size=0.1)
    image = _gaussian_blur(default_model().simulate(atoms, grid), 0.1, 0.6)
    write_image(tmp_path / "blurred.npy", image, grid)
    rc, out, _ = run_cli(capsys, "model", "fit-source", tmp_path / "blurred.npy", "--json")
    assert rc == 0
    assert json.loads(out)["source_size"] == pytest.approx(np.hypot(0.88, 0.6), abs=0.12)
    np.save(tmp_path / "bare.npy", image)
    rc, _, err = run_cli(capsys, "model", "fit-source", tmp_path / "bare.npy")
    assert rc == 2 and "--pixel-size" in err


# -- the build ------------------------------------------------------------------------------------------------

def test_the_model_file_carries_microscope_cv_and_calibration(tiny_build):
    from surrogate.imaging import PolynomialSurrogate, load_model
    from surrogate.training import cross_validate, read_dataset
    from surrogate.training.modelinfo import model_microscope

    model = load_model(tiny_build)
    assert model_microscope(model) == Microscope(voltage=200, convergence=24.5, detector=(50, 100), cs=1.2,
                                                 defocus=0, source_size=0.88)
    assert model.discrepancy_ is not None and model.discrepancy_.correlation_area >= 1
    cv = model.provenance_["cv"]
    # the recorded CV is stem-refine cv's image scheme on the same images and seed (same folds; the fits'
    # rounding differs in the 5th digit)
    ds = read_dataset(Path(str(tiny_build) + ".work") / "dataset.npz")
    again = cross_validate(PolynomialSurrogate(**model.get_params()), ds.convolution_images,
                           ds.multislice_images, scheme="image", folds=2, repeats=2, seed=0)
    assert cv["one_minus_r2"] == pytest.approx(again.one_minus_r2, rel=1e-4) and cv["n_pixels"] == again.n_pixels
    assert 0 < cv["one_minus_r2"] < 0.2
    assert sorted(model.elements_) == ["Pt"] and model.convolution_parameters.pixel_size == 0.2


def test_a_rerun_resumes_and_other_settings_are_refused(capsys, tiny_build):
    work = Path(str(tiny_build) + ".work")
    stamps = {p: p.stat().st_mtime_ns for p in work.rglob("*.npz")}
    rc, out, _ = run_cli(capsys, "model", "build", "-o", tiny_build, "--json", *TINY)
    assert rc == 0 and {p: p.stat().st_mtime_ns for p in work.rglob("*.npz")} == stamps  # nothing simulated again
    assert json.loads(out)["seconds"]["particles"] < 5
    rc, _, err = run_cli(capsys, "model", "build", "-o", tiny_build, *TINY, "--phonons", "2")
    assert rc == 2 and "other settings" in err


def test_a_depth_blur_refits_the_same_simulations(capsys, tiny_build, tmp_path):
    # the work folder's abTEM images serve another β: nothing is simulated again, the convolution images are
    # made again with the blur, and the CV is cached apart from the first fit's
    import shutil

    from surrogate.imaging import convolution_image, load_model
    from surrogate.training import read_dataset

    out = tmp_path / "tiny.npz"
    shutil.copytree(str(tiny_build) + ".work", str(out) + ".work")
    work = Path(str(out) + ".work")
    stamps = {p: p.stat().st_mtime_ns for p in work.rglob("*.npz")}
    first = json.loads((work / "validation.json").read_text())
    rc, out_text, _ = run_cli(capsys, "model", "build", "-o", out, "--json", *TINY, "--depth-blur", "0.05")
    assert rc == 0 and {p: p.stat().st_mtime_ns for p in work.rglob("*.npz")} == stamps
    model = load_model(out)
    assert model.convolution_parameters.depth_blur == 0.05
    assert json.loads((work / "validation.json").read_text()) == first  # the first fit's cache is untouched
    assert len(list(work.glob("validation-*.json"))) == 1
    assert model.provenance_["cv"]["one_minus_r2"] != first["cv"]["one_minus_r2"]
    ds = read_dataset(work / "dataset.npz")
    blurred = convolution_image(ds.atoms[0], ds.grids[0], model.convolution_parameters)
    assert model.input_range_[1] >= blurred.max() * (1 - 1e-12)
    assert not np.allclose(blurred, ds.convolution_images[0])


def test_show_prints_the_record(capsys, tiny_build):
    rc, out, _ = run_cli(capsys, "model", "show", tiny_build, "--json")
    record = json.loads(out)
    assert rc == 0 and record["microscope"]["detector"] == [50.0, 100.0] and record["microscope_from"] == "model file"
    assert record["cv"]["one_minus_r2"] > 0 and record["build"]["particles"] == 2
    rc, out, _ = run_cli(capsys, "model", "show")
    assert rc == 0 and "200 kV" in out and "(from the training dataset)" in out
