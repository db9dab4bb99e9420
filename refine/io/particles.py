"""Particles and vacuum in a HAADF image: what :func:`refine.io.prepare_image` measures before it cuts.

:func:`segment_particles` smooths the image by a Gaussian of ``SMOOTHING`` Å
(atomic columns merge into a particle; excluded pixels take no part:
normalised convolution), splits it at Otsu's threshold (IEEE Trans. SMC 9,
62, 1979) between vacuum and particle, groups connected pixels and drops
groups smaller than a disc of ``MIN_PARTICLE_RADIUS`` Å (noise). Particles
are ranked by area; one touching the image edge is not *whole* (not all of
its atoms are in view) and is never chosen.

Otsu's threshold lies half-way up a particle's edge; its edge (projected
thickness going to 0, the probe's tails) reaches further, to where the
smoothed image meets the vacuum's noise (:func:`particle_edge`: vacuum level +
``EDGE_SIGMAS`` σ). The **vacuum** is every valid pixel more than a margin
beyond that (:func:`find_vacuum`, which refuses an image whose dark pixels
are not a level of their own: no vacuum in view). :func:`particle_mask` keeps
a particle, its edge and a margin of vacuum, split half-way from its
neighbours. :func:`zero_padding` finds blocks of exact zeros (StatSTEM pads
its files so).

Lengths in Å; pixel indices of the image; intensities in its units.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from surrogate.common import InputError

__all__ = [
    "MARGIN",
    "SMOOTHING",
    "Segmentation",
    "Vacuum",
    "choose_particle",
    "box_text",
    "find_vacuum",
    "grow_box",
    "largest_in",
    "particle_edge",
    "particle_mask",
    "segment_particles",
    "zero_padding",
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
#: vacuum pixels farther than this many robust σ from the vacuum's median are left out of its mean
CLIP_SIGMAS = 8.0
#: fewest vacuum pixels whose mean is a background level
MIN_VACUUM_PIXELS = 100
#: the particle class must lie this many (smoothed) vacuum σ above the vacuum to call the low class vacuum
MIN_CONTRAST = 5.0



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
    """Vacuum pixels (bool, shape (M, N)), their mean ``level``, noise ``sigma`` and the level's standard error."""

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

    ``level`` is their mean (file units) within :data:`CLIP_SIGMAS` robust σ
    of their median (the expected intensity, also for skewed low-dose counts),
    ``sigma`` their standard deviation (pixel-to-pixel noise) over the same
    pixels, ``standard_error`` = σ/√n (for white noise; scan noise correlated
    along rows makes it larger).

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
    median = float(np.median(values))
    sigma = _robust_sigma(values)
    same = float(np.mean(values == median))
    if same > 0.5 and _flat_fraction(data, segmentation.vacuum, median) > 0.9:
        log.warning("%.0f %% of the vacuum pixels of %s equal %g exactly: padding rather than vacuum? "
                    "(--mask zeros leaves out pixels equal to 0)", 100 * same, name, median)
    if sigma == 0:
        raise InputError(f"no vacuum found in {name}: its {n} vacuum pixels all equal {median:g} (padding? "
                         f"--mask zeros leaves out pixels equal to 0){hint}")
    # the mean, not the median: the surrogate's vacuum 0 is an expected intensity, and the median of skewed
    # noise (low-dose Poisson counts) is not; clipped at 8 σ so that a hot pixel or a speck does not move it
    kept = values[np.abs(values - median) <= CLIP_SIGMAS * sigma]
    level = float(np.mean(kept))
    return Vacuum(pixels=segmentation.vacuum, level=level, sigma=float(np.std(kept)),
                  standard_error=float(np.std(kept)) / math.sqrt(kept.size))


