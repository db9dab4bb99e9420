"""``stem-refine report``: one self-contained HTML page of a real (tiny) refinement, checked as text and in Chromium.

The run folders are made once per module by the real CLI (Pt13 against a surrogate image, population 5, two
generations of the plain search: ~2 s each), three seeds and their ensemble, laid out as a user would:
``base/s3``, ``base/s4``, ``base/s5`` and ``base/ensemble``. Tests that change a folder work on a copy.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from ase.cluster import Icosahedron
from ase.io import read, write

from refine.cli.main import main
from surrogate.imaging.grid import ProbeGrid

PIXEL = 0.1  # Å
REPO = Path(__file__).resolve().parents[2]
SEEDS = (3, 4, 5)


@pytest.fixture(scope="module")
def image_file(small_model, tmp_path_factory):
    truth = Icosahedron("Pt", 2)
    truth.positions += 4.5 - truth.positions.mean(axis=0)
    grid = ProbeGrid(origin=(0.0, 0.0), shape=(90, 90), pixel_size=PIXEL)
    data = 20.0 * small_model.simulate(truth, grid) + 0.05 + np.random.default_rng(11).normal(0.0, 5e-4, grid.shape)
    path = tmp_path_factory.mktemp("image") / "image.npy"
    np.save(path, data)
    return path


@pytest.fixture(scope="module")
def base(image_file, model_file, tmp_path_factory):
    """``base/s3, s4, s5``: three real runs of one image; ``base/ensemble``: their ensemble."""
    base = tmp_path_factory.mktemp("runs")
    for seed in SEEDS:
        assert main(["refine", str(image_file), "--model", str(model_file), "--composition", "Pt13",
                     "--out", str(base / f"s{seed}"), "--pixel-size", str(PIXEL), "--population", "5",
                     "--seed", str(seed), "--no-progress", "--search", "plain", "--generations", "2"]) == 0
    assert main(["ensemble", *(str(base / f"s{s}") for s in SEEDS), "-o", str(base / "ensemble"),
                 "--no-figure", "--no-progress"]) == 0
    return base


@pytest.fixture
def lone_run(base, tmp_path):
    """A copy of one run with no ensemble anywhere near it, and no column counts."""
    run = Path(shutil.copytree(base / "s3", tmp_path / "alone" / "run"))
    for name in ("counts.csv", "counts.png", "counts.json", "report.html"):  # counts: from refinements that count
        (run / name).unlink(missing_ok=True)
    return run


def _report(capsys, *argv):
    rc = main(["report", *map(str, argv)])
    out = capsys.readouterr()
    return rc, out.out, out.err


def _viewer_json(page: str) -> dict:
    m = re.search(r'<script type="application/json" id="structure-data">(.*?)</script>', page, re.S)
    assert m, "no structure data on the page"
    return json.loads(m.group(1))


def _data_uris(page: str) -> list[bytes]:
    return [base64.b64decode(u) for u in re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def _section(page: str, name: str) -> str:
    m = re.search(rf'<section id="{name}">(.*?)</section>', page, re.S)
    assert m, f"no {name} section"
    return m.group(1)


def _png_shape(png: bytes) -> tuple:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).shape


def test_the_page_is_self_contained_and_shows_the_run(lone_run, capsys):
    rc, out, err = _report(capsys, lone_run, "--json")
    assert rc == 0, err
    result = json.loads(out)
    path = lone_run / "report.html"
    assert result["report"] == str(path) and path.stat().st_size == result["bytes"]
    page = path.read_text(encoding="utf-8")
    # nothing fetched from anywhere: every src/href is inline data or an in-page anchor, no URL at all
    refs = re.findall(r'\b(?:src|href)\s*=\s*["\']?([^"\'\s>]*)', page, re.I)
    assert refs and all(r.startswith(("data:", "#")) for r in refs), [r[:40] for r in refs]
    assert not re.search(r"https?://", page) and "<link" not in page and "<iframe" not in page
    # the images and the history, as decodable PNGs of a useful size
    pngs = _data_uris(page)
    assert len(pngs) == 2 and all(p.startswith(b"\x89PNG\r\n\x1a\n") for p in pngs)
    assert all(_png_shape(p)[1] > 600 for p in pngs)
    assert "experimental" in _section(page, "images") and "<img" in _section(page, "history")
    # the header's numbers are the run's
    summary = json.loads((lone_run / "summary.json").read_text())
    head = _section(page, "summary")
    for text in ("Pt13", "0.1 Å", str(summary["image"]["source"]), "signal-dependent", "(rule: auto)",
                 f"{summary['chi2_per_pixel']:.4g}", f"{summary['energy']:.6g} eV", "2 (stopped by: generations)"):
        assert text in head, text
    # the structure: every atom of best.xyz, at its place (centred), nothing else
    best = read(lone_run / "best.xyz")
    data = _viewer_json(page)
    assert data["n_atoms"] == len(best) == len(data["positions"]) == 13
    np.testing.assert_allclose(data["positions"], best.positions - best.positions.mean(axis=0), atol=1e-3)
    assert data["symbols"] == best.get_chemical_symbols()
    # no ensemble: coloured by coordination, counted here independently (ASE's neighbour list, 1.2 × covalent radii)
    from ase.neighborlist import NeighborList, natural_cutoffs

    nl = NeighborList(natural_cutoffs(best, mult=1.2), skin=0.0, self_interaction=False, bothways=True)
    nl.update(best)
    fields = {f["name"]: f for f in data["fields"]}
    assert data["default"] == "coordination" and "spread" not in fields and result["ensemble"] is None
    assert fields["coordination"]["values"] == [len(nl.get_neighbors(i)[0]) for i in range(len(best))]
    assert len(fields["coordination"]["colours"]) == len(best)
    np.testing.assert_allclose(fields["depth"]["values"], best.positions[:, 2], atol=1e-3)
    # no counts.csv: said so
    assert "no column counts in this run" in _section(page, "counts") and result["counts"] is None


def test_column_counts_are_shown_with_their_agreement(lone_run, capsys):
    from refine.analysis.columns import column_counts

    best = read(lone_run / "best.xyz")
    xy = best.positions[:, :2]
    cols = column_counts(xy, xy)  # the 3-D answer's own columns (projected along the beam)
    n = len(cols.xy)
    assert n >= 4
    image_count = cols.n_refined.copy()
    image_count[0] += 1  # one column off by one, one by two: n−2 equal, n−1 within ±1
    image_count[1] += 2
    lines = ["x,y,atoms_3d,atoms_image,cross_section,disagree"]
    for (x, y), a, b in zip(cols.xy, cols.n_refined, image_count):
        lines.append(f"{x:.4f},{y:.4f},{a},{b},{0.05 * b:.5f},{int(a != b)}")
    (lone_run / "counts.csv").write_text("\n".join(lines) + "\n")
    rc, out, err = _report(capsys, lone_run, "--json")
    assert rc == 0, err
    counts = json.loads(out)["counts"]
    assert counts["n_columns"] == n and counts["n_disagree"] == 2
    assert counts["fraction_equal"] == pytest.approx((n - 2) / n)
    assert counts["fraction_within_1"] == pytest.approx((n - 1) / n)
    assert counts["atoms_3d"] == 13 and counts["atoms_image"] == 16
    assert "n_resolved" not in counts  # a counts.csv without the resolved column says nothing about it
    section = _section((lone_run / "report.html").read_text(), "counts")
    assert "no column counts" not in section and "peak of their own" not in section
    assert f"{(n - 2) / n:.1%}" in section and f"{(n - 1) / n:.1%}" in section and "+2" in section
    overlay = _data_uris(section)
    assert len(overlay) == 1 and _png_shape(overlay[0])[1] > 800


def test_columns_the_image_does_not_resolve_are_reported_apart(lone_run, capsys):
    """A counts.csv with a ``resolved`` column: the page and --json give the agreement over resolved columns too."""
    from refine.analysis.columns import column_counts

    best = read(lone_run / "best.xyz")
    xy = best.positions[:, :2]
    cols = column_counts(xy, xy)
    n = len(cols.xy)
    image_count = cols.n_refined.copy()
    image_count[0] += 2  # off by two, and unresolved: over the resolved columns every count agrees
    lines = ["x,y,atoms_3d,atoms_image,cross_section,disagree,resolved"]
    for k, ((x, y), a, b) in enumerate(zip(cols.xy, cols.n_refined, image_count)):
        lines.append(f"{x:.4f},{y:.4f},{a},{b},{0.05 * b:.5f},{str(a != b).lower()},{str(k != 0).lower()}")
    (lone_run / "counts.csv").write_text("\n".join(lines) + "\n")
    rc, out, err = _report(capsys, lone_run, "--json")
    assert rc == 0, err
    counts = json.loads(out)["counts"]
    assert counts["fraction_equal"] == pytest.approx((n - 1) / n)
    assert counts["n_resolved"] == n - 1 and counts["fraction_equal_resolved"] == 1.0
    section = _section((lone_run / "report.html").read_text(), "counts")
    assert "columns the image resolves" in section and f"{n - 1} of {n}" in section and "Dashed" in section


def test_the_runs_own_column_counts_are_reported(base, tmp_path, capsys):
    import csv

    run = base / "s3"
    if not (run / "counts.csv").is_file():
        pytest.skip("this refinement wrote no counts.csv (column counting not in this checkout)")
    with open(run / "counts.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    diff = np.array([int(r["atoms_image"]) - int(r["atoms_3d"]) for r in rows])
    rc, out, err = _report(capsys, run, "--json", "-o", tmp_path / "report.html")
    assert rc == 0, err
    counts = json.loads(out)["counts"]
    assert counts["n_columns"] == len(rows) > 0
    assert counts["fraction_equal"] == pytest.approx(np.mean(diff == 0))
    assert counts["fraction_within_1"] == pytest.approx(np.mean(np.abs(diff) <= 1))
    section = _section((tmp_path / "report.html").read_text(), "counts")
    assert f"{np.mean(diff == 0):.1%}" in section and len(_data_uris(section)) == 1


def test_the_atoms_take_the_spread_of_the_ensemble_they_belong_to(base, lone_run, tmp_path, capsys):
    consensus = read(base / "ensemble" / "consensus.xyz")
    expected = np.sort(np.round(consensus.arrays["spread"], 4))
    # found beside the run (the ensemble lists it among its sources), and given explicitly to a lone copy
    for run, extra in ((base / "s4", ()), (lone_run, ("--ensemble", base / "ensemble"))):
        page = tmp_path / f"{run.name}.html"
        rc, out, err = _report(capsys, run, "--json", "-o", page, *extra)
        assert rc == 0, err
        result = json.loads(out)
        assert result["colour_by"] == "spread"
        assert Path(result["ensemble"]["source"]).resolve() == (base / "ensemble" / "consensus.xyz").resolve()
        assert result["ensemble"]["n_runs"] == 3
        data = _viewer_json(page.read_text())
        spread = {f["name"]: f for f in data["fields"]}["spread"]
        # every atom of best.xyz got one consensus atom's spread, each used once (one-to-one matching)
        np.testing.assert_allclose(np.sort(spread["values"]), expected, atol=2e-4)
        assert spread["legend"]["kind"] == "continuous" and spread["legend"]["min"] == 0.0


def test_an_ensemble_of_another_particle_is_refused(lone_run, tmp_path, capsys):
    other = Icosahedron("Pt", 3)  # 55 atoms, not the run's 13
    other.arrays["spread"] = np.full(len(other), 0.1)
    write(tmp_path / "consensus.xyz", other, format="extxyz")
    rc, _, err = _report(capsys, lone_run, "--ensemble", tmp_path / "consensus.xyz")
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "Pt55" in err and "Pt13" in err
    rc, _, err = _report(capsys, lone_run, "--ensemble", tmp_path / "missing")
    assert rc == 2 and "does not exist" in err
    assert not (lone_run / "report.html").exists()


@pytest.mark.parametrize("damage, fragment", [
    ("missing", "does not exist"),
    ("empty_folder", "not a refinement folder (no summary.json"),
    ("a_file", "is not a folder"),
    ("bad_summary", "summary.json is not valid JSON"),
    ("no_best", "has no best.xyz"),
    ("bad_image", "cannot read"),
    ("image_3d", "should hold a 2-D array"),
    ("bad_counts_header", "counts.csv has no column atoms_image"),
    ("bad_counts_cell", "counts.csv, line 2: atoms_3d should be a whole number"),
    ("bad_counts_flag", "counts.csv, line 2: resolved should be true or false"),
    ("short_counts_row", "counts.csv, line 2: no resolved value"),
    ("out_is_folder", "is a folder"),
])
def test_bad_input_is_one_line_and_exit_2(lone_run, tmp_path, capsys, damage, fragment):
    run, extra = lone_run, ()
    if damage == "missing":
        run = tmp_path / "nowhere"
    elif damage == "empty_folder":
        run = tmp_path / "empty"
        run.mkdir()
    elif damage == "a_file":
        run = lone_run / "best.xyz"
    elif damage == "bad_summary":
        (run / "summary.json").write_text('{"composition": "Pt13",')  # cut short
    elif damage == "no_best":
        (run / "best.xyz").unlink()
    elif damage == "bad_image":
        (run / "simulated.npy").write_bytes(b"\x93NUMPY garbage")
    elif damage == "image_3d":
        np.save(run / "difference.npy", np.zeros((2, 3, 4)))
    elif damage == "bad_counts_header":
        (run / "counts.csv").write_text("x,y,atoms_3d,cross_section,disagree\n1,2,3,0.1,0\n")
    elif damage == "bad_counts_cell":
        (run / "counts.csv").write_text("x,y,atoms_3d,atoms_image,cross_section,disagree\n1,2,2.5,3,0.1,1\n")
    elif damage == "bad_counts_flag":
        (run / "counts.csv").write_text("x,y,atoms_3d,atoms_image,cross_section,disagree,resolved\n1,2,3,3,0.1,0,maybe\n")
    elif damage == "short_counts_row":
        (run / "counts.csv").write_text("x,y,atoms_3d,atoms_image,cross_section,disagree,resolved\n1,2,3,3,0.1,false\n")
    elif damage == "out_is_folder":
        extra = ("-o", tmp_path)
    rc, out, err = _report(capsys, run, *extra)
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stem-refine report: error: ") and fragment in lines[0], err
    assert "Traceback" not in err and not (lone_run / "report.html").exists()


def test_text_from_the_run_is_escaped(lone_run, capsys):
    summary = json.loads((lone_run / "summary.json").read_text())
    summary["image"]["source"] = '<img src=x onerror="alert(1)">.tif'
    summary["composition"] = "Pt13</script><script>alert(2)</script>"
    (lone_run / "summary.json").write_text(json.dumps(summary))
    assert _report(capsys, lone_run)[0] == 0
    page = (lone_run / "report.html").read_text()
    assert "<img src=x" not in page and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;.tif" in page
    assert "alert(2)</script>" not in page and page.count("<script") == 2  # the viewer's data and its code
    assert _viewer_json(page)["title"] == "Pt13</script><script>alert(2)</script>"  # intact inside the JSON


def test_an_alloy_can_be_coloured_by_element():
    from ase.data import atomic_numbers
    from ase.data.colors import jmol_colors

    from refine.report import viewer_data

    atoms = Icosahedron("Pt", 2)
    atoms.numbers[[0, 5]] = atomic_numbers["Mo"]
    data = viewer_data(atoms)
    fields = {f["name"]: f for f in data["fields"]}
    assert data["default"] == "coordination" and set(fields) == {"coordination", "depth", "element"}
    mo = "#" + "".join(f"{round(255 * c):02x}" for c in jmol_colors[atomic_numbers["Mo"]])
    assert [c == mo for c in fields["element"]["colours"]] == [s == "Mo" for s in atoms.get_chemical_symbols()]
    assert {item[0]: item[2] for item in fields["element"]["legend"]["items"]} == {"Mo": 2, "Pt": 11}
    # the icosahedron's centre has 12 neighbours, its 12 vertices 6 (5 on the surface + the centre)
    assert sorted(fields["coordination"]["values"]) == [6] * 12 + [12]


def test_a_failed_report_leaves_the_previous_one(lone_run, capsys):
    assert _report(capsys, lone_run)[0] == 0
    good = (lone_run / "report.html").read_bytes()
    (lone_run / "logbook.csv").write_text("not,a,logbook\n1,2,3\n")
    assert _report(capsys, lone_run)[0] == 2
    assert (lone_run / "report.html").read_bytes() == good
    assert not [p for p in lone_run.iterdir() if p.name.startswith(".report.html")]  # no temporary left behind


def test_the_report_goes_where_asked(lone_run, tmp_path, capsys):
    target = tmp_path / "for" / "the" / "group" / "Pt13.html"
    rc, out, _ = _report(capsys, lone_run, "-o", target)
    assert rc == 0 and str(target) in out and "no column counts in this run" in out
    assert target.is_file() and not (lone_run / "report.html").exists()


# -- in a browser ---------------------------------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium")
_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--virtual-time-budget=3000",
          "--window-size=1200,1600"]


def _chromium(*args, timeout=90):
    home = Path(os.environ.get("TMPDIR", "/tmp"))
    return subprocess.run([CHROMIUM, *_FLAGS, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "HOME": str(home)})


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium) to run the page")
def test_the_viewer_draws_the_structure_in_chromium(base, tmp_path, capsys):
    from PIL import Image

    page = tmp_path / "report.html"
    rc, out, err = _report(capsys, base / "s5", "--json", "-o", page)
    assert rc == 0, err
    url = page.resolve().as_uri()
    dom = _chromium("--enable-logging=stderr", "--v=0", "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    errors = [line for line in dom.stderr.splitlines() if "CONSOLE" in line and "Uncaught" in line]
    assert not errors, errors  # the page's script ran without an exception
    canvas = re.search(r'<canvas id="viewer"[^>]*>', dom.stdout)
    assert canvas, dom.stdout[:2000]
    attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', canvas.group(0)))
    assert attrs.get("data-rendered") == "13 atoms" and attrs.get("data-field") == "spread"
    assert int(attrs["width"]) > 300 and int(attrs["height"]) > 300
    left, top, width, height = (int(v) for v in attrs["data-box"].split(","))
    assert top + height <= 1600, "the viewer should be on the first screen of the page"
    legend = re.search(r'<div id="viewer-legend">(.*?)</div>\s*<p', dom.stdout, re.S)
    assert legend and "spread across the ensemble (Å)" in legend.group(1)

    # interaction through the page's own handlers: a drag rotates, the wheel zooms, each redraws
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("</body>", """<script>
window.addEventListener("load", function () {
var v = window.stemRefineViewer, c = v.canvas, r = c.getBoundingClientRect(), x = r.left + 200, y = r.top + 200;
var before = v.draws;
c.dispatchEvent(new PointerEvent("pointerdown", {clientX: x, clientY: y, pointerId: 1, bubbles: true}));
c.dispatchEvent(new PointerEvent("pointermove", {clientX: x + 60, clientY: y + 25, pointerId: 1, buttons: 1,
                                                 bubbles: true}));
c.dispatchEvent(new PointerEvent("pointerup", {clientX: x + 60, clientY: y + 25, pointerId: 1, bubbles: true}));
c.dispatchEvent(new WheelEvent("wheel", {deltaY: -400, bubbles: true, cancelable: true}));
document.body.setAttribute("data-probe", [v.draws - before, v.zoom.toFixed(3), v.R[0][0].toFixed(3)].join(","));
});
</script></body>"""))
    dom = _chromium("--dump-dom", probe.resolve().as_uri())
    m = re.search(r'data-probe="([^"]*)"', dom.stdout)
    assert m, dom.stderr[-2000:]
    redraws, zoom, r00 = m.group(1).split(",")
    assert int(redraws) == 2 and float(zoom) > 1.5 and float(r00) < 0.99

    # a screenshot: decodes, is not blank, and the viewer's region holds shaded atoms, not just background
    artefacts = Path(os.environ.get("STEM_REFINE_ARTEFACTS", REPO / "test-artefacts"))
    artefacts.mkdir(parents=True, exist_ok=True)
    shot = artefacts / "report_viewer.png"
    if shot.exists():
        shot.unlink()
    res = _chromium(f"--screenshot={shot}", url)
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    shutil.copyfile(page, artefacts / "report_example.html")
    img = np.asarray(Image.open(shot).convert("RGB")).astype(float)
    assert img.shape[:2] == (1600, 1200) and img.var() > 0
    region = img[top + 5:top + height - 5, left + 5:left + width - 5]
    non_white = np.any(region < 235, axis=2)
    assert non_white.mean() > 0.01, f"viewer region {left, top, width, height} is nearly blank"
    colours = np.unique(region[non_white].astype(np.uint8), axis=0)
    assert len(colours) > 50  # shading: many tones, not flat discs or a blank canvas


def test_the_header_says_where_the_pixel_size_came_from():
    """Resampled from the file, and set from the lattice: both shown next to the pixel size refined at."""
    from refine.report.page import header_facts

    step = {"step": "pixel size from lattice", "parameters": {"method": "lattice", "start": 0.075},
            "values": {"pixel_size": 0.08347, "zone_axis": "[110]", "n_columns": 71, "anisotropy": 0.04,
                       "rounds": [1.119, 0.99, 1.004]}}
    image = {"pixel_size": 0.1, "shape": [566, 541], "resampled": {"from_pixel_size": 0.08347, "to_pixel_size": 0.1},
             "preparation": [{"step": "read", "parameters": {"pixel_size": 0.08347}}, step]}
    given, _ = header_facts({"image": image}, None)
    text = dict(given)["pixel size"]
    assert text.startswith("0.1 Å") and "resampled from 0.08347 Å" in text
    assert "set from the columns' [110] lattice, read at 0.075 Å" in text
    plain, _ = header_facts({"image": {"pixel_size": 0.1}}, None)
    assert dict(plain)["pixel size"] == "0.1 Å"
