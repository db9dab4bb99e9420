"""The pixel size against the columns' lattice: the cell-shape test, the warning, and --pixel-size-from-lattice.

The images are the project's own abTEM simulations (``tests/data/tall``: a
Pt octahedron down [110]; ``tests/benchmarks/independent/data``: particles
that are not one zone-axis crystal), all at 0.1 Å per pixel.
"""

import logging
from pathlib import Path

import numpy as np
import pytest

from refine.io.calibration import MAX_ANISOTROPY, cell_anisotropy, check_pixel_size
from refine.io.distortion import ZONE_AXIS_FAMILIES
from refine.search import nearest_neighbour_distance
from refine.workflows import ImageSettings
from refine.workflows.inputs import validate_image
from surrogate.common import InputError

ROOT = Path(__file__).resolve().parents[2]
TALL = ROOT / "tests" / "data" / "tall" / "abtem_110_800_f4_p8.npy"
INDEPENDENT = ROOT / "tests" / "benchmarks" / "independent" / "data"
PIXEL = 0.1  # Å, every image here
NN = nearest_neighbour_distance(["Pt"])


@pytest.fixture(scope="module")
def model():
    from surrogate import default_model

    return default_model()


def _rotation(theta):
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[c, -s], [s, c]])


@pytest.mark.parametrize("zone", ["[110]", "[100]"])
def test_a_zone_axis_cell_at_any_size_rotation_and_basis_choice_is_isotropic(zone):
    ideal = np.asarray(ZONE_AXIS_FAMILIES[zone][:2])
    # another basis of the same lattice (a1, a1 + a2), turned by 0.7 rad and 13 % larger
    basis = 1.13 * np.array([ideal[0], ideal[0] + ideal[1]]) @ _rotation(0.7).T
    assert cell_anisotropy(basis, zone) < 1e-9


def test_a_stretched_cell_reads_its_stretch():
    ideal = np.asarray(ZONE_AXIS_FAMILIES["[110]"][:2])
    stretch = np.diag([1.10, 1.0])  # 10 % along x: the principal stretches differ by 10 %
    assert cell_anisotropy(ideal @ stretch.T, "[110]") == pytest.approx(0.10, rel=1e-6)
    # the [100] square cell is no [110] cell up to a scale: √(3/2)·... far beyond a scan distortion
    assert cell_anisotropy(np.asarray(ZONE_AXIS_FAMILIES["[100]"]), "[110]") > 3 * MAX_ANISOTROPY


@pytest.mark.parametrize("name", ["recrystallised", "far-side"])
def test_particles_that_are_no_zone_axis_crystal_raise_no_false_warning(name, model, caplog):
    """Their neighbour lengths happen to match [110] at a wrong scale (+7 %, +14 %); their cells do not."""
    clean = np.load(INDEPENDENT / name / "clean.npy")
    with caplog.at_level(logging.WARNING, logger="refine.io.calibration"):
        image = validate_image(clean, model, pixel_size=PIXEL, mask=None, resample=True)
        assert check_pixel_size(image, NN, element="Pt") is None
    assert "pixel size" not in caplog.text


def test_a_zone_axis_crystal_read_at_a_wrong_pixel_size_is_warned_about(model, caplog):
    clean = np.load(TALL)
    with caplog.at_level(logging.WARNING, logger="refine.io.calibration"):
        validate_image(clean, model, pixel_size=0.09, mask=None, resample=True)
    assert "pixel size: the columns are spaced" in caplog.text and "0.0999" in caplog.text


@pytest.mark.parametrize("declared", [0.09, 0.1, 0.11])
def test_pixel_size_from_lattice_recovers_the_true_pixel_size(declared, model):
    clean = np.load(TALL)
    image = validate_image(clean, model, pixel_size=declared, mask=None, resample=True, lattice_pixel_size=True)
    step = image.metadata["preparation"][-1]
    assert step["step"] == "pixel size from lattice" and step["parameters"]["start"] == declared
    assert step["values"]["pixel_size"] == pytest.approx(PIXEL, rel=0.005)
    assert step["values"]["zone_axis"] == "[110]"
    # the image is the file read at that pixel size: the same grid as reading it at the true one
    direct = validate_image(clean, model, pixel_size=PIXEL, mask=None, resample=True)
    assert image.shape == direct.shape
    assert np.corrcoef(image.data.ravel(), direct.data.ravel())[0, 1] > 0.999


def test_pixel_size_from_lattice_refuses_an_image_without_a_zone_axis_lattice(model):
    clean = np.load(INDEPENDENT / "recrystallised" / "clean.npy")
    with pytest.raises(InputError, match="no zone-axis lattice of Pt"):
        validate_image(clean, model, pixel_size=PIXEL, mask=None, resample=True, lattice_pixel_size=True)


def test_pixel_size_from_lattice_refuses_an_implausible_correction(model):
    """Read at 0.075 Å, the lattice says 0.1: 33 % off, more like a wrong element than a wrong calibration."""
    with pytest.raises(InputError, match="33 % from the 0.075 Å"):
        validate_image(np.load(TALL), model, pixel_size=0.075, mask=None, resample=True, lattice_pixel_size=True)


def test_undistort_and_pixel_size_from_lattice_exclude_each_other(model):
    with pytest.raises(InputError, match="choose one"):
        ImageSettings(undistort=True, lattice_pixel_size=True)
    with pytest.raises(InputError, match="choose one"):
        validate_image(np.load(TALL), model, pixel_size=PIXEL, mask=None, resample=True, undistort=True,
                       lattice_pixel_size=True)


def test_the_command_line_refuses_a_lattice_calibration_without_a_lattice_in_one_line(tmp_path, capsys):
    from refine.cli.main import main

    image = tmp_path / "recrystallised.npy"
    np.save(image, np.load(INDEPENDENT / "recrystallised" / "clean.npy"))
    structure = INDEPENDENT / "recrystallised" / "truth.xyz"
    rc = main(["cost", str(structure), str(image), "--pixel-size", str(PIXEL), "--pixel-size-from-lattice"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    lines = [line for line in err.splitlines() if "error" in line]
    assert len(lines) == 1 and "no zone-axis lattice" in lines[0]
