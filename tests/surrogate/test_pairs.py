import numpy as np
import pytest
import tifffile

from surrogate.common.errors import InputError
from surrogate.imaging.grid import ProbeGrid
from surrogate.common import read_image_array, read_image_metadata, write_image
from surrogate.training.pairs import pair_folders, read_pairs


def make_folders(tmp_path, conv_nums, ms_nums, shape=(12, 10)):
    c = tmp_path / "conv"
    m = tmp_path / "ms"
    c.mkdir()
    m.mkdir()
    for k in conv_nums:
        np.savetxt(c / f"Pt_Mo50_convolution_{k}.txt", np.full(shape, k + 1.0))
    for k in ms_nums:
        tifffile.imwrite(m / f"pt_mo50_{k}_cl160mm_ss.tif", np.full(shape, 10.0 * (k + 1), dtype=np.float32))
    return c, m


def test_pairs_by_the_varying_number_not_by_sort_order(tmp_path):
    c, m = make_folders(tmp_path, [0, 1, 2, 10], [0, 1, 2, 10])
    nums, conv, ms = read_pairs(c, m)
    assert nums == [0, 1, 2, 10]
    for k, ci, mi in zip(nums, conv, ms):
        assert ci[0, 0] == k + 1 and mi[0, 0] == 10 * (k + 1)


def test_unpaired_numbers_are_refused(tmp_path):
    c, m = make_folders(tmp_path, [0, 1, 2], [0, 1, 3])
    with pytest.raises(InputError, match=r"unpaired.*\[2\].*\[3\]"):
        pair_folders(c, m)


def test_empty_folder_and_mismatched_shapes(tmp_path):
    (tmp_path / "empty").mkdir()
    c, m = make_folders(tmp_path, [0, 1], [0, 1])
    with pytest.raises(InputError, match="no image files"):
        pair_folders(tmp_path / "empty", m)
    np.savetxt(c / "Pt_Mo50_convolution_1.txt", np.ones((5, 5)))
    with pytest.raises(InputError, match="shape"):
        read_pairs(c, m)


def test_read_image_array_errors(tmp_path):
    p = tmp_path / "nan.txt"
    np.savetxt(p, np.array([[1.0, np.nan], [2.0, 3.0]]))
    with pytest.raises(InputError, match="NaN"):
        read_image_array(p)
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"garbage")
    with pytest.raises(InputError, match="cannot read"):
        read_image_array(bad)
    (tmp_path / "x.jpg").write_text("x")
    with pytest.raises(InputError, match="unsupported"):
        read_image_array(tmp_path / "x.jpg")


@pytest.mark.parametrize("name", ["a.txt", "a.dat", "a.csv", "a.npy", "a.tif"])
def test_training_and_experimental_images_come_from_one_reader(tmp_path, rng, name):
    """A file read as a training image and as an experimental image gives the same array, the one written."""
    from refine.io import read_image as read_experimental

    img = rng.random((6, 5)) + 0.5
    path = tmp_path / name
    if name.endswith(".npy"):
        np.save(path, img)
    elif name.endswith(".tif"):
        tifffile.imwrite(path, img)
    else:
        np.savetxt(path, img, delimiter="," if name.endswith(".csv") else " ")  # %.18e: exact
    training = read_image_array(path)
    np.testing.assert_array_equal(training, img)
    np.testing.assert_array_equal(read_experimental(path, pixel_size=0.1).data, training)


def test_write_image_round_trip_keeps_the_grid(tmp_path, rng):
    from refine.io.images import read_image as read_experimental

    img = rng.random((7, 9))
    grid = ProbeGrid(origin=(1.5, -2.0), shape=(7, 9), pixel_size=0.123)
    for name in ("a.npy", "a.tif"):
        write_image(tmp_path / name, img, grid, meta={"kind": "test"})
        np.testing.assert_allclose(read_image_array(tmp_path / name), img)
        record = read_image_metadata(tmp_path / name)
        assert record["grid"] == grid.to_dict() and record["kind"] == "test"
        # the refinement's reader takes the calibration from the record
        exp = read_experimental(tmp_path / name)
        assert exp.pixel_size == pytest.approx(0.123) and tuple(exp.origin) == (1.5, -2.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy", "a.npy.json", "a.tif"]
    with pytest.raises(InputError, match="does not match its grid"):
        write_image(tmp_path / "b.npy", img, ProbeGrid((0, 0), (9, 7)))
