"""Batch refinement: manifests, Dask runs that survive a killed worker, resumable re-runs."""

from __future__ import annotations

import csv
import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from refine.search import CHECKPOINT_NAME
from refine.workflows.batch import RESULT_COLUMNS, attempts, read_results
from refine.workflows.manifest import parse_manifest, read_manifest
from refine.cli.main import main
from surrogate.common.errors import InputError


# --- fixtures ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("batch")


@pytest.fixture(scope="module")
def model_file(workdir, small_model):
    from surrogate.imaging.model import save_model

    path = workdir / "model.npz"
    save_model(small_model, path)
    return path


@pytest.fixture(scope="module")
def images(workdir, small_model):
    """Two tiny surrogate images (48x48 px at 0.1 Å) of a Pt13 icosahedron, two poses; and a constant image."""
    from ase.cluster import Icosahedron

    from surrogate.imaging.grid import ProbeGrid

    rng = np.random.default_rng(5)
    grid = ProbeGrid(origin=(-2.4, -2.4), shape=(48, 48), pixel_size=0.1)
    paths = []
    for k in range(2):
        atoms = Icosahedron("Pt", 2)
        atoms.rotate(rng.uniform(0, 360), rng.normal(size=3), center="COP")
        atoms.positions -= atoms.positions.mean(axis=0)
        img = 3.0 * small_model.simulate(atoms, grid) + 0.2
        img = img + 0.002 * rng.standard_normal(img.shape)
        p = workdir / f"particle{k}.npy"
        np.save(p, img)
        paths.append(p)
    flat = workdir / "flat.npy"
    np.save(flat, np.full((48, 48), 0.5))
    return paths, flat


def write_toml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --- manifests -----------------------------------------------------------------------------

def test_toml_manifest_expands_seeds_merges_defaults_and_resolves_paths(workdir, images, model_file):
    (a, b), _ = images
    m = write_toml(workdir / "m1.toml", f"""
[defaults]
model = "{model_file.name}"
population = 6
generations = 3
pixel_size = 0.1

[[runs]]
image = "{a.name}"
composition = "Pt13"
seeds = [3, 1, 2]
start = "mixed"

[[runs]]
name = "second one"
image = "{b}"
composition = "Pt13"
seed = 7
generations = 5
alpha = 2.5
start = "{a.name}"           # a structure file (any existing file passes the manifest check)
mask = "{b.name}"
""")
    specs = read_manifest(m)
    assert [s.name for s in specs] == ["particle0-seed3", "particle0-seed1", "particle0-seed2", "second_one-seed7"]
    assert [s.seed for s in specs] == [3, 1, 2, 7]
    assert all(Path(s.image).is_absolute() and Path(s.image).is_file() for s in specs)
    assert specs[0].image == str(a.resolve()) and specs[3].image == str(b.resolve())
    assert all(s.model == str(model_file.resolve()) for s in specs)
    assert specs[0].settings == {"population": 6, "generations": 3, "pixel_size": 0.1, "start": "mixed"}
    # an entry's own value overrides the default
    assert specs[3].settings == {"population": 6, "generations": 5, "pixel_size": 0.1, "alpha": 2.5,
                                 "start": str(a.resolve()), "mask": str(b.resolve())}
    assert {s.composition for s in specs} == {"Pt13"}


def test_csv_manifest_is_read_like_the_toml_one(workdir, images, model_file):
    (a, b), _ = images
    m = workdir / "m.csv"
    m.write_text(
        "# a comment line\n"
        "name,image,composition,model,seeds,population,generations,pixel_size,alpha\n"
        f"p,{a.name},Pt13,{model_file.name},1;2 3,6,3,0.1,auto\n"
        f"q,{b.name},Pt13,{model_file.name},4,6,,0.1,1.5\n"
    )
    specs = read_manifest(m)
    assert [s.name for s in specs] == ["p-seed1", "p-seed2", "p-seed3", "q-seed4"]
    assert specs[0].settings == {"population": 6, "generations": 3, "pixel_size": 0.1, "alpha": "auto"}
    # an empty cell leaves the setting to refine_image's default
    assert specs[3].settings == {"population": 6, "pixel_size": 0.1, "alpha": 1.5}
    assert isinstance(specs[0].settings["population"], int)


