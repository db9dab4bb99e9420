"""The dataset file format: round trip, atomic writes, clear errors."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from ase import Atoms

from surrogate.training.datasets import FORMAT_NAME, Dataset, read_dataset
from surrogate.common.errors import InputError
from surrogate.imaging.grid import ProbeGrid


def _dataset(rng, n=3):
    conv, ms, atoms, grids = [], [], [], []
    for k in range(n):
        g = ProbeGrid((rng.normal(), rng.normal()), (20 + k, 25 - k), 0.1)
        conv.append(rng.random(g.shape))
        ms.append(rng.random(g.shape).astype(np.float32).astype(np.float64))
        a = Atoms(["Pt"] * (k + 2) + ["Mo"], positions=rng.normal(size=(k + 3, 3)) * 3)
        a.info["family"] = "test"
        a.info["cooling_rate"] = 10.0 * k
        atoms.append(a)
        grids.append(g)
    meta = {"convolution": {"sigma": 0.38}, "microscope": {"energy": 200e3},
            "pairs": [{"id": k, "seed": [1, k]} for k in range(n)], "provenance": {"command": "test"}}
    return Dataset(conv, ms, atoms, grids, meta)


def test_round_trip(tmp_path, rng):
    ds = _dataset(rng)
    path = tmp_path / "d.npz"
    ds.write(path)
    back = read_dataset(path)
    assert len(back) == 3 and back.ids == [0, 1, 2]
    for k in range(3):
        np.testing.assert_array_equal(back.convolution_images[k], ds.convolution_images[k])
        np.testing.assert_array_equal(back.multislice_images[k], ds.multislice_images[k])
        assert back.multislice_images[k].dtype == np.float64
        assert back.grids[k] == ds.grids[k]
        np.testing.assert_allclose(back.atoms[k].positions, ds.atoms[k].positions, rtol=0, atol=1e-7)  # extxyz: 8 decimals
        assert back.atoms[k].get_chemical_symbols() == ds.atoms[k].get_chemical_symbols()
        assert back.atoms[k].info["cooling_rate"] == 10.0 * k
    assert back.meta["format"] == FORMAT_NAME and back.meta["version"] == 1
    assert back.meta["pixel_size"] == 0.1
    assert back.meta["provenance"]["command"] == "test"
    # readable without pickle
    with np.load(path, allow_pickle=False) as z:
        assert json.loads(bytes(z["meta"]))["pairs"][1]["grid"]["shape"] == [21, 24]


def test_subset(rng):
    ds = _dataset(rng)
    sub = ds.subset([2, 0])
    assert sub.ids == [2, 0]
    assert sub.grids[0] == ds.grids[2]


def test_write_is_atomic(tmp_path, rng, monkeypatch):
    path = tmp_path / "d.npz"
    _dataset(rng).write(path)
    before = path.read_bytes()

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(np, "savez_compressed", boom)
    with pytest.raises(RuntimeError):
        _dataset(rng, n=1).write(path)
    assert path.read_bytes() == before  # old file intact
    assert sorted(os.listdir(tmp_path)) == ["d.npz"]  # no temporary left behind


def test_mismatched_shapes_refused(rng):
    ds = _dataset(rng)
    with pytest.raises(InputError, match="do not match its grid"):
        Dataset(ds.convolution_images, ds.multislice_images[::-1], ds.atoms, ds.grids, {})
    with pytest.raises(InputError):
        Dataset(ds.convolution_images, ds.multislice_images[:2], ds.atoms, ds.grids, {})
    g = list(ds.grids)
    g[1] = ProbeGrid(g[1].origin, g[1].shape, 0.2)
    with pytest.raises(InputError, match="pixel size"):
        Dataset(ds.convolution_images, ds.multislice_images, ds.atoms, g, {})


def test_corrupt_files_are_input_errors(tmp_path, rng):
    missing = tmp_path / "none.npz"
    with pytest.raises(InputError, match="does not exist"):
        read_dataset(missing)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip file at all")
    with pytest.raises(InputError):
        read_dataset(junk)
    truncated = tmp_path / "trunc.npz"
    _dataset(rng).write(truncated)
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError):
        read_dataset(truncated)


def test_foreign_and_inconsistent_files(tmp_path, rng):
    other = tmp_path / "other.npz"
    np.savez(other, a=np.zeros(3))
    with pytest.raises(InputError, match="no 'meta'"):
        read_dataset(other)
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, meta=np.frombuffer(json.dumps({"format": "x", "version": 1}).encode(), np.uint8))
    with pytest.raises(InputError, match="not a stem-refine-dataset"):
        read_dataset(wrong)
    newer = tmp_path / "newer.npz"
    np.savez(newer, meta=np.frombuffer(json.dumps({"format": FORMAT_NAME, "version": 99}).encode(), np.uint8))
    with pytest.raises(InputError, match="version 99"):
        read_dataset(newer)
    # metadata promising a pair whose arrays are missing
    path = tmp_path / "d.npz"
    _dataset(rng, n=2).write(path)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files if k != "multislice/1"}
    np.savez(path, **arrays)
    with pytest.raises(InputError, match="missing 'multislice/1'"):
        read_dataset(path)
    # an image that disagrees with its recorded grid
    _dataset(rng, n=2).write(path)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["convolution/0"] = arrays["convolution/0"][:-1]
    np.savez(path, **arrays)
    with pytest.raises(InputError, match="do not match"):
        read_dataset(path)


def test_shipped_default_dataset():
    from pathlib import Path

    from surrogate.training.builder import expand_spec, load_spec

    data = Path(__file__).resolve().parents[2] / "surrogate" / "data"
    ds = read_dataset(data / "default_dataset.npz")
    spec, tasks = expand_spec(load_spec(data / "default_spec.toml"))
    assert len(ds) == len(tasks) and ds.ids == [t["id"] for t in tasks]
    assert ds.pixel_size == 0.1
    assert ds.meta["microscope"]["energy"] == 200e3 and ds.meta["microscope"]["semiangle"] == 24.5
    assert ds.meta["microscope"] == spec["simulation"]
    assert "dataset build --spec surrogate/data/default_spec.toml" in ds.meta["provenance"]["command"]
    for atoms, task, conv, ms in zip(ds.atoms, tasks, ds.convolution_images, ds.multislice_images):
        assert len(atoms) == task["n_atoms"] and set(atoms.get_chemical_symbols()) == {"Pt"}
        assert conv.shape == ms.shape
        assert 0.0 <= ms.min() and ms.max() < 1.0  # fractions of the incident beam
    families = {a.info["family"] for a in ds.atoms}
    assert {"amorphous", "disordered"} <= families and len(families) >= 4
