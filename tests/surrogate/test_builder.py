"""Dataset builder: spec expansion, resumability after a kill, spec mismatch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from surrogate.training.builder import build_dataset, expand_spec, work_dir_for
from surrogate.training.datasets import read_dataset
from surrogate.common.errors import InputError

REPO = Path(__file__).resolve().parents[2]

# Tiny but real: PRISM f=4, one phonon, 0.2 Å pixels, detector to 100 mrad so a
# coarse 0.08 Å potential sampling is allowed; a second or two per particle.
TINY = {
    "name": "tiny", "seed": 5, "pixel_size": 0.2, "margin": 2.0,
    "simulation": {"method": "prism", "interpolation": 4, "phonons": 1, "potential_sampling": 0.08,
                   "detector": [50, 100], "slice_thickness": 4.0},
    "particles": [{"family": "cuboctahedron", "count": 2, "n_atoms": [13, 19]},
                  {"family": "disordered", "count": 1, "n_atoms": 16},
                  {"family": "icosahedron", "count": 2, "n_atoms": [12, 20], "mo_fraction": 0.25}],
}


def test_expand_spec_is_deterministic_and_complete():
    s1, t1 = expand_spec(TINY)
    s2, t2 = expand_spec(json.loads(json.dumps(TINY)))
    assert t1 == t2 and s1 == s2
    assert [t["id"] for t in t1] == [0, 1, 2, 3, 4]
    assert all(13 <= t["n_atoms"] <= 19 for t in t1[:2]) and t1[2]["n_atoms"] == 16
    assert s1["simulation"]["interpolation"] == 4 and s1["simulation"]["energy"] == 200e3


@pytest.mark.parametrize("bad", [{"particles": []}, {"particles": [{"family": "blob"}]},
                                 {"particles": [{"family": "icosahedron", "n_atoms": [30, 10]}]},
                                 {"particles": [{"family": "icosahedron", "n_atoms": "tall"}]},
                                 {"particles": [{"family": "icosahedron"}], "colour": 1},
                                 {"particles": [{"family": "icosahedron"}], "simulation": {"voltage": 3}},
                                 {"particles": [{"family": "column_rod", "column_heights": [16, 8]}]},
                                 {"particles": [{"family": "column_rod", "column_heights": "tall"}]}])
def test_bad_specs(bad):
    with pytest.raises(InputError):
        expand_spec(bad)


def _cli(args, **kw):
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, "-m", "refine.cli.main", "dataset", "build", *args], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, **kw)


def test_killed_build_resumes_with_every_particle_once(tmp_path):
    spec = tmp_path / "tiny.json"
    spec.write_text(json.dumps(TINY))
    out = tmp_path / "tiny.npz"
    work = Path(work_dir_for(out))

    proc = _cli(["--spec", str(spec), "--out", str(out), "--scheduler", "synchronous", "--threads", "1"])
    deadline = time.time() + 240
    while not (work / "particle-00000.npz").exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.time() < deadline, "first particle never finished"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = sorted(p.name for p in work.glob("particle-*.npz"))
    assert 1 <= len(done_before) < 5, "the build was not interrupted"
    assert not out.exists()
    mtimes = {n: (work / n).stat().st_mtime_ns for n in done_before}

    # Re-run on the default LocalCluster: only the missing particles are simulated.
    proc = _cli(["--spec", str(spec), "--out", str(out), "--threads", "1", "--no-progress"])
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()[-3000:]
    assert all((work / n).stat().st_mtime_ns == t for n, t in mtimes.items())

    ds = read_dataset(out)
    assert ds.ids == [0, 1, 2, 3, 4]
    assert sorted(p.name for p in work.glob("particle-*.npz")) == [f"particle-{k:05d}.npz" for k in range(5)]
    _, tasks = expand_spec(TINY)
    for atoms, task, pair in zip(ds.atoms, tasks, ds.meta["pairs"]):
        assert len(atoms) == task["n_atoms"] == pair["n_atoms"]
        assert atoms.get_chemical_symbols().count("Mo") == round(task["mo_fraction"] * task["n_atoms"])
    assert ds.meta["provenance"]["command"].startswith("stem-refine dataset build")
    for g, c, m in zip(ds.grids, ds.convolution_images, ds.multislice_images):
        assert c.shape == m.shape == g.shape and m.max() > 0

    # Interrupted-and-resumed equals a clean build of the same spec.
    clean = build_dataset(TINY, tmp_path / "clean.npz", scheduler="synchronous", threads_per_task=1,
                          progress=False)
    for a, b in zip(ds.multislice_images, clean.multislice_images):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)
    for a, b in zip(ds.atoms, clean.atoms):
        np.testing.assert_allclose(a.positions, b.positions, atol=1e-6)


def test_different_spec_in_same_work_dir_is_refused(tmp_path):
    one = dict(TINY, particles=[{"family": "cuboctahedron", "n_atoms": 13}])
    out = tmp_path / "x.npz"
    ds = build_dataset(one, out, scheduler="synchronous", threads_per_task=1, progress=False)
    assert len(ds) == 1
    with pytest.raises(InputError, match="different spec"):
        build_dataset(dict(one, seed=6), out, scheduler="synchronous", progress=False)
    # the same spec again: nothing recomputed, same file content
    again = build_dataset(one, out, scheduler="synchronous", progress=False)
    np.testing.assert_array_equal(again.multislice_images[0], ds.multislice_images[0])