def test_a_manifest_may_leave_the_number_of_atoms_to_the_image(workdir, images, model_file):
    (a, _), _ = images
    m = write_toml(workdir / "bare.toml", f'[[runs]]\nimage = "{a.name}"\ncomposition = " Pt "\n'
                                          f'model = "{model_file.name}"\n')
    (spec,) = read_manifest(m)
    assert spec.composition == "Pt"  # refine_image estimates the number once it has read the image


@pytest.mark.parametrize("body, message", [
    ('[[runs]]\nimage = "missing.npy"\ncomposition = "Pt13"\n', "missing.npy does not exist"),
    ('[[runs]]\nimage = "IMG"\ncomposition = "Pt13"\npopulaton = 5\n', "unknown key 'populaton'"),
    ('[defaults]\ngenerationz = 5\n[[runs]]\nimage = "IMG"\ncomposition = "Pt13"\n', "unknown key 'generationz'"),
    ('[[runs]]\nimage = "IMG"\ncomposition = "Pt13Xq2"\n', "composition"),
    ('[[runs]]\nimage = "IMG"\ncomposition = "Pt0"\n', "Pt"),
    ('[[runs]]\nimage = "IMG"\ncomposition = "Mo13"\nmodel = "MODEL"\n', "not among the model's elements"),
    ('[[runs]]\nimage = "IMG"\n', "missing 'composition'"),
    ('[[runs]]\nimage = "IMG"\ncomposition = "PtMo"\n', "number of atoms of each element"),
    ('[[runs]]\nimage = "IMG"\ncomposition = "Mo"\nmodel = "MODEL"\n', "not among the model's elements"),
    ('[[runs]]\ncomposition = "Pt13"\n', "missing 'image'"),
    ('[[runs]]\nimage = "IMG"\ncomposition = "Pt13"\nmodel = "nomodel.npz"\n', "nomodel.npz does not exist"),
    ('[[runs]]\nimage = "IMG"\ncomposition = "Pt13"\nseeds = [1, 1]\n', "repeat"),
    ('[[runs]]\nimage = "IMG"\ncomposition = "Pt13"\nseeds = [-1]\n', "seeds"),
    ('[[runs]]\nimage = "IMG"\ncomposition = "Pt13"\npopulation = 0\n', "population must be an integer"),
    ('[[runs]]\nimage = "IMG"\ncomposition = "Pt13"\nalpha = "big"\n', "alpha must be 'auto'"),
    ('[[runs]]\nimage = "IMG"\ncomposition = "Pt13"\ntime_limit = -3\n', "time_limit must be positive"),
    ('[[runs]]\nimage = "IMG"\ncomposition = "Pt13"\nundistort = "yes"\n', "undistort must be true or false"),
    ('[[runs]]\nimage = "IMG"\ncomposition = "Pt13"\nlattice_pixel_size = 1\n',
     "lattice_pixel_size must be true or false"),
    ('[[runs]]\nimage = "IMG"\ncomposition = "Pt13"\n[[runs]]\nimage = "IMG"\ncomposition = "Pt13"\n',
     "two runs are named"),
    ('[defaults]\npopulation = 4\n', "no runs"),
    ('[[run]]\nimage = "IMG"\ncomposition = "Pt13"\n', "unknown top-level key(s) run"),
    ('[[runs]]\nimage = "IMG"\ncomposition = "Pt13\n', "not valid TOML"),
])
def test_bad_manifests_raise_input_error(workdir, images, model_file, body, message):
    (a, _), _ = images
    m = write_toml(workdir / "bad.toml", body.replace("IMG", a.name).replace("MODEL", model_file.name))
    with pytest.raises(InputError) as info:
        read_manifest(m)
    assert message in str(info.value)


