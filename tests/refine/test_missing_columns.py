"""Columns the peak search misses inside a particle (refine.io.peaks.missing_columns) and the counted start's use of them."""

import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial import cKDTree

from refine.analysis.cross_sections import projected_columns
from refine.io.peaks import find_columns, missing_columns

sys.path.insert(0, str(Path(__file__).resolve().parent))
from zone_axis_case import NN, zone_axis_case  # noqa: E402

AU_NN = 2.884  # Å


def _disc_of_columns(axis: str, radius: float = 15.0, nn: float = AU_NN) -> np.ndarray:
    """Projected fcc columns (Å, shape (m, 2)) within ``radius`` of the origin: [110] (centred rectangle a × a/√2) or [100]."""
    a = nn * np.sqrt(2.0)
    if axis == "[110]":
        cell, basis = np.array([a, a / np.sqrt(2.0)]), np.array([[0.0, 0.0], [0.5, 0.5]])
    else:
        cell, basis = np.array([a / 2.0, a / 2.0]), np.array([[0.0, 0.0]])
    m = np.mgrid[-12:13, -12:13].reshape(2, -1).T
    xy = np.vstack([(m + b) * cell for b in basis])
    return xy[np.hypot(*xy.T) <= radius]


@pytest.mark.parametrize("axis", ["[110]", "[100]"])
def test_a_whole_zone_axis_lattice_misses_no_column(axis):
    xy = _disc_of_columns(axis)
    assert missing_columns(xy, AU_NN).shape == (0, 2)
    # nor with the columns measured 0.1 Å off their sites (a noisy image's peaks)
    jittered = xy + np.random.default_rng(1).normal(0.0, 0.1, xy.shape)
    assert missing_columns(jittered, AU_NN).shape == (0, 2)


@pytest.mark.parametrize("axis", ["[110]", "[100]"])
def test_interior_holes_are_found_where_the_columns_were(axis):
    xy = _disc_of_columns(axis)
    r = np.hypot(*xy.T)
    # one column near the centre and two side by side half-way out: holes of one and of two columns
    centre = int(np.argmin(r))
    pair_first = int(np.argmin(np.abs(r - 7.0)))
    pair_second = int(cKDTree(xy).query(xy[pair_first], k=2)[1][1])
    removed = [centre, pair_first, pair_second]
    found = missing_columns(np.delete(xy, removed, axis=0), AU_NN)
    assert len(found) == 3
    d, k = cKDTree(xy[removed]).query(found)
    assert sorted(k) == [0, 1, 2]  # one found column for each removed one
    assert d.max() < 0.3  # at the removed sites, not between the two of the two-column hole


def test_a_column_beyond_the_particles_convex_edge_is_not_added():
    xy = _disc_of_columns("[110]")
    outermost = int(np.argmax(xy[:, 0]))  # a corner of the disc: its neighbours all lie on one side of it
    assert missing_columns(np.delete(xy, outermost, axis=0), AU_NN).shape == (0, 2)


def test_too_few_or_collinear_columns_have_no_inside():
    assert missing_columns(np.zeros((0, 2)), AU_NN).shape == (0, 2)
    assert missing_columns([[0.0, 0.0], [3.0, 0.0]], AU_NN).shape == (0, 2)
    line = np.c_[np.arange(10) * 6.0, np.zeros(10)]  # far apart, but on a line
    assert missing_columns(line, AU_NN).shape == (0, 2)


def test_the_counted_start_counts_a_column_whose_peak_was_missed(monkeypatch):
    """The image shows the column, the peak search loses it: the counted structure still has it, with its count."""
    from surrogate import default_model
    import refine.search.column_start as column_start

    atoms, _, image = zone_axis_case()
    xy_true, heights, _ = projected_columns(atoms.positions)
    peaks, height = find_columns(image, NN)
    # the peak of an interior column of 4 or more atoms: surrounded on all sides by other columns
    crowded = np.array([len(n) for n in cKDTree(peaks).query_ball_point(peaks, 1.2 * NN)])
    _, which = cKDTree(xy_true).query(peaks)
    lost = int(np.flatnonzero((crowded >= 7) & (heights[which] >= 4))[0])

    def without_one_peak(img, nn, **kwargs):
        return np.delete(peaks, lost, axis=0), np.delete(height, lost)

    monkeypatch.setattr(column_start, "find_columns", without_one_peak)
    built = column_start.counted_structure(image, default_model(), {"Pt": len(atoms)}, np.random.default_rng(0))
    xy, counts, _ = projected_columns(built.positions)
    d, k = cKDTree(xy).query(peaks[lost])
    assert d < 0.6
    assert abs(int(counts[k]) - int(heights[which[lost]])) <= 1
    assert len(built) == len(atoms)
