"""Whether an image's columns form one crystal lattice (refine.io.lattice), and the counted start's warning."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from zone_axis_case import NN, zone_axis_case

from refine.io.lattice import ONE_LATTICE, check_columns, fit_lattice, lattice_grains


def _lattice(a1, a2, n, origin=(0.0, 0.0)):
    m = np.array([(i, j) for i in range(-n, n + 1) for j in range(-n, n + 1)], dtype=float)
    xy = np.asarray(origin) + m @ np.array([a1, a2])
    return xy[np.linalg.norm(xy - np.asarray(origin), axis=1) <= n * min(np.linalg.norm(a1), np.linalg.norm(a2))]


# Pt [110]: a centred rectangle of 2.77 × 3.92 Å, primitive vectors of 2.40 Å at 70.5°
A1, A2 = np.array([1.96, 1.385]), np.array([1.96, -1.385])


def _rotation(degrees):
    t = np.radians(degrees)
    return np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])


def test_a_noisy_distorted_single_crystal_is_one_lattice():
    rng = np.random.default_rng(0)
    stretch = np.array([[1.04, 0.03], [0.03, 0.97]])  # a scan distortion: the fit is linear, so it is absorbed
    xy = _lattice(A1, A2, 6) @ stretch.T + rng.normal(0, 0.08, (1, 2)) + rng.normal(0, 0.08, (len(_lattice(A1, A2, 6)), 2))
    fit = fit_lattice(xy, NN)
    assert fit.one_crystal and fit.fraction > 0.97
    assert fit.rms < 0.2
    # the fitted basis spans the same lattice as the distorted one (same cell area)
    assert abs(abs(np.linalg.det(fit.basis)) - abs(np.linalg.det(np.array([A1, A2]) @ stretch.T))) < 0.1


def _two_grains():
    """Columns of two [110] grains 35° apart (noisy), and which grain (0, 1) each is."""
    rng = np.random.default_rng(1)
    left = _lattice(A1, A2, 6)
    left = left[left[:, 1] < 0]
    right = _lattice(A1 @ _rotation(35).T, A2 @ _rotation(35).T, 6, origin=(0.7, 0.0))
    right = right[right[:, 1] >= 1.0]
    xy = np.vstack([left, right]) + rng.normal(0, 0.05, (len(left) + len(right), 2))
    return xy, np.r_[np.zeros(len(left)), np.ones(len(right))]


def test_two_grains_in_different_orientations_are_not_one_lattice():
    xy, _ = _two_grains()
    fit = fit_lattice(xy, NN)
    assert not fit.one_crystal
    # the better grain is found whole, the other is not on it
    assert 0.3 < fit.fraction < ONE_LATTICE


def test_two_grains_are_found_one_after_the_other():
    xy, side = _two_grains()
    grains = lattice_grains(xy, NN)
    assert len(grains) == 2 and len(grains[0]) >= len(grains[1])
    assert sum(len(g) for g in grains) >= 0.95 * len(xy)
    for g in grains:  # each grain is mostly one side's columns (the other's come near its sites by chance, ~10 %)
        assert max(np.mean(side[g] == 0), np.mean(side[g] == 1)) >= 0.85


def test_one_crystal_is_one_grain():
    xy = _lattice(A1, A2, 6) + np.random.default_rng(3).normal(0, 0.08, (len(_lattice(A1, A2, 6)), 2))
    grains = lattice_grains(xy, NN)
    assert len(grains) == 1 and len(grains[0]) >= 0.97 * len(xy)
    assert lattice_grains(xy[:5], NN) == []


def test_scattered_points_are_not_a_lattice():
    # as find_columns gives them from a featureless image: no two peaks closer than half a bond
    rng = np.random.default_rng(2)
    xy = np.zeros((0, 2))
    for p in rng.uniform(0, 30, (2000, 2)):
        if not len(xy) or np.linalg.norm(xy - p, axis=1).min() >= 0.5 * NN:
            xy = np.vstack([xy, p])
    fit = check_columns(xy, NN)
    assert fit is None or not fit.one_crystal


def test_too_few_columns_cannot_be_told():
    assert check_columns(np.array([[0.0, 0.0], [2.4, 0.0], [0.0, 2.4]]), NN) is None


def test_the_counted_start_accepts_one_crystal_and_warns_for_a_twinned_particle(caplog):
    from ase.cluster import Decahedron

    from small_case import PIXEL, as_image
    from surrogate import default_model

    from refine.search.column_start import counted_structure

    atoms, _, image = zone_axis_case()
    model = default_model()
    with caplog.at_level(logging.WARNING, logger="refine.search.column_start"):
        start = counted_structure(image, model, {"Pt": len(atoms)}, np.random.default_rng(0))
    assert start.info["on_one_lattice"] >= ONE_LATTICE
    assert "one lattice" not in caplog.text

    # a decahedron seen down its five-fold axis: five grains, each in its own orientation
    deca = Decahedron("Pt", 4, 1, 0, latticeconstant=3.92)
    deca.positions -= deca.positions.min(axis=0) - 5.0
    shape = (int(deca.positions[:, 0].max() / PIXEL) + 50, int(deca.positions[:, 1].max() / PIXEL) + 50)
    img = as_image(model.simulate(deca, as_image(np.zeros(shape)).grid))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="refine.search.column_start"):
        start = counted_structure(img, model, {"Pt": len(deca)}, np.random.default_rng(0))
    assert start.info["on_one_lattice"] < ONE_LATTICE
    assert "lie on one lattice" in caplog.text
    assert "2 lattices hold" in caplog.text  # two of its five grains hold enough columns to be told
