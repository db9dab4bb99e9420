"""Preparation of a raw HAADF image: from detector counts to what the surrogate predicts.

The surrogate predicts an image in units of the incident beam (the fraction
of the beam that reaches the detector) on a vacuum of 0, of one whole
particle. A microscope image is in detector counts on an offset, often holds
several particles, and needs cutting to one. :func:`prepare_image` reads the
file like :func:`refine.io.read_image` and, in this order, on the whole file:

1. **background** (``background=``): ``None`` leaves the image as it is;
   a number is subtracted; ``"vacuum"`` finds the vacuum (:func:`find_vacuum`:
   pixels below the particle threshold of the smoothed image and more than
   ``particle_margin`` Å from any of it) and subtracts its median, recording
   the offset, its standard error and the vacuum noise σ.
2. **normalisation** (``detector=``) to a fraction of the incident beam, as
   in the detector-scan normalisation of quantitative HAADF-STEM (LeBeau &
   Stemmer, Ultramicroscopy 108, 1653, 2008; StatSTEM):
   I_norm = (I − I_vac) / (I_beam − I_vac), from the detector-scan levels
   ``(I_vac, I_beam)`` (when a background was measured, the image's own
   vacuum replaces I_vac in the numerator; the two are logged side by side),
   or I_norm = (I − b) / S from a scale S (image units per beam fraction).
   Given neither, the scale is **left to the fitness**: it fits a·I_sim + b
   in closed form (:func:`refine.cost.alignment.fit_intensity_map`), so χ²
   needs no absolute scale. Only a Poisson noise model with a ``dose``
   assumes beam units; the record says ``beam_units: false``.
3. **mask** ``"auto"``: the chosen particle (see 4.; else the largest whole
   particle in the crop) dilated by ``particle_margin`` Å, keeping only the
   pixels nearer to it than to any other particle: the particle's edge and
   some vacuum are fitted, its neighbours are not. (Files and ``"zeros"`` as in
   :func:`refine.io.read_image`.)
4. **crop**: ``"i0:i1,j0:j1"`` (file pixels, half-open, first axis first),
   ``"auto"`` = the bounding box of the largest particle that lies wholly
   inside the image, plus ``particle_margin`` Å, or ``"particle:K"`` for the
   K-th largest. A particle cut by the image edge is never chosen: the
   refinement needs all of its atoms in view.
5. **resample** to the model's Δ (:func:`refine.io.resample`), last.

Particles are found by :func:`segment_particles`: the image smoothed by a
Gaussian of ``SMOOTHING`` Å (atomic columns merge into a particle), split
at Otsu's threshold (IEEE Trans. SMC 9, 62, 1979) between vacuum and
particle, connected pixels grouped, groups smaller than a disc of radius
``MIN_PARTICLE_RADIUS`` Å dropped (noise).

Every step is recorded in ``metadata["preparation"]`` (a list of
``{"step", "parameters", "values"}``, JSON-ready; thresholds in the file's
units) and logged, one line each; :func:`refine.io.preparation_figure.
plot_preparation` draws them. Lengths in Å, pixel indices of the file.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, replace

import numpy as np

from refine.io.images import ExperimentalImage, _validate_crop, read_image
from surrogate.common import InputError

__all__ = [
    "MARGIN",
    "SMOOTHING",
    "Crop",
    "Detector",
    "Segmentation",
    "Vacuum",
    "find_vacuum",
    "normalise_detector",
    "parse_background",
    "parse_crop",
    "parse_detector",
    "particle_edge",
    "particle_mask",
    "prepare_image",
    "segment_particles",
]

log = logging.getLogger(__name__)

#: Å: σ of the Gaussian that merges atomic columns (2–3 Å apart) into a particle before thresholding
SMOOTHING = 1.5
#: Å: default margin of the particle mask and the crop box, and the least distance of vacuum from a particle
MARGIN = 5.0
#: Å: connected groups above the threshold smaller than a disc of this radius are noise, not particles
MIN_PARTICLE_RADIUS = 2.0
#: a particle's edge ends where the smoothed image is this many vacuum σ (of the smoothed image) above the vacuum
EDGE_SIGMAS = 3.0
#: Å: the farthest a particle's edge may reach beyond Otsu's threshold
MAX_EDGE = 20.0
#: fewest vacuum pixels whose median is a background level
MIN_VACUUM_PIXELS = 100
#: the particle class must lie this many (smoothed) vacuum σ above the vacuum to call the low class vacuum
MIN_CONTRAST = 5.0


# --------------------------------------------------------------------------- the settings' grammar

@dataclass(frozen=True)
class Crop:
    """A crop: a ``box`` (i0, i1, j0, j1) in file pixels, or the ``particle``-th largest whole particle (1 = largest)."""

    box: tuple | None = None
    particle: int | None = None

    def __str__(self) -> str:
        if self.box is not None:
            i0, i1, j0, j1 = self.box
            return f"{i0}:{i1},{j0}:{j1}"
        return "auto" if self.particle == 1 else f"particle:{self.particle}"


@dataclass(frozen=True)
class Detector:
    """Detector normalisation: I_norm = (I − b) / ``scale``; b = ``vacuum`` (detector scan) unless a background was measured.

    ``vacuum`` is None for a bare scale (``--detector-scale``); ``beam`` = vacuum + scale.
    """

    scale: float
    vacuum: float | None = None

    @property
    def beam(self) -> float | None:
        return None if self.vacuum is None else self.vacuum + self.scale


def parse_background(value):
    """``None``/"none", "vacuum" or a number (file units) → None, "vacuum" or float."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "none"):
        return None
    if isinstance(value, str) and value.strip().lower() == "vacuum":
        return "vacuum"
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"background must be 'none', 'vacuum' or a number (image units), got {value!r}") from None
    if not math.isfinite(v):
        raise InputError(f"background must be finite, got {value!r}")
    return v


