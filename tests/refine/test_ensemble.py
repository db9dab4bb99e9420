"""Ensembles: consensus of noisy refinements, per-atom spread, files, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase import Atoms
from ase.cluster import Decahedron
from ase.io import read, write
from scipy.spatial.transform import Rotation

from refine.cli.main import main
from refine.analysis import build_ensemble, compare_structures, write_ensemble
from surrogate.common.errors import InputError


@pytest.fixture
def seed():
    return 4031


@pytest.fixture(scope="module")
def truth():
    d = Decahedron("Pt", 3, 2, 1)  # 146 atoms
    return Atoms(d.get_chemical_symbols(), positions=d.positions.copy())


def _runs(truth, rng, n_runs, sigma):
    """Noisy copies (σ per coordinate, an array gives one σ per atom), each rotated, mirrored or not, permuted."""
    sigma = np.broadcast_to(np.asarray(sigma, dtype=float), (len(truth),))
    runs = []
    for k in range(n_runs):
        pos = truth.positions + rng.normal(size=truth.positions.shape) * sigma[:, None]
        perm = rng.permutation(len(truth))
        R = Rotation.random(random_state=int(rng.integers(2**31))).as_matrix()
        if k % 2:
            R = R @ np.diag([1.0, 1.0, -1.0])
        runs.append(Atoms(np.asarray(truth.get_chemical_symbols())[perm], positions=pos[perm] @ R.T + rng.normal(0, 5, 3)))
    return runs


def test_consensus_recovers_truth_and_spread_is_the_noise(truth, seed):
    rng = np.random.default_rng(seed)
    sigma, n_runs = 0.1, 6
    ens = build_ensemble(_runs(truth, rng, n_runs, sigma))
    # the consensus is a mean of n runs: its error is ~σ·sqrt(3/n) per atom (3-D)
    c = compare_structures(ens.consensus, truth)
    expected = sigma * np.sqrt(3 / n_runs)
    assert c.rmsd < 1.3 * expected
    assert c.within[0.3] == 1.0
    # the spread estimates the per-coordinate σ
    assert ens.spread.mean() == pytest.approx(sigma, rel=0.15)
    assert ens.consensus.arrays["spread_z"].mean() == pytest.approx(sigma, rel=0.2)
    # every run sits ~σ·sqrt(3) from the consensus
    assert np.allclose(ens.rmsd_to_consensus, sigma * np.sqrt(3), rtol=0.25)
    assert ens.pairwise_rmsd.shape == (n_runs, n_runs) and np.allclose(ens.pairwise_rmsd, ens.pairwise_rmsd.T)
    assert ens.reference == int(np.argmin(ens.pairwise_rmsd.sum(axis=1)))


def test_spread_singles_out_the_uncertain_atoms(truth, seed):
    rng = np.random.default_rng(seed)
    # break the decahedron's symmetry, so that "which atom" has one answer
    truth = truth.copy()
    truth.positions += rng.normal(0, 0.15, truth.positions.shape)
    sigma = np.full(len(truth), 0.03)
    loose = rng.choice(len(truth), 8, replace=False)
    sigma[loose] = 0.3
    runs = _runs(truth, rng, 6, sigma)
    ens = build_ensemble(runs)
    # map consensus atoms back to truth atoms to know which are the loose ones
    c = compare_structures(ens.consensus, truth)
    loose_in_consensus = np.flatnonzero(np.isin(c.truth_index, loose))
    top = np.argsort(ens.spread)[-8:]
    assert set(top.tolist()) == set(loose_in_consensus.tolist())
    firm = np.setdiff1d(np.arange(len(truth)), loose_in_consensus)
    assert np.median(ens.spread[firm]) == pytest.approx(0.03, rel=0.3)


def test_identical_runs_have_zero_spread(truth):
    ens = build_ensemble([truth.copy(), truth.copy(), truth.copy()])
    assert ens.spread.max() < 1e-6
    assert np.allclose(ens.consensus.positions, truth.positions, atol=1e-6)


def test_bad_ensembles_are_refused(truth):
    with pytest.raises(InputError, match="at least 2"):
        build_ensemble([truth])
    with pytest.raises(InputError, match="one composition"):
        build_ensemble([truth, truth[:-1]])


def test_written_files_round_trip(truth, seed, tmp_path):
    ens = build_ensemble(_runs(truth, np.random.default_rng(seed), 3, 0.05))
    paths = write_ensemble(ens, tmp_path / "out")
    back = read(paths["consensus"])
    assert np.allclose(back.arrays["spread"], ens.spread)
    assert np.allclose(back.positions, ens.consensus.positions)
    assert back.info["n_runs"] == 3
    frames = read(paths["aligned_runs"], ":")
    assert len(frames) == 3
    assert np.allclose(np.mean([f.positions for f in frames], axis=0), ens.consensus.positions)
    summary = json.loads((tmp_path / "out" / "ensemble.json").read_text())
    assert summary["n_runs"] == 3 and summary["mean_spread"] == pytest.approx(ens.spread.mean())
    assert (tmp_path / "out" / "ensemble.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_ensemble(truth, seed, tmp_path, capsys):
    runs = _runs(truth, np.random.default_rng(seed), 3, 0.08)
    dirs = []
    for k, a in enumerate(runs):
        d = tmp_path / f"run{k}"
        d.mkdir()
        write(d / "best.xyz", a)
        dirs.append(str(d))
    out = tmp_path / "ens"
    assert main(["ensemble", *dirs, "--out", str(out), "--json", "--no-figure"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n_runs"] == 3 and summary["n_atoms"] == len(truth)
    assert summary["mean_spread"] == pytest.approx(0.08, rel=0.3)
    assert read(out / "consensus.xyz").arrays["spread"].shape == (len(truth),)
    assert not (out / "ensemble.png").exists()


def test_cli_ensemble_errors(truth, tmp_path, capsys):
    d = tmp_path / "run0"
    d.mkdir()
    write(d / "best.xyz", truth)
    empty = tmp_path / "empty"
    empty.mkdir()
    for argv, message in [
        (["ensemble", str(d), str(tmp_path / "missing"), "--out", str(tmp_path / "o")], "does not exist"),
        (["ensemble", str(d), str(empty), "--out", str(tmp_path / "o")], "has no best.xyz"),
        (["ensemble", str(d), "--out", str(tmp_path / "o")], "at least 2"),
    ]:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0]
    other = tmp_path / "run1"
    other.mkdir()
    write(other / "best.xyz", truth[:-2])
    assert main(["ensemble", str(d), str(other), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "one composition" in err[0]
