"""Fitness: closed-form intensity map, sub-pixel alignment, noise models, α, domain warning."""

from __future__ import annotations

import logging
import pickle
from copy import deepcopy
from pathlib import Path

import numpy as np
import pytest
from ase.cluster import Icosahedron, Octahedron

from surrogate.common.errors import InputError, StemRefineError
from refine.cost.alignment import fit_intensity_map
from refine.cost.fitness import Fitness
from refine.cost.noise import estimate_noise, noise_weights
from refine.io.images import read_image

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
PTIR = SHARED / "data" / "experimental" / "ptir-statstem" / "ExamplePtIr_dx0_1211.txt"
PIXEL = 0.1


@pytest.fixture
def seed():
    return 1125


def _stand_in_multislice(conv):
    """A smooth nonlinear function of the convolution image standing in for multislice."""
    from scipy.ndimage import gaussian_filter

    return 0.5 * np.sqrt(np.maximum(gaussian_filter(conv, 1.0), 0.0)) + 0.01


@pytest.fixture(scope="module")
def model(truth):
    """A small surrogate (s=3, d=2) fitted on rotated Pt particles."""
    from surrogate.imaging.convolution import convolution_image
    from surrogate.imaging.grid import ProbeGrid
    from surrogate.imaging.model import PolynomialSurrogate

    rng = np.random.default_rng(0)
    convs, ms = [], []
    for k in range(4):
        # the last one is the test structure turned in-plane: its columns are in range
        a = [Icosahedron("Pt", 4), Octahedron("Pt", 5, 1), Octahedron("Pt", 5, 1), truth.copy()][k]
        if k < 3:
            a.rotate(rng.uniform(0, 360), rng.normal(size=3))
            a.positions += rng.normal(0, 0.05, a.positions.shape)
        else:
            a.rotate(40, "z")
        c = convolution_image(a, ProbeGrid.around(a, PIXEL, 3.0))
        convs.append(c)
        ms.append(_stand_in_multislice(c))
    return PolynomialSurrogate(size=3, degree=2, log_term=False).fit(convs, ms, elements=["Pt"])


@pytest.fixture(scope="module")
def truth():
    from ase.optimize import FIRE
    from asap3 import EMT

    a = Icosahedron("Pt", 3)  # 55 atoms, EMT-relaxed: the energy term's minimum too
    a.center(vacuum=5.0)
    a.calc = EMT()
    FIRE(a, logfile=None).run(fmax=1e-3, steps=500)
    a.calc = None
    a.positions -= a.positions.mean(axis=0)
    a.rotate(17, "z")
    return a


@pytest.fixture(scope="module")
def grid():
    from surrogate.imaging.grid import ProbeGrid

    return ProbeGrid(origin=(-9.0, -8.5), shape=(170, 180), pixel_size=PIXEL)


@pytest.fixture(scope="module")
def clean(model, truth, grid):
    return model.simulate(truth, grid)


def experiment(clean, grid, *, a=3.0, b=0.2, sigma=0.0, seed=0, mask=None):
    data = a * clean + b
    if sigma:
        data = data + np.random.default_rng(seed).normal(0, sigma, data.shape)
    return read_image(data, pixel_size=PIXEL, origin=grid.origin, mask=mask)


def shifted(atoms, d):
    b = atoms.copy()
    b.positions[:, :2] -= d
    return b


# --------------------------------------------------------------------------- closed-form map

def test_intensity_map_is_exact(seed):
    rng = np.random.default_rng(seed)
    s = rng.random((40, 50))
    w = rng.uniform(0.5, 2.0, s.shape)
    w[rng.random(s.shape) < 0.3] = 0.0  # masked pixels
    e = 2.7183 * s - 0.31416
    e[w == 0] = rng.normal(size=int((w == 0).sum()))  # garbage where masked: must not matter
    a, b, chi2 = fit_intensity_map(s, e, w)
    assert a == pytest.approx(2.7183, abs=1e-10) and b == pytest.approx(-0.31416, abs=1e-10)
    assert chi2 < 1e-18