def parse_detector(value) -> Detector | None:
    """None, a scale S (> 0, image units per beam fraction), or levels "VAC,BEAM" / (VAC, BEAM) with BEAM > VAC."""
    if value is None or isinstance(value, Detector):
        return value
    if isinstance(value, str):
        parts = [p for p in re.split(r"[,\s]+", value.strip()) if p]
    elif np.ndim(value) == 0:
        parts = [value]
    else:
        parts = list(value)
    try:
        numbers = [float(p) for p in parts]
    except (TypeError, ValueError):
        numbers = []
    if len(numbers) not in (1, 2) or not all(math.isfinite(v) for v in numbers):
        raise InputError(f"detector must be a scale S or the levels 'VAC,BEAM' of a detector scan, got {value!r}")
    if len(numbers) == 1:
        if numbers[0] <= 0:
            raise InputError(f"detector scale must be positive (image units per fraction of the beam), got {value!r}")
        return Detector(scale=numbers[0])
    vac, beam = numbers
    if beam <= vac:
        raise InputError(f"detector levels VAC,BEAM = {vac:g},{beam:g}: the beam level must be above the vacuum level")
    return Detector(scale=beam - vac, vacuum=vac)


def parse_crop(value) -> Crop | None:
    """None, "auto", "particle:K", "i0:i1,j0:j1" or (i0, i1, j0, j1) → :class:`Crop` (not checked against an image)."""
    if value is None or isinstance(value, Crop):
        return value
    if isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        if text == "auto":
            return Crop(particle=1)
        m = re.fullmatch(r"particle:(\d+)", text)
        if m:
            if int(m.group(1)) < 1:
                raise InputError(f"crop {value!r}: particles are counted from 1 (the largest)")
            return Crop(particle=int(m.group(1)))
        m = re.fullmatch(r"(\d+):(\d+),(\d+):(\d+)", text)
        if not m:
            raise InputError(f"crop must be 'i0:i1,j0:j1' (file pixels), 'auto' or 'particle:K', got {value!r}")
        box = tuple(int(g) for g in m.groups())
    else:
        try:
            box = tuple(int(v) for v in value)
        except (TypeError, ValueError):
            box = ()
        if len(box) != 4:
            raise InputError(f"crop must be (i0, i1, j0, j1), 'auto' or 'particle:K', got {value!r}") from None
    if not (box[0] < box[1] and box[2] < box[3]) or min(box) < 0:
        raise InputError(f"crop {value!r}: need 0 ≤ i0 < i1 and 0 ≤ j0 < j1 (half-open file pixel ranges)")
    return Crop(box=box)