def test_bad_manifest_on_the_command_line_is_a_one_line_error(workdir, images, capsys):
    m = write_toml(workdir / "bad_cli.toml", '[[runs]]\nimage = "nope.tif"\ncomposition = "Pt13"\n')
    rc = main(["batch", str(m), "--out", str(workdir / "never"), "--workers", "1"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "Traceback" not in err
    lines = [ln for ln in err.strip().splitlines() if "error" in ln]
    assert len(lines) == 1 and "nope.tif does not exist" in lines[0]
    assert not (workdir / "never").exists()
    rc = main(["batch", str(workdir / "no_such_manifest.toml"), "--out", str(workdir / "never")])
    assert rc == 2 and "does not exist" in capsys.readouterr().err


def test_parse_manifest_rejects_a_non_table_run(workdir):
    with pytest.raises(InputError, match="expected a table"):
        parse_manifest({"runs": ["image.tif"]}, workdir)


# --- the batch on a local Dask cluster -----------------------------------------------------

@pytest.fixture(scope="module")
def cluster():
    from distributed import Client, LocalCluster

    cl = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0")
    client = Client(cl)
    yield client
    client.close()
    cl.close()


def _manifest(workdir, images, model_file, name="m_batch.toml", generations=4):
    (a, b), _ = images
    return write_toml(workdir / name, f"""
[defaults]
model = "{model_file.name}"
population = 6
generations = {generations}
pixel_size = 0.1
search = "plain"            # these tests are about the batch; the default (anneal) search takes minutes

[[runs]]
image = "{a.name}"
composition = "Pt13"
seeds = [1, 2, 3]

[[runs]]
image = "{b.name}"
composition = "Pt13"
seeds = [1, 2]
""")


def _csv_rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_batch_survives_a_killed_worker_and_resumes_on_rerun(workdir, images, model_file, cluster):
    """Must-show 1: 5 runs on 2 workers; one worker SIGKILLed mid-run; all finish, none lost; re-run skips."""
    from refine.workflows.batch import run_batch

    client = cluster
    specs = read_manifest(_manifest(workdir, images, model_file))
    assert len(specs) == 5
    out = workdir / "out"
    pids = client.run(os.getpid)
    assert len(pids) == 2
    killed = {}

    def kill_when_a_run_is_under_way():
        # kill the worker of a later run (earlier results exist by then) once that run has
        # checkpointed and not finished: it is mid-GA
        deadline = time.time() + 120
        while time.time() < deadline and not killed:
            processing = client.processing()
            for spec in specs[2:]:
                folder = out / spec.name
                if not (folder / CHECKPOINT_NAME).exists() or (folder / "summary.json").exists():
                    continue
                worker = next((w for w, keys in processing.items() if any(spec.name in str(k) for k in keys)), None)
                if worker is None:
                    continue
                done_before = sorted(s.name for s in specs if (out / s.name / "summary.json").exists())
                os.kill(pids[worker], signal.SIGKILL)
                killed.update(pid=pids[worker], run=spec.name, done_before=done_before)
                break
            time.sleep(0.02)

    killer = threading.Thread(target=kill_when_a_run_is_under_way, daemon=True)
    killer.start()
    rows_seen = []
    result = run_batch(specs, out, client=client, retries=2, progress=False, on_result=rows_seen.append)
    killer.join(timeout=5)
    assert killed, "no run was caught mid-way: the test did not kill a worker"
    assert killed["pid"] not in client.run(os.getpid).values()  # that worker really died (and was replaced)

    # every run finished, exactly once in the table, with the numbers of its own summary.json
    table = _csv_rows(out / "results.csv")
    assert [r["name"] for r in table] == [s.name for s in specs]
    assert list(table[0]) == list(RESULT_COLUMNS)
    assert {r["status"] for r in table} == {"done"}
    for r in read_results(out):
        summary = json.loads((Path(r["out_dir"]) / "summary.json").read_text())
        assert (Path(r["out_dir"]) / "best.xyz").is_file()
        assert np.isfinite(r["best_cost"]) and np.isfinite(r["chi2"]) and np.isfinite(r["energy"])
        assert r["generations"] == 4
        assert r["out_dir"] == str((out / r["name"]).resolve())
        assert r["best_cost"] == pytest.approx(float(next(v for k, v in summary.items() if "cost" in k)))
    # the killed run was started twice, the second time by another worker process
    tries = attempts(out / killed["run"])
    assert len(tries) == 2 and tries[0]["pid"] == killed["pid"] and tries[1]["pid"] != killed["pid"]
    assert all(len(attempts(out / s.name)) == 1 for s in specs if s.name != killed["run"])
    # results that existed before the kill are still there
    assert len(killed["done_before"]) >= 1
    assert set(killed["done_before"]) <= {r["name"] for r in table}
    doc = json.loads((out / "results.json").read_text())
    assert [r["name"] for r in doc["runs"]] == [s.name for s in specs] and doc["done"] == 5
    assert len(rows_seen) == 5 and result.n_failed == 0

    # re-running the batch skips every finished run and leaves its files alone
    stamps = {s.name: (out / s.name / "summary.json").stat().st_mtime_ns for s in specs}
    again = run_batch(specs, out, client=client, progress=False)
    assert [r["status"] for r in again.rows] == ["skipped"] * 5
    assert stamps == {s.name: (out / s.name / "summary.json").stat().st_mtime_ns for s in specs}
    assert [r["best_cost"] for r in again.rows] == pytest.approx([r["best_cost"] for r in result.rows])


def test_rerun_after_interruption_runs_only_the_unfinished(workdir, images, model_file, cluster):
    """A batch stopped part-way: the re-run resumes unfinished runs and skips finished ones."""
    import shutil

    from refine.workflows.batch import run_batch

    specs = read_manifest(_manifest(workdir, images, model_file, "m_rerun.toml", generations=2))[:3]
    out = workdir / "out_rerun"
    first = run_batch(specs[:1], out, client=cluster, progress=False)
    assert first.rows[0]["status"] == "done"
    # the second run was interrupted: only its checkpoint exists (copied from a finished twin, minus summary)
    twin = run_batch(specs[1:2], workdir / "twin", client=cluster, progress=False)
    shutil.copytree(Path(twin.rows[0]["out_dir"]), out / specs[1].name)
    (out / specs[1].name / "summary.json").unlink()
    # (this time on a local cluster of its own)
    result = run_batch(specs, out, workers=2, progress=False)
    assert [r["status"] for r in result.rows] == ["skipped", "done", "done"]
    # the resumed run continued from its final checkpoint: same best structure as its uninterrupted twin
    assert result.rows[1]["best_cost"] == pytest.approx(twin.rows[0]["best_cost"])


def test_a_failing_run_is_reported_and_the_others_finish(workdir, images, model_file, cluster, capsys):
    """A run that fails (a constant image) is a 'failed' row with the reason; exit status 1."""
    (a, _), flat = images
    m = write_toml(workdir / "m_fail.toml", f"""
[defaults]
model = "{model_file.name}"
population = 4
generations = 1
pixel_size = 0.1

[[runs]]
image = "{a.name}"
composition = "Pt13"

[[runs]]
image = "{flat.name}"
composition = "Pt13"
""")
    out = workdir / "out_fail"
    rc = main(["batch", str(m), "--out", str(out), "--scheduler", cluster.scheduler.address, "--json"])
    captured = capsys.readouterr()
    assert rc == 1
    doc = json.loads(captured.out)
    status = {r["name"]: r for r in doc["runs"]}
    assert status["particle0-seed0"]["status"] == "done"
    assert status["flat-seed0"]["status"] == "failed" and "constant" in status["flat-seed0"]["error"]
    assert doc["failed"] == 1 and doc["done"] == 1