def test_intensity_map_matches_weighted_lstsq(seed):
    rng = np.random.default_rng(seed)
    s, w = rng.random((30, 30)), rng.uniform(0.1, 1, (30, 30))
    e = 0.7 * s + rng.random((30, 30))  # noisy, positively correlated
    a, b, chi2 = fit_intensity_map(s, e, w)
    A = np.stack([s.ravel(), np.ones(s.size)], axis=1) * np.sqrt(w.ravel())[:, None]
    (ra, rb), *_ = np.linalg.lstsq(A, e.ravel() * np.sqrt(w.ravel()), rcond=None)
    assert (a, b) == pytest.approx((ra, rb), rel=1e-9)
    assert chi2 == pytest.approx(np.sum(w * (e - ra * s - rb) ** 2), rel=1e-9)


def test_anticorrelated_candidate_gets_a_flat_fit(seed):
    rng = np.random.default_rng(seed)
    s = rng.random((20, 20))
    a, b, chi2 = fit_intensity_map(s, 1.0 - s, None)
    assert a == 0.0 and b == pytest.approx((1.0 - s).mean())
    assert chi2 == pytest.approx(np.sum((s - s.mean()) ** 2))


@pytest.mark.parametrize("a, b", [(2.5, -0.125), (4.0e5, 15000.0)])  # the second: raw counts on an offset
def test_fitness_recovers_the_map_exactly_on_the_box(model, truth, grid, clean, a, b):
    # the box-restricted render plus the vacuum outside equals the full-grid simulation
    f = Fitness(model, experiment(clean, grid, a=a, b=b), alpha=1.0, noise=1.0, align="none",
                calculator=None)
    r = f.evaluate(truth)
    assert r.scale == pytest.approx(a, rel=1e-10) and r.offset == pytest.approx(b, rel=1e-10)
    # χ² comes from the normal-equation sums of the mean-centred image: exact up to
    # rounding of Σ w·(I_exp − ē)²
    assert r.chi2 < 1e-13 * f.aligner.wee_tot and r.energy == 0.0 and r.shift == (0.0, 0.0)
    np.testing.assert_allclose(f.simulated_image(truth), a * clean + b, rtol=1e-12, atol=1e-12 * a)


# --------------------------------------------------------------------------- alignment

@pytest.mark.parametrize("method", ["interpolate", "render"])
@pytest.mark.parametrize("align", ["auto", "fft", "local"])
@pytest.mark.parametrize("d_px", [(0.37, -0.52), (-0.81, 0.23), (0.0, 0.0)])
def test_alignment_recovers_a_subpixel_shift(model, truth, grid, clean, align, d_px, method):
    sigma = 0.01 * (3.0 * clean.max())
    f = Fitness(model, experiment(clean, grid, sigma=sigma, seed=3), alpha=1.0, noise=sigma, align=align,
                calculator=None, shift_method=method)
    r = f.evaluate(shifted(truth, np.array(d_px) * PIXEL))
    err_px = np.abs(np.array(r.shift) / PIXEL - d_px)
    assert err_px.max() < 0.05
    assert r.chi2_per_pixel == pytest.approx(1.0, abs=0.05)  # the noise level


@pytest.mark.parametrize("align", ["auto", "fft"])
def test_large_shifts_are_found_by_cross_correlation(model, truth, grid, clean, align):
    d_px = np.array([12.3, -8.7])
    f = Fitness(model, experiment(clean, grid), alpha=1.0, noise=1e-3, align=align, calculator=None)
    r = f.evaluate(shifted(truth, d_px * PIXEL))
    assert np.abs(np.array(r.shift) / PIXEL - d_px).max() < 0.05
    assert r.scale == pytest.approx(3.0, rel=1e-3)


def test_interpolated_shift_matches_exact_rerender(model, truth, grid, clean):
    sigma = 0.01 * (3.0 * clean.max())
    img = experiment(clean, grid, sigma=sigma, seed=5)
    fast = Fitness(model, img, alpha=1.0, noise=sigma, calculator=None)
    exact = Fitness(model, img, alpha=1.0, noise=sigma, calculator=None, shift_method="render", tol=0.01,
                    max_iter=10)
    for d in [(0.137, -0.262), (-0.91, 0.45)]:
        r1, r2 = fast.evaluate(shifted(truth, d)), exact.evaluate(shifted(truth, d))
        assert np.array(r1.shift) == pytest.approx(np.array(r2.shift), abs=0.01 * PIXEL)
        assert r1.chi2 == pytest.approx(r2.chi2, rel=2e-3)
        assert r1.scale == pytest.approx(r2.scale, rel=1e-3)