def parse_margin(value) -> float:
    """The particle margin in Å (≥ 0)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"particle margin must be a number of Å, got {value!r}") from None
    if not (math.isfinite(v) and v >= 0):
        raise InputError(f"particle margin must be a non-negative number of Å, got {value!r}")
    return v


# --------------------------------------------------------------------------- particles and vacuum

@dataclass(frozen=True)
class Segmentation:
    """Particles of an image: the smoothed image split at a threshold into connected groups.

    Attributes
    ----------
    smoothed : ndarray, shape (M, N)
        The image smoothed by a Gaussian of ``smoothing`` Å (file units).
    threshold : float
        Otsu's threshold of ``smoothed`` over the valid pixels (file units): what is a particle.
    edge : float
        Vacuum level + ``EDGE_SIGMAS`` × its noise σ, of ``smoothed``: where a particle's edge ends.
    above : ndarray of bool, shape (M, N)
        Valid pixels of ``smoothed`` at or above the threshold (particles and any small bright speck).
    vacuum : ndarray of bool, shape (M, N)
        Valid pixels farther than ``margin`` Å from every pixel above ``edge`` (when a vacuum
        stands out; else from every pixel above ``threshold``).
    labels : ndarray of int32, shape (M, N)
        0 off the particles; k = 1, 2, … the k-th largest particle (by area).
    areas : ndarray of int, shape (K,)
        Pixels of particle k at ``areas[k-1]``.
    boxes : list of (i0, i1, j0, j1)
        Half-open bounding box of each particle, file pixels.
    whole : ndarray of bool, shape (K,)
        The particle does not touch the image edge (all of it is in view).
    contrast : float
        (median particle − median vacuum) level of ``smoothed`` over the robust σ of its vacuum:
        large for particles on vacuum, small when the threshold split one texture (no vacuum).
    smoothing, margin : float
        Å.
    """

    smoothed: np.ndarray
    threshold: float
    edge: float
    above: np.ndarray
    vacuum: np.ndarray
    labels: np.ndarray
    areas: np.ndarray
    boxes: list
    whole: np.ndarray
    contrast: float
    smoothing: float
    margin: float

    @property
    def n_particles(self) -> int:
        return len(self.areas)

    def ranked_whole(self) -> list:
        """Labels of the particles wholly in view, largest first."""
        return [k + 1 for k in range(self.n_particles) if self.whole[k]]


@dataclass(frozen=True)
class Vacuum:
    """Vacuum pixels (bool, shape (M, N)), their median ``level``, noise ``sigma`` and the level's standard error."""

    pixels: np.ndarray
    level: float
    sigma: float
    standard_error: float

    @property
    def n(self) -> int:
        return int(np.count_nonzero(self.pixels))


def _robust_sigma(x: np.ndarray) -> float:
    """1.4826 × median absolute deviation (σ of Gaussian data, blind to a few outliers); the std if that is 0."""
    s = 1.4826 * float(np.median(np.abs(x - np.median(x))))
    return s if s > 0 else float(np.std(x))


def _otsu(values: np.ndarray, bins: int = 512) -> float:
    """Otsu's threshold: the level that maximises the between-class variance of ``values``' histogram."""
    lo, hi = np.percentile(values, [0.05, 99.95])
    if not hi > lo:
        lo, hi = float(values.min()), float(values.max())
    counts, edges = np.histogram(values, bins=bins, range=(lo, hi))
    centres = 0.5 * (edges[:-1] + edges[1:])
    w0 = np.cumsum(counts, dtype=float)
    w1 = w0[-1] - w0
    s0 = np.cumsum(counts * centres)
    m0 = s0 / np.maximum(w0, 1)
    m1 = (s0[-1] - s0) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    return float(edges[int(np.argmax(between[:-1])) + 1])


