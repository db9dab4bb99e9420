"""Preparation of raw HAADF images (refine.io.preparation): background, normalisation, mask, crop.

Synthetic images: Gaussian atomic columns on a square lattice (2.8 Å) in two
discs of different radii on a known offset, scaled and with Gaussian noise.
The real Velox EMD of Au particles (../shared) is checked against statistics
computed here another way.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import pytest

from refine.io import prepare_image, read_image
from refine.io.preparation import MARGIN, parse_crop, parse_detector
from refine.io.preparation_figure import plot_preparation
from surrogate.common import InputError

PIXEL = 0.25  # Å
SHAPE = (240, 200)
OFFSET, SCALE, NOISE = 1000.0, 400.0, 6.0  # file units: vacuum level, units per beam fraction, noise σ
BIG = ((20.0, 25.0), 11.0)  # centre (Å), radius (Å)
SMALL = ((42.0, 24.0), 6.0)

AU_EMD = Path(__file__).resolve().parents[3] / "shared" / "data" / "experimental" / "au-temul" / \
    "example_Au_nanoparticle.emd"


def _lattice(centre, radius, spacing=2.8):
    """(x, y) Å of the columns of a square lattice inside a disc."""
    r = np.arange(-radius, radius + 1e-9, spacing)
    xy = np.array([(i, j) for i in r for j in r if i * i + j * j <= radius * radius])
    return xy + np.asarray(centre)


def _columns(shape, pixel, particles, width=0.45, peak=0.05):
    """Beam-fraction image: Gaussian columns (peak ``peak``) of a square lattice inside each disc (centre, radius)."""
    x = np.arange(shape[0])[:, None] * pixel
    y = np.arange(shape[1])[None, :] * pixel
    img = np.zeros(shape)
    for centre, radius in particles:
        for cx, cy in _lattice(centre, radius):
            img += peak * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * width ** 2))
    return img


@pytest.fixture(scope="module")
def beam():
    """The noiseless image in beam units, shape SHAPE."""
    return _columns(SHAPE, PIXEL, [BIG, SMALL])


@pytest.fixture
def raw(beam, seed):
    """The raw image: OFFSET + SCALE·beam + Gaussian noise of σ NOISE."""
    rng = np.random.default_rng(seed)
    return OFFSET + SCALE * beam + rng.normal(0.0, NOISE, SHAPE)


def _distance(centre, shape=SHAPE, pixel=PIXEL):
    x = np.arange(shape[0])[:, None] * pixel
    y = np.arange(shape[1])[None, :] * pixel
    return np.hypot(x - centre[0], y - centre[1])


def _step(image, name):
    return next(s for s in image.metadata["preparation"] if s["step"] == name)


def _one_line(exc_info):
    message = str(exc_info.value)
    assert "\n" not in message and message
    return message


# --------------------------------------------------------------------------- background and normalisation

def test_vacuum_offset_recovered_within_its_error(raw):
    img = prepare_image(raw, pixel_size=PIXEL, background="vacuum")
    values = _step(img, "background")["values"]
    # the mean of ~20 000 vacuum pixels: within 4 standard errors of the true offset (and far within σ)
    assert abs(values["offset"] - OFFSET) < 4 * values["offset_standard_error"]
    assert values["offset_standard_error"] < 0.05 * NOISE
    assert values["noise_sigma"] == pytest.approx(NOISE, rel=0.05)
    # the prepared image's far vacuum is at 0, the particle's columns untouched
    far = (_distance(BIG[0]) > BIG[1] + 8) & (_distance(SMALL[0]) > SMALL[1] + 8)
    assert abs(np.median(img.data[far])) < 0.2
    np.testing.assert_allclose(img.data, raw - values["offset"])


def test_vacuum_level_of_low_dose_counts_is_their_mean(beam, seed, caplog):
    # Poisson counts on a dark level of 0.3 counts: the median of the vacuum is 0, its expectation 0.3
    rng = np.random.default_rng(seed)
    counts = rng.poisson(0.3 + 400.0 * beam).astype(float)
    with caplog.at_level(logging.WARNING, logger="refine.io.preparation"):
        img = prepare_image(counts, pixel_size=PIXEL, background="vacuum")
    assert not [r for r in caplog.records if "padding" in r.getMessage()]  # zeros among ones are counts
    values = _step(img, "background")["values"]
    assert abs(values["offset"] - 0.3) < 4 * values["offset_standard_error"]
    assert values["offset_standard_error"] < 0.01
    assert values["noise_sigma"] == pytest.approx(np.sqrt(0.3), rel=0.05)


def test_zero_padding_is_flagged(raw, caplog):
    padded = np.zeros((SHAPE[0] + 200, SHAPE[1]))
    padded[:SHAPE[0]] = raw - OFFSET  # a vacuum at 0 ± σ, then a block of exact zeros
    with caplog.at_level(logging.WARNING, logger="refine.io.preparation"):
        prepare_image(padded, pixel_size=PIXEL, background="vacuum")
    assert any("padding" in r.getMessage() for r in caplog.records)


def test_background_value_and_none(raw):
    img = prepare_image(raw, pixel_size=PIXEL, background=250.0)
    np.testing.assert_array_equal(img.data, raw - 250.0)
    same = prepare_image(raw, pixel_size=PIXEL, background="none")
    np.testing.assert_array_equal(same.data, raw)
    assert _step(same, "background")["parameters"]["method"] == "none"


def test_detector_levels_normalise_exactly(raw):
    vac, beam_level = 990.0, 1390.0
    img = prepare_image(raw, pixel_size=PIXEL, detector=f"{vac},{beam_level}")
    np.testing.assert_allclose(img.data, (raw - vac) / (beam_level - vac), rtol=1e-13, atol=1e-15)
    assert img.metadata["beam_units"] is True
    assert _step(img, "normalisation")["values"]["scale"] == beam_level - vac


def test_detector_scale_after_vacuum_gives_beam_units(raw, beam):
    img = prepare_image(raw, pixel_size=PIXEL, background="vacuum", detector=SCALE)
    offset = _step(img, "background")["values"]["offset"]
    np.testing.assert_allclose(img.data, (raw - offset) / SCALE)
    # the columns' beam fraction comes back to within the noise (σ/SCALE per pixel)
    assert np.abs(img.data - beam).mean() < 1.2 * np.sqrt(2 / np.pi) * NOISE / SCALE
    assert _step(img, "normalisation")["values"]["noise_sigma_beam"] == pytest.approx(NOISE / SCALE, rel=0.05)


def test_no_normalisation_is_recorded_as_fitted_scale(raw):
    img = prepare_image(raw, pixel_size=PIXEL)
    assert img.metadata["beam_units"] is False
    assert _step(img, "normalisation")["parameters"] == {"method": "fitted"}


def test_defaults_leave_the_image_as_read_image_does(raw):
    from refine.workflows import ImageSettings

    # what validate_image passes with default settings and a crop given by indices
    settings = ImageSettings(crop="10:200,5:190")
    a = prepare_image(raw, pixel_size=PIXEL, target_pixel_size=0.3, mask=None, resample_images=True,
                      **settings.preparation())
    b = read_image(raw, pixel_size=PIXEL, target_pixel_size=0.3, crop=(10, 200, 5, 190))
    np.testing.assert_array_equal(a.data, b.data)
    np.testing.assert_array_equal(a.mask, b.mask)
    assert a.origin == b.origin and a.pixel_size == b.pixel_size
    assert [s["step"] for s in a.metadata["preparation"]] == ["read", "background", "normalisation", "crop", "resample"]


# --------------------------------------------------------------------------- mask and crop

def test_auto_mask_covers_the_big_particle_not_the_vacuum_nor_the_small_one(raw):
    img = prepare_image(raw, pixel_size=PIXEL, mask="auto")
    d_big, d_small = _distance(BIG[0]), _distance(SMALL[0])
    assert img.mask[d_big <= BIG[1]].all()  # every column of the big particle
    assert img.mask[d_big <= BIG[1] + 2.0].all()  # and its edge
    assert not img.mask[d_big > BIG[1] + MARGIN + 3.0].any()  # no far vacuum
    assert not img.mask[d_small <= SMALL[1] + 1.0].any()  # not the other particle
    assert 0.05 < img.mask.mean() < 0.5


def test_auto_crop_picks_the_largest_particle_box(raw):
    img = prepare_image(raw, pixel_size=PIXEL, crop="auto")
    i0, i1, j0, j1 = img.metadata["crop"]
    # the outermost columns (Å) and the margin inside the box; beyond them at most the columns' blur
    # (0.45 Å columns seen through the 1.5 Å smoothing: their signal meets the noise within ~5 Å)
    lo, hi = _lattice(*BIG).min(axis=0), _lattice(*BIG).max(axis=0)
    inner = (lo[0] - MARGIN, hi[0] + MARGIN, lo[1] - MARGIN, hi[1] + MARGIN)
    for got, want, sign in zip((i0, i1, j0, j1), inner, (-1, 1, -1, 1)):
        assert 0.5 <= sign * (got * PIXEL - want) <= 5.0, (got * PIXEL, want)
    assert not (i0 <= SMALL[0][0] / PIXEL < i1 and j0 <= SMALL[0][1] / PIXEL < j1)
    assert img.origin == pytest.approx((i0 * PIXEL, j0 * PIXEL))
    np.testing.assert_array_equal(img.data, raw[i0:i1, j0:j1])
    second = prepare_image(raw, pixel_size=PIXEL, crop="particle:2")
    k0, k1, l0, l1 = second.metadata["crop"]
    assert k0 <= SMALL[0][0] / PIXEL < k1 and l0 <= SMALL[0][1] / PIXEL < l1
    assert (k1 - k0) < (i1 - i0)


def test_a_particle_cut_by_the_edge_is_never_chosen(seed):
    # a large particle hanging over the image edge, a small one inside
    beam = _columns(SHAPE, PIXEL, [((2.0, 25.0), 14.0), SMALL])
    raw = OFFSET + SCALE * beam + np.random.default_rng(seed).normal(0.0, NOISE, SHAPE)
    img = prepare_image(raw, pixel_size=PIXEL, crop="auto", mask="auto")
    i0, i1, j0, j1 = img.metadata["crop"]
    assert i0 <= SMALL[0][0] / PIXEL < i1 and j0 <= SMALL[0][1] / PIXEL < j1
    with pytest.raises(InputError) as exc:
        prepare_image(raw, pixel_size=PIXEL, crop="particle:2")
    assert "only 1 particle" in _one_line(exc)


def test_auto_crop_and_mask_with_resampling_keep_the_particle(raw):
    img = prepare_image(raw, pixel_size=PIXEL, background="vacuum", detector=SCALE, crop="auto", mask="auto",
                        target_pixel_size=0.4)
    assert img.pixel_size == 0.4
    steps = [s["step"] for s in img.metadata["preparation"]]
    assert steps == ["read", "background", "normalisation", "crop", "mask", "resample"]
    x = img.origin[0] + np.arange(img.shape[0])[:, None] * 0.4
    y = img.origin[1] + np.arange(img.shape[1])[None, :] * 0.4
    inside = np.hypot(x - BIG[0][0], y - BIG[0][1]) <= BIG[1] - 1.0
    assert img.mask[inside].all()
    # the sum over the used pixels is the particle's integrated beam fraction (resampling keeps the mean)
    truth = _columns(SHAPE, PIXEL, [BIG]).sum() * PIXEL ** 2
    assert img.data[img.mask].sum() * 0.4 ** 2 == pytest.approx(truth, rel=0.03)


# --------------------------------------------------------------------------- errors

@pytest.mark.parametrize("crop", ["0:300,0:10", "10:5,0:10", (0, 10, 150, 260)])
def test_crop_outside_the_image_is_one_line(raw, crop):
    with pytest.raises(InputError) as exc:
        prepare_image(raw, pixel_size=PIXEL, crop=crop, background="vacuum")
    assert "crop" in _one_line(exc)


def test_no_vacuum_inside_a_particle(raw):
    interior = raw[60:110, 80:120]  # 12.5 × 10 Å inside the big particle: columns, no vacuum
    with pytest.raises(InputError) as exc:
        prepare_image(interior, pixel_size=PIXEL, background="vacuum")
    message = _one_line(exc)
    assert "no vacuum found" in message and "--background VALUE" in message


def test_no_particle_in_pure_noise(seed):
    noise = OFFSET + np.random.default_rng(seed).normal(0.0, NOISE, SHAPE)
    for kw in ({"crop": "auto"}, {"mask": "auto"}):
        with pytest.raises(InputError) as exc:
            prepare_image(noise, pixel_size=PIXEL, **kw)
        assert "no particle found" in _one_line(exc)


@pytest.mark.parametrize("levels", ["100,100", "200,100", (5.0, -1.0), "0", "-3", "a,b", "1,2,3"])
def test_bad_detector_values_are_one_line(levels):
    with pytest.raises(InputError) as exc:
        parse_detector(levels)
    _one_line(exc)


def test_crop_grammar():
    assert parse_crop("auto").particle == 1 and parse_crop("particle:3").particle == 3
    assert parse_crop("1:20, 3:40").box == (1, 20, 3, 40)
    assert str(parse_crop((1, 20, 3, 40))) == "1:20,3:40"
    for bad in ("particle:0", "1:2", "x", "5:1,0:3"):
        with pytest.raises(InputError) as exc:
            parse_crop(bad)
        _one_line(exc)


# --------------------------------------------------------------------------- CLI, settings, logging, figure

def test_cli_flags_share_one_grammar_and_reach_the_settings():
    from refine.cli.image_options import add_image_arguments, image_keywords
    from refine.workflows import ImageSettings, refinement_settings

    p = argparse.ArgumentParser()
    add_image_arguments(p)
    args = p.parse_args(["--crop", "particle:2", "--background", "vacuum", "--detector-levels", "10,210",
                         "--mask", "auto", "--particle-margin", "3"])
    s = ImageSettings(**image_keywords(args))
    assert s.preparation() == {"background": "vacuum", "detector": (10.0, 210.0), "crop": "particle:2",
                               "particle_margin": 3.0}
    assert refinement_settings(**image_keywords(args))["image_settings"] == s
    defaults = ImageSettings(**image_keywords(p.parse_args([])))
    assert defaults == ImageSettings()
    with pytest.raises(SystemExit):
        p.parse_args(["--detector-levels", "5,1"])
    with pytest.raises(SystemExit):
        p.parse_args(["--detector-scale", "2", "--detector-levels", "1,3"])
    with pytest.raises(InputError):
        ImageSettings(particle_margin=-1)


def test_each_step_is_logged_once(raw, caplog):
    with caplog.at_level(logging.INFO, logger="refine.io.preparation"):
        prepare_image(raw, pixel_size=PIXEL, background="vacuum", detector=SCALE, crop="auto", mask="auto")
    steps = [r.getMessage().split(":")[0] for r in caplog.records if r.name == "refine.io.preparation"]
    assert steps == ["background", "normalisation", "crop", "mask", "resample"]


def test_preparation_figure(raw, tmp_path):
    img = prepare_image(raw, pixel_size=PIXEL, background="vacuum", crop="auto", mask="auto")
    out = plot_preparation(img, tmp_path / "preparation.png", raw=raw)
    from PIL import Image

    with Image.open(out) as png:
        assert png.size[0] > 1000 and png.size[1] > 300
    with pytest.raises(InputError):
        plot_preparation(read_image(raw, pixel_size=PIXEL), tmp_path / "x.png")


# --------------------------------------------------------------------------- the real Au image

@pytest.fixture(scope="module")
def au():
    if not AU_EMD.is_file():
        pytest.skip(f"shared experimental data absent ({AU_EMD})")
    raw = read_image(AU_EMD)
    img = prepare_image(AU_EMD, background="vacuum", crop="auto", mask="auto")
    return raw, img


def test_au_vacuum_level_matches_the_low_mode(au):
    raw, img = au
    values = _step(img, "background")["values"]
    # independent: the mode of 16×16-pixel block means (1.2 Å blocks, noise averaged), lowest peak
    m = (np.array(raw.shape) // 16) * 16
    blocks = raw.data[:m[0], :m[1]].reshape(m[0] // 16, 16, m[1] // 16, 16).mean(axis=(1, 3)).ravel()
    counts, edges = np.histogram(blocks, bins=np.arange(blocks.min(), np.median(blocks), 10.0))
    mode = 0.5 * (edges[np.argmax(counts)] + edges[np.argmax(counts) + 1])
    assert abs(values["offset"] - mode) < 0.5 * values["noise_sigma"]
    assert 30 < values["noise_sigma"] < 300  # counts: the vacuum's shot and read-out noise, not the particles'


def test_au_auto_crop_is_one_whole_particle_of_plausible_size(au):
    raw, img = au
    i0, i1, j0, j1 = img.metadata["crop"]
    step = raw.pixel_size
    crop = _step(img, "crop")["values"]
    # the particle out to where its edge meets the vacuum noise: 3–5 nm across (Å)
    extent = np.array(crop["particle_size_A"]) + 2 * crop["edge_A"]
    assert np.all((30.0 <= extent) & (extent <= 50.0)), extent
    box = np.array([(i1 - i0) * step, (j1 - j0) * step])
    np.testing.assert_allclose(box, extent + 2 * MARGIN, atol=2 * step)
    # independently: the bright blob at the box's centre (1 Å Gaussian, half-way between the vacuum mode
    # and the centre's level) lies wholly inside the box, at least the margin from its sides
    from scipy import ndimage

    level = _step(img, "background")["values"]["offset"]
    sigma = _step(img, "background")["values"]["noise_sigma"]
    smooth = ndimage.gaussian_filter(raw.data[i0:i1, j0:j1], 1.0 / step)
    centre = smooth[smooth.shape[0] // 2, smooth.shape[1] // 2]
    assert centre - level > 10 * sigma  # the box's middle is particle
    blobs, _ = ndimage.label(smooth > 0.5 * (level + centre))
    bi, bj = ndimage.find_objects((blobs == blobs[smooth.shape[0] // 2, smooth.shape[1] // 2]).astype(int))[0]
    gap = MARGIN / step
    assert bi.start >= gap and bj.start >= gap and bi.stop <= smooth.shape[0] - gap and bj.stop <= smooth.shape[1] - gap
    assert 20.0 <= (bi.stop - bi.start) * step <= 40.0 and 20.0 <= (bj.stop - bj.start) * step <= 40.0
    assert img.mask.any() and not img.mask.all()


PTIR_TXT = AU_EMD.parents[1] / "ptir-statstem" / "ExamplePtIr_dx0_1211.txt"


def test_ptir_statstem_padding_is_not_vacuum():
    if not PTIR_TXT.is_file():
        pytest.skip(f"shared experimental data absent ({PTIR_TXT})")
    raw = read_image(PTIR_TXT, pixel_size=0.1211).data
    # StatSTEM's file is background-subtracted and padded with exact zeros outside its region: the vacuum
    # found among the non-zero pixels is at 0 within its noise, and mask 'auto' leaves the padding out
    img = prepare_image(PTIR_TXT, pixel_size=0.1211, mask="zeros", background="vacuum")
    values = _step(img, "background")["values"]
    assert abs(values["offset"]) < values["noise_sigma"]
    auto = prepare_image(PTIR_TXT, pixel_size=0.1211, mask="auto", crop="auto")
    i0, i1, j0, j1 = auto.metadata["crop"]
    padding = (raw == 0)[i0:i1, j0:j1]
    assert padding.mean() > 0.2  # the box reaches into the padding
    assert np.count_nonzero(auto.mask & padding) < 0.001 * auto.mask.size  # isolated zeros at most
    bright = raw[i0:i1, j0:j1] > 0.5 * raw.max()  # the columns' peaks
    assert auto.mask[bright].all()