def test_unaligned_shift_costs_chi2(model, truth, grid, clean):
    exp_img = experiment(clean, grid, sigma=0.01, seed=1)
    none = Fitness(model, exp_img, alpha=1.0, noise=0.01, align="none", calculator=None)
    auto = Fitness(model, exp_img, alpha=1.0, noise=0.01, align="auto", calculator=None)
    moved = shifted(truth, (0.15, 0.1))
    # far more than the χ² fluctuation √(2N) of a correct structure
    assert none.evaluate(moved).chi2 - none.evaluate(truth).chi2 > 10 * np.sqrt(2 * none.n_valid)
    assert auto.evaluate(moved).chi2 == pytest.approx(auto.evaluate(truth).chi2, rel=0.01)


# --------------------------------------------------------------------------- the cost

def _perturbed(truth, rng):
    out = {}
    for s in (0.05, 0.1, 0.2):
        b = truth.copy()
        b.positions += rng.normal(0, s, b.positions.shape)
        out[f"rattle {s}"] = b
    # a vertex atom moved to a hollow site on the other side (an adatom)
    b = truth.copy()
    k = int(np.argmax(np.linalg.norm(b.positions, axis=1)))
    far = -b.positions[k] / np.linalg.norm(b.positions[k])
    b.positions[k] = far * (np.linalg.norm(truth.positions, axis=1).max() + 2.0)
    out["vertex to adatom"] = b
    b = truth.copy()
    b.rotate(4.0, "z")
    out["rotated 4°"] = b
    out["shifted 0.3 Å"] = shifted(truth, (0.3, -0.2))
    return out


@pytest.mark.parametrize("align", ["none", "auto"])
def test_cost_is_lowest_at_the_true_structure(model, truth, grid, clean, seed, align):
    rng = np.random.default_rng(seed)
    sigma = 0.02 * 3.0 * clean.max()
    f = Fitness(model, experiment(clean, grid, sigma=sigma, seed=seed), alpha="auto", noise=sigma,
                align=align, calculator="emt", symbols=["Pt"])
    cands = _perturbed(truth, rng)
    names = ["truth", *cands]
    results = dict(zip(names, f.calibrate_alpha([truth, *cands.values()])))
    assert f.alpha > 0
    for name in cands:
        if align == "auto" and name.startswith("shifted"):
            # a rigid shift is aligned away: the same cost up to noise
            assert results[name].cost == pytest.approx(results["truth"].cost, rel=1e-3)
            continue
        assert results[name].cost > results["truth"].cost, name
        assert results[name].chi2 > results["truth"].chi2, name


# --------------------------------------------------------------------------- noise and α

def test_noise_estimate_and_poisson_weights(seed, clean, grid):
    rng = np.random.default_rng(seed)
    sigma = 0.013
    img = experiment(clean, grid, sigma=sigma, seed=seed)
    assert estimate_noise(img.data, img.mask) == pytest.approx(sigma, rel=0.1)
    w, info = noise_weights(img, "uniform")
    assert info["estimated"] and np.allclose(w, 1 / info["sigma"] ** 2)
    pos = read_image(rng.uniform(0.01, 0.1, (20, 20)), pixel_size=0.1)
    w, info = noise_weights(pos, "poisson", dose=1e4)
    np.testing.assert_allclose(w, 1e4 * 0.01 / pos.data)  # 1/σ² = dose·Δ² / I
    counts = read_image(rng.poisson(50, (20, 20)).astype(float), pixel_size=0.1)
    w, _ = noise_weights(counts, "poisson")
    np.testing.assert_allclose(w, 1.0 / np.maximum(counts.data, 1.0))


def test_alpha_rule_and_calibration_requirement(model, truth, grid, clean):
    assert Fitness.alpha_from([0, 10, 20, 30, 40], [0, 1000, 2000, 3000, 4000]) == pytest.approx(0.01)
    f = Fitness(model, experiment(clean, grid), noise=0.01, calculator=None)
    with pytest.raises(StemRefineError, match="calibrate_alpha"):
        f.evaluate(truth)
    with pytest.raises(StemRefineError, match="calibrate_alpha"):
        f(truth)


def test_pareto_mode_returns_chi2_and_energy(model, truth, grid, clean):
    f = Fitness(model, experiment(clean, grid, sigma=0.01), noise=0.01, mode="pareto", calculator="emt")
    chi2, e = f(truth)  # no α needed
    assert np.isnan(f.evaluate(truth).cost)
    f.alpha = 1.0
    r = f.evaluate(truth)
    assert (chi2, e) == pytest.approx((r.chi2, r.energy))
    assert e > 0  # EMT energy of a 55-atom cluster relative to bulk Pt