def segment_particles(data: np.ndarray, valid: np.ndarray, pixel_size: float, *, smoothing: float = SMOOTHING,
                      margin: float = MARGIN) -> Segmentation:
    """The particles of an image and its vacuum candidates (see :class:`Segmentation`).

    Parameters
    ----------
    data : ndarray, shape (M, N)
        The image, any units (brighter = more scattering).
    valid : ndarray of bool, shape (M, N)
        Pixels to use; excluded ones take no part in the smoothing either (normalised convolution).
    pixel_size : float
        Δ in Å.
    smoothing : float
        σ in Å of the Gaussian applied before thresholding.
    margin : float
        Å: vacuum candidates lie farther than this from every pixel above the threshold.
    """
    from scipy import ndimage

    sigma_px = max(smoothing / pixel_size, 0.5)
    weight = ndimage.gaussian_filter(valid.astype(float), sigma_px, mode="nearest")
    smoothed = ndimage.gaussian_filter(np.where(valid, data, 0.0), sigma_px, mode="nearest")
    smoothed = np.where(weight > 1e-3, smoothed / np.maximum(weight, 1e-3), np.nan)
    use = valid & np.isfinite(smoothed)
    threshold = _otsu(smoothed[use])
    above = use & (smoothed >= threshold)
    vacuum = use & ~above & (_distance_to(above, pixel_size) > margin)
    # the contrast of the vacuum candidates (the whole low class when they are too few to judge)
    low = smoothed[vacuum] if np.count_nonzero(vacuum) >= MIN_VACUUM_PIXELS else smoothed[use & ~above]
    high = smoothed[above]
    level = float(np.median(low)) if low.size else threshold
    spread = _robust_sigma(low) if low.size > 1 else 0.0
    gap = float(np.median(high)) - level if high.size else 0.0
    contrast = gap / spread if spread > 0 else (math.inf if gap > 0 else 0.0)
    # A particle's edge sinks into the vacuum well outside Otsu's threshold (half-way up): its projected
    # thickness, the probe's tails. Its extent ends where the smoothed image meets the vacuum's noise,
    # and the vacuum lies a margin beyond that.
    edge = min(level + EDGE_SIGMAS * spread, threshold)
    if contrast >= MIN_CONTRAST:
        farther = use & (_distance_to(use & (smoothed >= edge), pixel_size) > margin)
        if np.count_nonzero(farther) >= MIN_VACUUM_PIXELS:
            vacuum = farther

    raw_labels, n = ndimage.label(above)
    areas = ndimage.sum_labels(np.ones(data.shape), raw_labels, np.arange(1, n + 1)) if n else np.zeros(0)
    min_area = math.pi * (MIN_PARTICLE_RADIUS / pixel_size) ** 2
    keep = [k + 1 for k in np.argsort(-areas, kind="stable") if areas[k] >= min_area]
    lookup = np.zeros(n + 1, dtype=np.int32)
    lookup[keep] = np.arange(1, len(keep) + 1)
    labels = lookup[raw_labels]
    slices = ndimage.find_objects(raw_labels)
    boxes = [(s[0].start, s[0].stop, s[1].start, s[1].stop) for s in (slices[k - 1] for k in keep)]
    m, n_cols = data.shape
    whole = np.array([i0 > 0 and j0 > 0 and i1 < m and j1 < n_cols for i0, i1, j0, j1 in boxes], dtype=bool)
    return Segmentation(smoothed=smoothed, threshold=threshold, edge=float(edge), above=above, vacuum=vacuum,
                        labels=labels,
                        areas=np.array([areas[k - 1] for k in keep], dtype=int), boxes=boxes, whole=whole,
                        contrast=float(contrast), smoothing=float(smoothing), margin=float(margin))


def _distance_to(region: np.ndarray, pixel_size: float) -> np.ndarray:
    """Å from each pixel to the nearest pixel of ``region`` (inf everywhere when it is empty)."""
    from scipy import ndimage

    if not region.any():
        return np.full(region.shape, np.inf)
    return ndimage.distance_transform_edt(~region) * pixel_size


def find_vacuum(data: np.ndarray, segmentation: Segmentation, *, name: str = "image") -> Vacuum:
    """The vacuum of an image: its segmentation's vacuum candidates, checked, and their level and noise.

    ``level`` is their median (file units), ``sigma`` the robust σ of their
    pixel-to-pixel noise, ``standard_error`` = 1.2533·σ/√n (the median's, for
    white noise; scan noise correlated along rows makes it larger).

    Raises
    ------
    InputError
        Fewer than :data:`MIN_VACUUM_PIXELS` candidates, or a low class not
        :data:`MIN_CONTRAST` smoothed σ below the particles (no vacuum in view).
    """
    hint = "; give the vacuum level with --background VALUE (background=VALUE)"
    n = int(np.count_nonzero(segmentation.vacuum))
    if n < MIN_VACUUM_PIXELS:
        raise InputError(f"no vacuum found in {name}: {n} pixels lie more than {segmentation.margin:g} Å from "
                         f"every particle (need {MIN_VACUUM_PIXELS}){hint}")
    if segmentation.contrast < MIN_CONTRAST:
        raise InputError(f"no vacuum found in {name}: its darkest pixels are not a separate level "
                         f"(contrast {segmentation.contrast:.1f} σ < {MIN_CONTRAST:g} σ){hint}")
    values = data[segmentation.vacuum]
    level = float(np.median(values))
    sigma = _robust_sigma(values)
    same = float(np.mean(values == level))
    if same > 0.5:
        log.warning("%.0f %% of the vacuum pixels of %s equal %g exactly: padding rather than vacuum? "
                    "(--mask zeros leaves out pixels equal to 0)", 100 * same, name, level)
    if sigma == 0:
        raise InputError(f"no vacuum found in {name}: its {n} vacuum pixels all equal {level:g}{hint}")
    return Vacuum(pixels=segmentation.vacuum, level=level, sigma=sigma, standard_error=1.2533 * sigma / math.sqrt(n))


