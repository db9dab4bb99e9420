"""CLI contract: one grammar for every subcommand; one-line errors and exit status 2 for bad input, exit 1 and
a pointer to --debug for a bug of ours, never a traceback; --version."""

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
    rc, out, err = run_cli(capsys, "fit", "--convolution-dir", c, "--multislice-dir", m, "-s", "3", "-d", "2",
                           "--elements", "Pt", "-o", model, "--json")
    assert rc == 0 and json.loads(out)["n_terms"] == 66 and model.is_file()
    rc, out, _ = run_cli(capsys, "predict", c / "c_0.txt", "-m", model, "-o", tmp_path / "p.npy", "--json")
    assert rc == 0
    pred = np.load(tmp_path / "p.npy")
    truth = tifffile.imread(m / "m_0_x.tif")[1:-1, 1:-1]
    assert pred.shape == truth.shape and np.corrcoef(pred.ravel(), truth.ravel())[0, 1] > 0.99
    rc, out, _ = run_cli(capsys, "cv", "--convolution-dir", c, "--multislice-dir", m, "-s", "3", "--json")
    res = json.loads(out)
    assert rc == 0 and {"one_minus_r2", "frms", "n_terms", "n_pixels"} <= set(res) and res["one_minus_r2"] < 0.05


def test_fit_with_input_saturation_is_recorded_and_shown(capsys, tmp_path, folders):
    c, m = folders
    model = tmp_path / "sat.npz"
    rc, _, _ = run_cli(capsys, "fit", "--convolution-dir", c, "--multislice-dir", m, "-s", "3", "-d", "2",
                       "--saturation", "0.5", "-o", model)
    assert rc == 0
    from surrogate.imaging.model import load_model

    loaded = load_model(model)
    assert loaded.saturation == 0.5 and loaded.saturation_scale_ > 0
    rc, out, _ = run_cli(capsys, "model", "show", model)
    assert rc == 0 and "input saturation 0.5" in out
    rc, _, err = run_cli(capsys, "fit", "--convolution-dir", c, "--multislice-dir", m, "-s", "3",
                         "--saturation", "-1", "-o", tmp_path / "bad.npz")
    assert_one_line_error(rc, err, "saturation")
    assert not (tmp_path / "bad.npz").exists()


def test_mismatched_shapes(capsys, folders):
    c, m = folders
    np.savetxt(c / "c_1.txt", np.ones((5, 5)))
    rc, _, err = run_cli(capsys, "cv", "--convolution-dir", c, "--multislice-dir", m)
    assert_one_line_error(rc, err, "shape")


def test_nan_pixels(capsys, folders):
    c, m = folders
    img = np.loadtxt(c / "c_2.txt")
    img[3, 3] = np.nan
    np.savetxt(c / "c_2.txt", img)
    rc, _, err = run_cli(capsys, "fit", "--convolution-dir", c, "--multislice-dir", m, "-o", "x.npz")
    assert_one_line_error(rc, err, "NaN")


def test_empty_and_unpaired_folders(capsys, tmp_path, folders):
    c, m = folders
    (tmp_path / "empty").mkdir()
    rc, _, err = run_cli(capsys, "cv", "--convolution-dir", tmp_path / "empty", "--multislice-dir", m)
    assert_one_line_error(rc, err, "no image files")
    (m / "m_0_x.tif").rename(m / "m_7_x.tif")
    rc, _, err = run_cli(capsys, "cv", "--convolution-dir", c, "--multislice-dir", m)
    assert_one_line_error(rc, err, "unpaired")


def test_even_s(capsys, folders):
    c, m = folders
    rc, _, err = run_cli(capsys, "cv", "--convolution-dir", c, "--multislice-dir", m, "--size", "4")
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
    rc, stdout, _ = run_cli(capsys, "sweep", "--convolution-dir", c, "--multislice-dir", m, "--sizes", "1,3",
                            "--degrees", "1,2", "--repeats", "1", "--out", out, "--json")
    assert rc == 0
    rows = list(csv.DictReader(open(out / "sweep.csv")))
    assert [int(r["n_terms"]) for r in rows] == [r["n_terms"] for r in json.loads(stdout)]
    assert (out / "sweep.png").stat().st_size > 1000
    # more terms, lower CV error on this smooth nonlinear response
    assert float(rows[-1]["one_minus_r2"]) < float(rows[0]["one_minus_r2"])


# -- one grammar -------------------------------------------------------------------------------------------------

#: the shared flags: option strings, dest, type, action class (expected values written out, not read from the code)
SHARED = {
    "--out": (("-o", "--out"), "out", None, "_StoreAction"),
    "--json": (("--json",), "json", None, "_StoreTrueAction"),
    "--no-progress": (("--no-progress",), "progress", None, "_StoreFalseAction"),
    "--seed": (("--seed",), "seed", int, "_StoreAction"),
    "--workers": (("--workers",), "workers", int, "_StoreAction"),
    "--pixel-size": (("--pixel-size",), "pixel_size", float, "_StoreAction"),
    "--sampling": (("--sampling",), "sampling", float, "_StoreAction"),
    "--model": (("-m", "--model"), "model", None, "_StoreAction"),
}
FOLDER_OUT = {"demo", "refine", "batch", "ensemble", "sweep", "counts"}
FILE_OUT = {"fit", "predict", "simulate", "dataset build", "report", "model build"}
LONG_WORK = {"demo", "refine", "batch", "ensemble", "compare", "fit", "cv", "sweep", "simulate", "dataset build",
             "model build"}