def test_per_atom_energy(model, truth, grid, clean):
    tot = Fitness(model, experiment(clean, grid), alpha=0.0, noise=0.01, calculator="emt").evaluate(truth)
    per = Fitness(model, experiment(clean, grid), alpha=0.0, noise=0.01, calculator="emt",
                  per_atom_energy=True).evaluate(truth)
    assert per.energy == pytest.approx(tot.energy / len(truth)) and tot.cost == tot.energy


# --------------------------------------------------------------------------- domain warning

def test_domain_warning_is_logged_once(model, truth, grid, clean, caplog):
    narrow = deepcopy(model)
    narrow.input_range_ = (0.0, 0.5 * model.input_range_[1])
    f = Fitness(narrow, experiment(clean, grid), alpha=1.0, noise=0.01, calculator=None)
    with caplog.at_level(logging.WARNING, logger="refine.cost.fitness"):
        r1 = f.evaluate(truth)
        r2 = f.evaluate(shifted(truth, (0.1, 0.0)))
    assert r1.out_of_domain and r2.out_of_domain
    assert f.out_of_domain and f.summary()["out_of_domain"] and f.n_out_of_domain == 2
    assert caplog.text.count("training range") == 1
    ok = Fitness(model, experiment(clean, grid), alpha=1.0, noise=0.01, calculator=None)
    assert not ok.evaluate(truth).out_of_domain and not ok.out_of_domain


# --------------------------------------------------------------------------- outputs, bad inputs

def test_difference_image_masks_and_vanishes_at_truth(model, truth, grid, clean):
    mask = np.ones(clean.shape, bool)
    mask[:10] = False
    f = Fitness(model, experiment(clean, grid, mask=mask), alpha=1.0, noise=0.01, calculator=None)
    diff = f.difference_image(shifted(truth, (0.02, -0.01)))
    assert np.isnan(diff[:10]).all()
    assert np.nanmax(np.abs(diff)) < 2e-3 * (3.0 * clean.max())  # aligned away to first order


def test_bad_inputs(model, truth, grid, clean):
    img = experiment(clean, grid)
    coarse = read_image(img.data, pixel_size=0.12)
    with pytest.raises(InputError, match="target_pixel_size=0.1"):
        Fitness(model, coarse, alpha=1.0)
    with pytest.raises(InputError, match=r"σ map shape"):
        Fitness(model, img, alpha=1.0, noise=np.ones((3, 3)))
    with pytest.raises(InputError, match="align"):
        Fitness(model, img, alpha=1.0, align="sideways")
    with pytest.raises(InputError, match="alpha"):
        Fitness(model, img, alpha=-1.0)
    with pytest.raises(InputError, match="dose"):
        Fitness(model, img, alpha=1.0, noise="poisson", dose=-5)
    with pytest.raises(InputError, match="ExperimentalImage"):
        Fitness(model, img.data, alpha=1.0)
    f = Fitness(model, img, alpha=1.0, noise=0.01, calculator="emt")
    gold = truth.copy()
    gold.symbols[:3] = "Au"
    with pytest.raises(InputError, match="Au.*training set"):
        f.evaluate(gold)
    nan = truth.copy()
    nan.positions[0, 0] = np.nan
    with pytest.raises(InputError, match="non-finite"):
        f.evaluate(nan)


def test_fitness_pickles(model, truth, grid, clean):
    f = Fitness(model, experiment(clean, grid, sigma=0.01), alpha=2.0, noise=0.01, calculator="emt",
                symbols=["Pt"])
    r = f.evaluate(truth)
    g = pickle.loads(pickle.dumps(f))
    assert g.evaluate(truth).cost == pytest.approx(r.cost, rel=1e-12)


@pytest.mark.skipif(not PTIR.exists(), reason="shared StatSTEM Pt-Ir example absent")
def test_real_masked_image(model):
    img = read_image(PTIR, pixel_size=0.1211, mask="zeros", target_pixel_size=PIXEL)
    f = Fitness(model, img, alpha=1.0, calculator=None)  # σ estimated over the valid pixels
    assert f.noise_info["estimated"] and f.n_valid == img.n_valid
    cand = Icosahedron("Pt", 4)
    cand.center()
    cand.positions[:, :2] += np.array(img.centroid())
    r = f.evaluate(cand)
    assert np.isfinite(r.chi2) and r.chi2 > 0 and r.scale > 0