def _grow_box(box, margin_px: float, shape) -> tuple:
    """A half-open box grown by ``margin_px`` pixels on every side, clipped to ``shape``."""
    g = int(math.ceil(margin_px))
    i0, i1, j0, j1 = box
    return max(i0 - g, 0), min(i1 + g, shape[0]), max(j0 - g, 0), min(j1 + g, shape[1])


def _check_particles(segmentation: Segmentation, name: str) -> None:
    """InputError unless some particle stands :data:`MIN_CONTRAST` σ out of a vacuum."""
    if segmentation.n_particles == 0 or segmentation.contrast < MIN_CONTRAST:
        raise InputError(f"no particle found in {name}: nothing stands out of a vacuum (contrast "
                         f"{segmentation.contrast:.1f} σ < {MIN_CONTRAST:g} σ); give --crop i0:i1,j0:j1 or a mask file")


def choose_particle(segmentation: Segmentation, rank: int, *, name: str = "image") -> int:
    """The label of the ``rank``-th largest particle wholly in view (1 = largest)."""
    _check_particles(segmentation, name)
    ranked = segmentation.ranked_whole()
    if not ranked:
        cut = segmentation.n_particles
        raise InputError(f"no particle found in {name}: none lies wholly inside the image ({cut} cut by its edge); "
                         "give --crop i0:i1,j0:j1")
    if rank > len(ranked):
        raise InputError(f"crop particle:{rank}: only {len(ranked)} particle(s) lie wholly inside {name}")
    return ranked[rank - 1]


def _distances(segmentation: Segmentation, label: int, window) -> tuple:
    """Pixels from the particle ``label`` and from every other bright pixel (specks included), within ``window``."""
    from scipy import ndimage

    i0, i1, j0, j1 = window
    target = segmentation.labels[i0:i1, j0:j1] == label
    others = segmentation.above[i0:i1, j0:j1] & ~target
    d_target = ndimage.distance_transform_edt(~target) if target.any() else np.full(target.shape, np.inf)
    d_others = ndimage.distance_transform_edt(~others) if others.any() else np.full(target.shape, np.inf)
    return target, d_target, d_others


def particle_edge(segmentation: Segmentation, label: int, pixel_size: float) -> float:
    """Å from Otsu's boundary of particle ``label`` out to where its edge meets the vacuum's noise.

    The median of the smoothed image over rings 0.5 Å wide around the
    particle (pixels nearer to it than to any other bright pixel) falls below
    :attr:`Segmentation.edge` at this distance; at most :data:`MAX_EDGE`.
    """
    reach_px = MAX_EDGE / pixel_size
    window = _grow_box(segmentation.boxes[label - 1], reach_px + 2, segmentation.labels.shape)
    target, d_target, d_others = _distances(segmentation, label, window)
    i0, i1, j0, j1 = window
    smoothed = segmentation.smoothed[i0:i1, j0:j1]
    own = (d_target < d_others) & np.isfinite(smoothed) & ~target
    width = max(1.0, 0.5 / pixel_size)
    d = d_target[own]
    values = smoothed[own]
    for r in np.arange(0.0, reach_px, width):
        ring = values[(d > r) & (d <= r + width)]
        if ring.size and np.median(ring) < segmentation.edge:
            return float(r * pixel_size)
    log.warning("the particle's edge reaches more than %g Å beyond its threshold (a brighter background "
                "around it?); its extent is cut there", MAX_EDGE)
    return MAX_EDGE


