"""The depth blur of the convolution image (ConvolutionParameters.depth_blur): the splat, its adjoint, the model."""

import numpy as np
import pytest
from ase import Atoms

from surrogate.common.errors import InputError
from surrogate.imaging.adjoint import positions_vjp
from surrogate.imaging.convolution import (ENTRANCE_DEPTH, ConvolutionParameters, atom_sigmas,
                                           convolution_from_positions, convolution_image)
from surrogate.imaging.grid import ProbeGrid
from surrogate.imaging.model import PolynomialSurrogate, load_model, save_model

GRID = ProbeGrid(origin=(-3.0, -2.5), shape=(64, 58), pixel_size=0.1)


def _brute(xyz, weights, sigma, beta):
    # Σ_a w_a/(2πσ_a²)·exp(−|r − r_a|²/2σ_a²), σ_a² = σ² + β²·(z_a − min z + 1 Å)²: the definition
    gx, gy = np.meshgrid(GRID.x, GRID.y, indexing="ij")
    depth = xyz[:, 2] - xyz[:, 2].min() + 1.0
    out = np.zeros(GRID.shape)
    for (x, y, _), w, d in zip(xyz, weights, depth):
        s2 = sigma ** 2 + (beta * d) ** 2
        out += w / (2 * np.pi * s2) * np.exp(-((gx - x) ** 2 + (gy - y) ** 2) / (2 * s2))
    return out


def test_per_atom_widths_follow_the_definition(rng):
    xyz = np.column_stack([rng.uniform(-1.5, 2.5, 12), rng.uniform(-1.5, 2.0, 12), rng.uniform(-20, 20, 12)])
    atoms = Atoms("Pt12", positions=xyz)
    params = ConvolutionParameters(sigma=0.4, cross_section=None, depth_blur=0.02)
    image = convolution_image(atoms, GRID, params)
    ref = _brute(xyz, np.full(12, 78.0 ** 1.7), 0.4, 0.02)
    assert np.abs(image - ref).max() < 1e-9 * ref.max()
    # each atom still contributes its weight to the integral, however deep (on a grid that holds its tails)
    wide = ProbeGrid(origin=(-12.0, -12.0), shape=(260, 260), pixel_size=0.1)
    assert convolution_image(atoms, wide, params).sum() * 0.01 == pytest.approx(12 * 78.0 ** 1.7, rel=1e-6)
    assert ENTRANCE_DEPTH == 1.0


def test_a_deeper_atom_is_wider_and_fainter_at_its_centre():
    params = ConvolutionParameters(sigma=0.4, cross_section=None, depth_blur=0.02)
    top = Atoms("Pt2", positions=[(0.0, 0.0, 0.0), (2.0, 2.0, 0.0)])
    deep = Atoms("Pt2", positions=[(0.0, 0.0, 0.0), (2.0, 2.0, 40.0)])  # the second atom 40 Å down
    a, b = convolution_image(top, GRID, params), convolution_image(deep, GRID, params)
    i, j = np.unravel_index(np.argmin(np.hypot(*np.meshgrid(GRID.x - 2.0, GRID.y - 2.0, indexing="ij"))), GRID.shape)
    assert b[i, j] < 0.5 * a[i, j]
    i0, j0 = np.unravel_index(np.argmin(np.hypot(*np.meshgrid(GRID.x, GRID.y, indexing="ij"))), GRID.shape)
    assert b[i0, j0] == pytest.approx(a[i0, j0], rel=5e-3)  # the top atom is unchanged (but for a tail)
    # without depth blur the image does not see z at all (the paper's)
    plain = ConvolutionParameters(sigma=0.4, cross_section=None)
    np.testing.assert_array_equal(convolution_image(top, GRID, plain), convolution_image(deep, GRID, plain))
    assert plain.sigmas([0.0, 40.0]) is None


@pytest.mark.parametrize("bad", [-0.01, 1.0, float("nan"), True])
def test_bad_depth_blur_is_refused(bad):
    with pytest.raises(InputError, match="depth blur"):
        ConvolutionParameters(depth_blur=bad)


def test_depth_blur_survives_dicts_and_old_dicts_have_none():
    p = ConvolutionParameters(sigma=0.41, depth_blur=0.015)
    assert ConvolutionParameters.from_dict(p.to_dict()) == p
    old = {k: v for k, v in p.to_dict().items() if k != "depth_blur"}
    assert ConvolutionParameters.from_dict(old).depth_blur == 0.0
    np.testing.assert_allclose(atom_sigmas([5.0, 0.0, 10.0], 0.4, 0.1),
                               np.sqrt(0.16 + (0.1 * np.array([6.0, 1.0, 11.0])) ** 2))


def test_positions_vjp_with_per_atom_widths_matches_finite_differences(rng):
    xy = np.column_stack([rng.uniform(-1.0, 2.0, 6), rng.uniform(-1.0, 2.0, 6)])
    w = rng.uniform(0.5, 2.0, 6)
    sig = rng.uniform(0.35, 0.8, 6)
    dconv = rng.normal(size=GRID.shape)

    def f(xy_, sig_):
        return float((convolution_from_positions(xy_, w, GRID, sig_) * dconv).sum())

    dsig = np.zeros(6)
    grad = positions_vjp(xy, w, GRID.origin, GRID.pixel_size, sig, dconv, sigma_out=dsig)
    eps = 1e-6
    for a in range(6):
        for ax in (0, 1):
            p, m = xy.copy(), xy.copy()
            p[a, ax] += eps
            m[a, ax] -= eps
            assert grad[a, ax] == pytest.approx((f(p, sig) - f(m, sig)) / (2 * eps), rel=1e-5, abs=1e-8)
        sp, sm = sig.copy(), sig.copy()
        sp[a] += eps
        sm[a] -= eps
        assert dsig[a] == pytest.approx((f(xy, sp) - f(xy, sm)) / (2 * eps), rel=1e-5, abs=1e-8)


def test_a_model_of_depth_blurred_images_keeps_its_blur_in_its_file(tmp_path, rng):
    params = ConvolutionParameters(sigma=0.4, depth_blur=0.01)
    convs, ms = [], []
    for _ in range(2):
        atoms = Atoms("Pt20", positions=np.column_stack([rng.uniform(-2, 2, (20, 2)), rng.uniform(-15, 15, 20)]))
        c = convolution_image(atoms, GRID, params)
        convs.append(c)
        ms.append(np.sqrt(c) + 0.01)
    model = PolynomialSurrogate(size=3, degree=2, convolution=params).fit(convs, ms, elements=["Pt"])
    loaded = load_model(save_model(model, tmp_path / "m.npz"))
    assert loaded.convolution_parameters.depth_blur == 0.01
    atoms = Atoms("Pt2", positions=[(0.0, 0.0, 0.0), (0.5, 0.3, 30.0)])
    np.testing.assert_array_equal(loaded.simulate(atoms, GRID), model.simulate(atoms, GRID))
