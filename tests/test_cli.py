"""CLI contract: one-line errors and exit status 2 for bad input, never a traceback."""

import json

import numpy as np
import pytest
import tifffile

from refine.cli.main import main


def run_cli(capsys, *argv):
    rc = main(list(map(str, argv)))
    out = capsys.readouterr()
    return rc, out.out, out.err


def assert_one_line_error(rc, err, pattern):
    assert rc == 2
    lines = [line for line in err.strip().splitlines() if "error" in line]
    assert len(lines) == 1 and "Traceback" not in err
    assert pattern in lines[0], lines[0]


@pytest.fixture
def folders(tmp_path, pairs):
    conv, ms = pairs
    c, m = tmp_path / "conv", tmp_path / "ms"
    c.mkdir()
    m.mkdir()
    for k, (ci, mi) in enumerate(zip(conv, ms)):
        np.savetxt(c / f"c_{k}.txt", ci)
        tifffile.imwrite(m / f"m_{k}_x.tif", mi.astype(np.float32))
    return c, m


def test_fit_predict_cv_round_trip(capsys, tmp_path, folders):
    c, m = folders
    model = tmp_path / "model.npz"
    rc, out, err = run_cli(capsys, "fit", "--convolution", c, "--multislice", m, "-s", "3", "-d", "2",
                           "--elements", "Pt", "-o", model, "--json")
    assert rc == 0 and json.loads(out)["n_terms"] == 66 and model.is_file()
    rc, out, _ = run_cli(capsys, "predict", c / "c_0.txt", "-m", model, "-o", tmp_path / "p.npy", "--json")
    assert rc == 0
    pred = np.load(tmp_path / "p.npy")
    truth = tifffile.imread(m / "m_0_x.tif")[1:-1, 1:-1]
    assert pred.shape == truth.shape and np.corrcoef(pred.ravel(), truth.ravel())[0, 1] > 0.99
    rc, out, _ = run_cli(capsys, "cv", "--convolution", c, "--multislice", m, "-s", "3", "--json")
    res = json.loads(out)
    assert rc == 0 and {"one_minus_r2", "frms", "n_terms", "n_pixels"} <= set(res) and res["one_minus_r2"] < 0.05


def test_mismatched_shapes(capsys, folders):
    c, m = folders
    np.savetxt(c / "c_1.txt", np.ones((5, 5)))
    rc, _, err = run_cli(capsys, "cv", "--convolution", c, "--multislice", m)
    assert_one_line_error(rc, err, "shape")


def test_nan_pixels(capsys, folders):
    c, m = folders
    img = np.loadtxt(c / "c_2.txt")
    img[3, 3] = np.nan
    np.savetxt(c / "c_2.txt", img)
    rc, _, err = run_cli(capsys, "fit", "--convolution", c, "--multislice", m, "-o", "x.npz")
    assert_one_line_error(rc, err, "NaN")


def test_empty_and_unpaired_folders(capsys, tmp_path, folders):
    c, m = folders
    (tmp_path / "empty").mkdir()
    rc, _, err = run_cli(capsys, "cv", "--convolution", tmp_path / "empty", "--multislice", m)
    assert_one_line_error(rc, err, "no image files")
    (m / "m_0_x.tif").rename(m / "m_7_x.tif")
    rc, _, err = run_cli(capsys, "cv", "--convolution", c, "--multislice", m)
    assert_one_line_error(rc, err, "unpaired")


def test_even_s(capsys, folders):
    c, m = folders
    rc, _, err = run_cli(capsys, "cv", "--convolution", c, "--multislice", m, "--size", "4")
    assert_one_line_error(rc, err, "odd")


def test_unknown_element_in_structure(capsys, tmp_path, small_model):
    from surrogate.imaging.model import save_model

    model = save_model(small_model, tmp_path / "m.npz")
    xyz = tmp_path / "bad.xyz"
    xyz.write_text("2\n\nPt 0 0 0\nQq 2 0 0\n")
    rc, _, err = run_cli(capsys, "predict", xyz, "-m", model, "-o", tmp_path / "o.npy")
    assert_one_line_error(rc, err, "unknown element")
    mo = tmp_path / "mo.xyz"
    mo.write_text("1\n\nMo 0 0 0\n")
    rc, _, err = run_cli(capsys, "predict", mo, "-m", model, "-o", tmp_path / "o.npy")
    assert_one_line_error(rc, err, "not in the model's training set")
    assert not (tmp_path / "o.npy").exists()


def test_missing_training_data_and_corrupt_model(capsys, tmp_path):
    rc, _, err = run_cli(capsys, "fit", "-o", tmp_path / "m.npz")
    assert_one_line_error(rc, err, "training data needed")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"junk")
    img = tmp_path / "c.npy"
    np.save(img, np.ones((9, 9)))
    rc, _, err = run_cli(capsys, "predict", img, "-m", bad, "-o", tmp_path / "o.npy")
    assert_one_line_error(rc, err, "not a readable")


def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("fit", "cv", "sweep", "predict"):
        assert cmd in out


def test_sweep_writes_csv_and_figure(capsys, tmp_path, folders):
    import csv

    c, m = folders
    out = tmp_path / "sweep"
    rc, stdout, _ = run_cli(capsys, "sweep", "--convolution", c, "--multislice", m, "--sizes", "1,3",
                            "--degrees", "1,2", "--repeats", "1", "--out", out, "--json")
    assert rc == 0
    rows = list(csv.DictReader(open(out / "sweep.csv")))
    assert [int(r["n_terms"]) for r in rows] == [r["n_terms"] for r in json.loads(stdout)]
    assert (out / "sweep.png").stat().st_size > 1000
    # more terms, lower CV error on this smooth nonlinear response
    assert float(rows[-1]["one_minus_r2"]) < float(rows[0]["one_minus_r2"])