def particle_mask(segmentation: Segmentation, label: int, pixel_size: float, *, reach: float,
                  valid: np.ndarray | None = None, window: tuple | None = None) -> np.ndarray:
    """Pixels to fit for particle ``label``: it and the pixels within ``reach`` Å of it nearer to it than to any other.

    ``reach`` is its edge (:func:`particle_edge`) plus the margin of vacuum.
    Vacuum shared with a neighbouring particle is split half-way (nearest
    particle), so the particle's own edge is kept and its neighbour's is not.
    Returns a bool array of the image's shape (True = used), computed within
    ``window`` (i0, i1, j0, j1; default the particle's box grown by ``reach``).
    """
    labels = segmentation.labels
    reach_px = reach / pixel_size
    if window is None:
        window = _grow_box(segmentation.boxes[label - 1], reach_px + 1, labels.shape)
    # others just outside the window still claim pixels inside it: look a reach further
    outer = _grow_box(window, reach_px + 1, labels.shape)
    target, d_target, d_others = _distances(segmentation, label, outer)
    i0, i1, j0, j1 = outer
    mask = np.zeros(labels.shape, dtype=bool)
    mask[i0:i1, j0:j1] = ((d_target <= reach_px) & (d_target < d_others)) | target
    box = np.zeros_like(mask)
    box[window[0]:window[1], window[2]:window[3]] = True
    mask &= box
    if valid is not None:
        mask &= valid
    return mask


def normalise_detector(data: np.ndarray, detector: Detector, background: float | None) -> tuple[np.ndarray, float]:
    """(I − b) / scale, and b: the measured ``background`` when there is one, else the detector's vacuum level (or 0)."""
    b = background if background is not None else (detector.vacuum if detector.vacuum is not None else 0.0)
    return (data - b) / detector.scale, float(b)


# --------------------------------------------------------------------------- the whole preparation

def _record(steps: list, step: str, parameters: dict, values: dict, message: str, *args) -> None:
    steps.append({"step": step, "parameters": parameters, "values": values})
    log.info("%s: " + message, step, *args)