@pytest.mark.parametrize("align", ["none", "local"])
def test_hot_path_allocates_nothing_image_sized(model, truth, grid, clean, align, seed):
    import tracemalloc

    f = Fitness(model, experiment(clean, grid, sigma=0.01), alpha=1.0, noise=0.01, align=align,
                calculator="emt", symbols=["Pt"])
    rng = np.random.default_rng(seed)
    cands = [truth.positions + rng.normal(0, 0.05, truth.positions.shape) for _ in range(4)]
    f.evaluate(cands[0], truth.numbers)  # first call sets buffers and caches up
    tracemalloc.start()
    try:
        for pos in cands[1:]:
            f.evaluate(pos, truth.numbers)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    image_bytes = clean.size * 8
    assert peak < image_bytes / 10, f"{peak} B allocated at peak for a {image_bytes} B image"


def test_aligned_copy_needs_no_further_shift(model, truth, grid, clean):
    f = Fitness(model, experiment(clean, grid, sigma=0.01, seed=2), alpha=1.0, noise=0.01, calculator=None)
    moved = shifted(truth, (0.83, -0.41))
    r = f.evaluate(moved)
    back = Fitness.aligned(moved, r)
    assert np.allclose(moved.positions, shifted(truth, (0.83, -0.41)).positions)  # input untouched
    r2 = f.evaluate(back)
    assert np.abs(r2.shift).max() < 0.005 and r2.chi2 == pytest.approx(r.chi2, rel=1e-3)


def test_cross_correlation_on_a_small_unbinned_image(model):
    from surrogate.imaging.grid import ProbeGrid

    small = Octahedron("Pt", 3, 1)  # a few atoms: fits an 8 Å field
    small.center()
    small.positions -= small.positions.mean(axis=0)
    g = ProbeGrid(origin=(-4.0, -4.0), shape=(80, 80), pixel_size=PIXEL)
    f = Fitness(model, experiment(model.simulate(small, g), g), alpha=1.0, noise=1e-3, align="fft",
                calculator=None)
    d_px = np.array([-6.4, 9.3])
    r = f.evaluate(shifted(small, d_px * PIXEL))
    assert f.aligner.binning == 1  # no binning below 96 px
    assert np.abs(np.array(r.shift) / PIXEL - d_px).max() < 0.05


@pytest.mark.parametrize("align", ["auto", "fft", "local"])
def test_candidate_outside_the_field_gets_the_flat_fit(model, truth, grid, clean, align):
    # no pixel of the image is reached: every search step is degenerate, the answer is b = mean
    img = experiment(clean, grid, sigma=0.01, seed=4)
    f = Fitness(model, img, alpha=1.0, noise=0.01, align=align, calculator=None)
    far = truth.copy()
    far.positions[:, 0] += 100.0
    r = f.evaluate(far)
    assert r.scale == 0.0 and r.shift == (0.0, 0.0)
    assert r.offset == pytest.approx(img.data.mean(), rel=1e-12)
    assert r.chi2 == pytest.approx(np.sum((img.data - img.data.mean()) ** 2) / 0.01**2, rel=1e-9)


def test_search_without_convergence_returns_the_best_visited_shift(model, truth, grid, clean):
    # max_iter=0: one Gauss–Newton step is computed but never verified, so the
    # unshifted fit (the only visited shift) is the answer, as with align="none"
    img = experiment(clean, grid, sigma=0.01, seed=6)
    one = Fitness(model, img, alpha=1.0, noise=0.01, align="local", max_iter=0, calculator=None)
    none = Fitness(model, img, alpha=1.0, noise=0.01, align="none", calculator=None)
    moved = shifted(truth, (0.03, -0.02))
    r, ref = one.evaluate(moved), none.evaluate(moved)
    assert r.shift == (0.0, 0.0)
    assert (r.chi2, r.scale, r.offset) == pytest.approx((ref.chi2, ref.scale, ref.offset), rel=1e-12)
    # with iterations it moves and improves
    r3 = Fitness(model, img, alpha=1.0, noise=0.01, align="local", calculator=None).evaluate(moved)
    assert r3.chi2 < ref.chi2 and np.abs(np.array(r3.shift) / PIXEL - (0.3, -0.2)).max() < 0.05