def _subcommand_parsers():
    """{"refine": parser, ..., "dataset build": parser}: every leaf parser of stem-refine, nested ones included."""
    import argparse

    from refine.cli.main import build_parser

    def walk(parser, prefix):
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            yield prefix, parser
        for action in subs:
            for name, child in action.choices.items():
                yield from walk(child, f"{prefix} {name}".strip())

    return dict(walk(build_parser(), ""))


def _options(parser):
    return {s: a for a in parser._actions for s in a.option_strings}


def test_every_subcommand_is_walked():
    names = set(_subcommand_parsers())
    assert names == {"demo", "fit", "cv", "sweep", "predict", "simulate", "dataset build", "refine", "batch",
                     "ensemble", "compare", "cost", "counts", "report", "model build", "model show",
                     "model fit-source"}


def test_a_flag_means_one_thing_on_every_subcommand():
    parsers = _subcommand_parsers()
    seen = {}  # option string -> (subcommand, signature)
    for name, parser in parsers.items():
        for flag, action in _options(parser).items():
            signature = (tuple(action.option_strings), action.dest, action.type, type(action).__name__,
                         action.nargs, action.const)
            if flag in SHARED:
                strings, dest, typ, kind = SHARED[flag]
                assert signature[:4] == (strings, dest, typ, kind), (name, flag, signature)
            first = seen.setdefault(flag, (name, signature))
            assert first[1] == signature, f"{flag}: {first[0]} {first[1]} but {name} {signature}"


def test_the_shared_flags_are_on_every_subcommand_that_needs_them():
    parsers = _subcommand_parsers()
    for name, parser in parsers.items():
        options = _options(parser)
        assert "--json" in options, name  # every subcommand prints a result
        assert ("--no-progress" in options) == (name in LONG_WORK), name
        if name in FOLDER_OUT | FILE_OUT:
            out = options["--out"]
            kind = "output folder" if name in FOLDER_OUT else "output file"
            assert out.help.startswith(kind + ":"), (name, out.help)
            if name in FOLDER_OUT:
                assert out.metavar == "DIR", name
        else:
            assert "--out" not in options, name
        for flag, fragment in (("--seed", "numpy Generator"), ("--workers", "local worker processes"),
                               ("--pixel-size", "pixel size of"), ("--sampling", "probe step of the simulated")):
            if flag in options:
                assert fragment in options[flag].help, (name, flag, options[flag].help)


def test_the_renamed_meanings_are_gone():
    parsers = _subcommand_parsers()
    everywhere = set().union(*(_options(p) for p in parsers.values()))
    assert not {"--convolution", "--multislice"} & everywhere
    # --pixel-size is the pixel size of input image files only: the simulating commands have --sampling instead
    for name in ("simulate", "dataset build"):
        assert "--pixel-size" not in _options(parsers[name]) and "--sampling" in _options(parsers[name])
    for name in ("fit", "cv", "sweep"):
        assert {"--convolution-dir", "--multislice-dir", "--pixel-size"} <= set(_options(parsers[name]))
    assert "--with-multislice" in _options(parsers["compare"])


@pytest.mark.parametrize("argv", [
    ["simulate", "convolution", "x.xyz", "-o", "x.npy", "--pixel-size", "0.2"],
    ["dataset", "build", "--family", "icosahedron", "-o", "d.npz", "--pixel-size", "0.2"],
    ["fit", "--convolution", "c", "--multislice", "m", "-o", "x.npz"],
    ["cv", "--multislice", "m", "--convolution-dir", "c"],
    ["compare", "a.xyz", "--image", "i.npy", "--multislice"],
    ["refine", "i.npy", "-c", "Pt13", "-o", "out", "--gen", "3"],  # no abbreviations
])
def test_old_and_abbreviated_spellings_are_usage_errors(capsys, argv):
    from refine.cli.main import build_parser

    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(argv)
    assert exc.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err


# -- errors and version ----------------------------------------------------------------------------------------

def test_an_internal_error_is_exit_1_with_a_pointer_to_debug(capsys, monkeypatch, tmp_path):
    import surrogate.cli.fit

    def broken(args):
        raise KeyError("no such key")

    monkeypatch.setattr(surrogate.cli.fit, "run", broken)
    rc, out, err = run_cli(capsys, "fit", "-o", tmp_path / "m.npz")
    assert rc == 1 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "internal error" in lines[0] and "KeyError" in lines[0] and "--debug" in lines[0]
    assert "error:" not in err and "Traceback" not in err
    # --debug shows the traceback instead: the exception propagates
    with pytest.raises(KeyError):
        main(["--debug", "fit", "-o", str(tmp_path / "m.npz")])


def test_an_input_error_is_exit_2_and_one_line(capsys, monkeypatch, tmp_path):
    import surrogate.cli.fit
    from surrogate.common import InputError

    def bad_input(args):
        raise InputError("the folder holds nothing\nsecond line of detail")

    monkeypatch.setattr(surrogate.cli.fit, "run", bad_input)
    rc, out, err = run_cli(capsys, "fit", "-o", tmp_path / "m.npz")
    assert rc == 2 and out == ""
    assert err.strip().splitlines() == ["stem-refine fit: error: the folder holds nothing"]


def test_version(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"stem-refine {version('stem-refine')}"