def prepare_image(source, *, pixel_size: float | None = None, target_pixel_size: float | None = None, mask=None,
                  crop=None, background=None, detector=None, particle_margin: float = MARGIN,
                  smoothing: float = SMOOTHING, resample_images: bool = True, rtol: float = 1e-3, order: int = 3,
                  signal=None, frame: int | None = None, origin=None) -> ExperimentalImage:
    """Read a raw image and prepare it for the fitness: background, normalisation, mask, crop, resampling.

    Parameters
    ----------
    source, pixel_size, target_pixel_size, resample_images, rtol, order, signal, frame, origin
        As for :func:`refine.io.read_image`.
    mask : array_like, path, "zeros", "auto" or None
        As for :func:`read_image`, or ``"auto"``: the particle mask (module docstring, step 3).
    crop : str, (i0, i1, j0, j1) or None
        ``"i0:i1,j0:j1"`` or a tuple (file pixels), ``"auto"``, ``"particle:K"`` (:func:`parse_crop`).
    background : None, "none", "vacuum" or float
        Subtracted first (:func:`parse_background`), file units.
    detector : None, float, "VAC,BEAM" or (VAC, BEAM)
        Normalisation to a fraction of the incident beam (:func:`parse_detector`).
    particle_margin : float
        Å of vacuum kept around the particle by the automatic mask and crop;
        also the least distance of a vacuum pixel from a particle.
    smoothing : float
        Å, σ of the Gaussian before the particle threshold.

    Returns
    -------
    ExperimentalImage
        With ``metadata["preparation"]`` (list of steps) and ``metadata["beam_units"]``.

    Raises
    ------
    InputError
        As :func:`read_image`, and: a crop outside the image, no vacuum found,
        no particle found (for ``crop="auto"``/``mask="auto"``), detector levels
        with BEAM ≤ VAC, a bad margin.
    """
    bg = parse_background(background)
    det = parse_detector(detector)
    cut = parse_crop(crop)
    margin = parse_margin(particle_margin)
    auto_mask = isinstance(mask, str) and mask.strip().lower() == "auto"
    read = dict(pixel_size=pixel_size, signal=signal, frame=frame, origin=origin)
    finish = dict(target_pixel_size=target_pixel_size, resample_images=resample_images, rtol=rtol, order=order)
    steps: list = []
    if bg is None and det is None and not auto_mask and (cut is None or cut.box is not None):
        # nothing to measure on the image: read_image does it all, exactly as without preparation
        image = read_image(source, mask=mask, crop=None if cut is None else cut.box, **read, **finish)
        _record_unmeasured(steps, image, cut)
        return replace(image, metadata={**image.metadata, "preparation": steps, "beam_units": False})

    raw = read_image(source, mask=None if auto_mask else mask, **read)
    name = raw.source if raw.source != "<array>" else "the image"
    data, valid, step = raw.data, raw.mask, raw.pixel_size
    if cut is not None and cut.box is not None:
        _validate_crop(cut.box, data.shape)
    steps.append({"step": "read", "parameters": {"source": raw.source, "signal": signal, "frame": frame,
                                                 "pixel_size": step, "origin": list(raw.origin)},
                  "values": {"shape": list(data.shape), "min": float(data[valid].min()),
                             "max": float(data[valid].max())}})
    seg = segment_particles(data, valid, step, smoothing=smoothing, margin=margin)
    seg_parameters = {"smoothing_A": seg.smoothing, "margin_A": margin}
    seg_values = {"threshold": seg.threshold, "edge_threshold": seg.edge, "contrast": seg.contrast, "particles": seg.n_particles,
                  "whole_particles": len(seg.ranked_whole())}

    # 1. background
    offset = None
    if bg == "vacuum":
        vac = find_vacuum(data, seg, name=name)
        offset = vac.level
        _record(steps, "background", {"method": "vacuum", **seg_parameters},
                {"offset": vac.level, "offset_standard_error": vac.standard_error, "noise_sigma": vac.sigma,
                 "n_vacuum_pixels": vac.n, **seg_values},
                "vacuum level %.6g ± %.2g subtracted (noise σ %.4g, %d vacuum pixels, threshold %.6g)",
                vac.level, vac.standard_error, vac.sigma, vac.n, seg.threshold)
    elif bg is not None:
        offset = float(bg)
        _record(steps, "background", {"method": "value", "value": offset}, {"offset": offset},
                "%.6g subtracted (given)", offset)
    else:
        _record(steps, "background", {"method": "none"}, {"offset": 0.0}, "none subtracted (the fitness fits b)")
    prepared = data - offset if offset is not None else data.copy()

    # 2. normalisation
    if det is not None:
        prepared, b = normalise_detector(data, det, offset)
        values = {"scale": det.scale, "offset": b, "beam_units": True}
        if det.vacuum is not None and offset is not None:
            values["detector_vacuum_minus_image_background"] = det.vacuum - offset
        if bg == "vacuum":
            values["noise_sigma_beam"] = steps[-1]["values"]["noise_sigma"] / det.scale
        params = ({"method": "detector_levels", "vacuum": det.vacuum, "beam": det.beam} if det.vacuum is not None
                  else {"method": "detector_scale", "scale": det.scale})
        _record(steps, "normalisation", params, values,
                "I_norm = (I − %.6g) / %.6g (fraction of the incident beam, %s)", b, det.scale, params["method"])
    else:
        _record_unnormalised(steps)

    # 3.–4. crop choice and mask, on the file's pixels
    label = None
    if cut is not None and cut.particle is not None:
        label = choose_particle(seg, cut.particle, name=name)
        particle, edge = seg.boxes[label - 1], particle_edge(seg, label, step)
        box = _grow_box(particle, (edge + margin) / step, data.shape)
        _record(steps, "crop", {"method": str(cut), **seg_parameters},
                {"box": list(box), "particle_box": list(particle), "particle_area_px": int(seg.areas[label - 1]),
                 "particle_size_A": _box_size(particle, step), "edge_A": edge, **seg_values},
                "particle %d of %d wholly in view (%.1f × %.1f Å at the threshold, edge %.2g Å), box %s with "
                "%.3g Å margin", cut.particle, len(seg.ranked_whole()), *_box_size(particle, step), edge,
                _box_text(box), margin)
        if box != _grow_box(particle, (edge + margin) / step, (math.inf, math.inf)):
            log.warning("crop: the %.3g Å margin around the particle is cut by the image edge", margin)
    elif cut is not None:
        box = cut.box
        _record(steps, "crop", {"method": "box"}, {"box": list(box)}, "box %s (given)", _box_text(box))
    else:
        box = (0, data.shape[0], 0, data.shape[1])
    if auto_mask:
        if label is None:
            label = _largest_in(seg, box, name)
        edge = particle_edge(seg, label, step)
        valid = particle_mask(seg, label, step, reach=edge + margin, valid=valid, window=box)
        _record(steps, "mask", {"method": "auto", **seg_parameters},
                {"particle_box": list(seg.boxes[label - 1]), "edge_A": edge, "n_valid_file_px": int(valid.sum()),
                 **seg_values},
                "particle %s, its %.2g Å edge and %.3g Å of vacuum: %d file pixels used",
                _box_text(seg.boxes[label - 1]), edge, margin, int(valid.sum()))
    elif label is not None:
        i0, i1, j0, j1 = box
        intruders = int(np.count_nonzero(seg.above[i0:i1, j0:j1] & (seg.labels[i0:i1, j0:j1] != label)))
        if intruders:
            log.warning("crop: %d pixels of other particles lie in the box; --mask auto leaves them out", intruders)

    # 5. crop and resample, through read_image (it records crop and resampled)
    crop_box = None if cut is None else tuple(box)
    image = read_image(prepared, pixel_size=step, origin=raw.origin, mask=valid, crop=crop_box, **finish)
    meta = dict(raw.metadata)
    for key in ("crop", "resampled"):
        if key in image.metadata:
            meta[key] = image.metadata[key]
    _record_resample(steps, image)
    meta["preparation"] = steps
    meta["beam_units"] = det is not None
    return replace(image, source=raw.source, metadata=meta)