def zero_padding(data: np.ndarray) -> np.ndarray:
    """Pixels equal to 0 that touch a block of zeros (all 4 neighbours 0), when such blocks are ≥ 1 % of the image."""
    from scipy import ndimage

    zero = data == 0
    flat = zero.copy()
    flat[1:] &= zero[:-1]
    flat[:-1] &= zero[1:]
    flat[:, 1:] &= zero[:, :-1]
    flat[:, :-1] &= zero[:, 1:]
    if np.count_nonzero(flat) < 0.01 * data.size:
        return np.zeros(data.shape, dtype=bool)
    return zero & ndimage.binary_dilation(flat)


def _flat_fraction(data: np.ndarray, where: np.ndarray, value: float) -> float:
    """Of the pixels in ``where`` equal to ``value``, the fraction whose 4 neighbours equal it too.

    ≈ 1 for padding (a block of one value); small for low counts, where zeros lie among ones.
    """
    eq = data == value
    flat = eq.copy()
    flat[1:] &= eq[:-1]
    flat[:-1] &= eq[1:]
    flat[:, 1:] &= eq[:, :-1]
    flat[:, :-1] &= eq[:, 1:]
    n = np.count_nonzero(eq & where)
    return float(np.count_nonzero(flat & where)) / n if n else 0.0


def grow_box(box, margin_px: float, shape) -> tuple:
    """A half-open box grown by ``margin_px`` pixels on every side, clipped to ``shape``."""
    g = int(math.ceil(margin_px))
    i0, i1, j0, j1 = box
    return max(i0 - g, 0), min(i1 + g, shape[0]), max(j0 - g, 0), min(j1 + g, shape[1])


def _check_particles(segmentation: Segmentation, name: str) -> None:
    """InputError unless some particle stands :data:`MIN_CONTRAST` σ out of a vacuum."""
    if segmentation.n_particles == 0 or segmentation.contrast < MIN_CONTRAST:
        raise InputError(f"no particle found in {name}: nothing stands out of a vacuum (contrast "
                         f"{segmentation.contrast:.1f} σ < {MIN_CONTRAST:g} σ); give --crop i0:i1,j0:j1 or a "
                         "mask file")


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
    window = grow_box(segmentation.boxes[label - 1], reach_px + 2, segmentation.labels.shape)
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

    ``reach`` is its edge (:func:`particle_edge`) plus the margin of vacuum;
    only the pixels connected to the particle are kept.
    Vacuum shared with a neighbouring particle is split half-way (nearest
    particle), so the particle's own edge is kept and its neighbour's is not.
    Returns a bool array of the image's shape (True = used), computed within
    ``window`` (i0, i1, j0, j1; default the particle's box grown by ``reach``).
    """
    from scipy import ndimage

    labels = segmentation.labels
    reach_px = reach / pixel_size
    if window is None:
        window = grow_box(segmentation.boxes[label - 1], reach_px + 1, labels.shape)
    # others just outside the window still claim pixels inside it: look a reach further
    outer = grow_box(window, reach_px + 1, labels.shape)
    target, d_target, d_others = _distances(segmentation, label, outer)
    i0, i1, j0, j1 = outer
    mask = np.zeros(labels.shape, dtype=bool)
    mask[i0:i1, j0:j1] = ((d_target <= reach_px) & (d_target < d_others)) | target
    box = np.zeros_like(mask)
    box[window[0]:window[1], window[2]:window[3]] = True
    mask &= box
    if valid is not None:
        mask &= valid
    # one piece: islands of vacuum cut off from the particle by excluded pixels are no help to its fit
    pieces, _ = ndimage.label(mask)
    keep = np.unique(pieces[labels == label])
    return np.isin(pieces, keep[keep > 0])


def largest_in(seg: Segmentation, box, name: str = "image") -> int:
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
                         f"{box_text(box)}); give a mask file")
    log.warning("mask: no particle lies wholly inside %s; masking the largest one there, cut by the edge",
                box_text(box))
    return int(present.min())


def box_text(box) -> str:
    return f"{box[0]}:{box[1]},{box[2]}:{box[3]}"