def _largest_in(seg: Segmentation, box, name) -> int:
    """The largest whole particle inside ``box``, else the largest reaching into it."""
    _check_particles(seg, name)
    i0, i1, j0, j1 = box
    inside = [k for k in seg.ranked_whole()
              if seg.boxes[k - 1][0] >= i0 and seg.boxes[k - 1][1] <= i1
              and seg.boxes[k - 1][2] >= j0 and seg.boxes[k - 1][3] <= j1]
    if inside:
        return inside[0]
    present = np.unique(seg.labels[i0:i1, j0:j1])
    present = present[present > 0]
    if present.size == 0:
        raise InputError(f"no particle found in {name} for mask 'auto' (nothing stands out of the vacuum in "
                         f"{_box_text(box)}); give a mask file")
    log.warning("mask: no particle lies wholly inside %s; masking the largest one there, cut by the edge",
                _box_text(box))
    return int(present.min())


def _box_size(box, step) -> list:
    return [round((box[1] - box[0]) * step, 3), round((box[3] - box[2]) * step, 3)]


def _box_text(box) -> str:
    return f"{box[0]}:{box[1]},{box[2]}:{box[3]}"


def _record_unnormalised(steps: list) -> None:
    _record(steps, "normalisation", {"method": "fitted"},
            {"beam_units": False, "note": "the scale is left to the fitness's closed-form fit of a·I_sim + b; "
                                          "a Poisson noise model with a dose assumes beam units"},
            "none: the fitness fits the scale a of a·I_sim + b (beam units only with --detector-*)")


def _record_unmeasured(steps: list, image: ExperimentalImage, cut) -> None:
    """The record of a preparation that measured nothing (read_image did crop and resampling)."""
    _record(steps, "background", {"method": "none"}, {"offset": 0.0}, "none subtracted (the fitness fits b)")
    _record_unnormalised(steps)
    if cut is not None:
        _record(steps, "crop", {"method": "box"}, {"box": list(cut.box)}, "box %s (given)", _box_text(cut.box))
    _record_resample(steps, image)


def _record_resample(steps: list, image: ExperimentalImage) -> None:
    res = image.metadata.get("resampled")
    if res:
        _record(steps, "resample", {"to_pixel_size": res["to_pixel_size"], "order": res["order"]},
                {"from_pixel_size": res["from_pixel_size"], "shape": list(image.shape)},
                "%.6g Å → %.6g Å, %s px", res["from_pixel_size"], res["to_pixel_size"], image.shape)
    else:
        _record(steps, "resample", {"to_pixel_size": image.pixel_size}, {"shape": list(image.shape)},
                "none needed (%.6g Å), %s px", image.pixel_size, image.shape)
