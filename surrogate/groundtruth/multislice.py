"""Ground-truth HAADF-STEM images with abTEM (frozen-phonon multislice or PRISM).

Microscope defaults follow Combs et al. 2019 ("Dataset"): 200 kV, 24.5 mrad
convergence semi-angle, Cs = 1.2 µm (all other aberrations 0), annular
detector 50–150 mrad, 16 frozen-phonon configurations, and the multislice
image "embedded in a uniform background and convolved with a Gaussian with
width of 88 pm".

Source size: σ or FWHM?
-----------------------
We read the paper's "width of 88 pm" as the **FWHM** of the source-size
Gaussian, i.e. σ = 0.88 Å / (2·sqrt(2 ln 2)) = 0.374 Å. Two reasons: (i) the
same paper approximates the whole probe PSF of the convolution method by a
normalized Gaussian of σ = 0.38 Å and says the incoherent source dominates the
probe size — a 0.88 Å *σ* would be 2.3× that; (ii) Kirkland's ``autostem``
(the code the paper used) takes its source size as a FWHM. ``source_fwhm``
is a parameter, so a user who reads it differently sets 2.355·0.88 Å.

Pixel grid
----------
The image is sampled on a :class:`~surrogate.imaging.grid.ProbeGrid`:
``image[i, j]`` is the probe at ``(x0 + iΔ, y0 + jΔ)`` in the *atoms'*
coordinates, exactly as :func:`surrogate.imaging.convolution.convolution_image`. To get
there the atoms are translated into a periodic cell with ``cell_padding`` Å of
vacuum around the scanned area, and abTEM's :class:`abtem.GridScan` runs from
``start = pad`` with ``gpts = grid.shape`` and ``endpoint=False`` so that its
positions are ``pad + iΔ`` — the translated probe grid, pixel for pixel.

Intensities
-----------
abTEM normalizes each probe to unit total intensity, so a pixel is the
fraction of the incident beam scattered into the detector (dimensionless).
The source-size blur conserves that (normalized Gaussian).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from surrogate.common import InputError
from surrogate.imaging import ProbeGrid

__all__ = [
    "HAADFParameters",
    "haadf_image",
    "max_scattering_angle",
    "DEFAULT_PHONON_SIGMAS",
    "FWHM_TO_SIGMA",
]

logger = logging.getLogger(__name__)

#: σ = FWHM · FWHM_TO_SIGMA for a Gaussian.
FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))

#: Å, rms displacement along each Cartesian direction for frozen phonons,
#: σ = sqrt(B / 8π²) from room-temperature Debye–Waller factors
#: (Pt: B ≈ 0.32 Å², Mo: B ≈ 0.20 Å²; Peng, Ren, Dudarev & Whelan,
#: Acta Cryst. A52, 456 (1996), 300 K). Elements not listed use
#: :data:`FALLBACK_PHONON_SIGMA`.
DEFAULT_PHONON_SIGMAS = {"Pt": 0.064, "Mo": 0.050}
#: Å, rms displacement used for elements without a tabulated value.
FALLBACK_PHONON_SIGMA = 0.07

_METHODS = ("prism", "multislice")
_DEVICES = ("cpu", "gpu")


@dataclass(frozen=True)
class HAADFParameters:
    """Microscope and simulation settings of a HAADF image; recorded in dataset files.

    Parameters
    ----------
    method : {"prism", "multislice"}
        PRISM (Ophus 2017) with Fourier ``interpolation``, or the conventional
        probe-by-probe multislice.
    interpolation : int
        PRISM interpolation factor f (ignored for ``multislice``). The probe
        window is the cell extent / f, so larger f is faster and less exact.
    phonons : int
        Number of frozen-phonon configurations averaged.
    phonon_sigmas : dict
        Per-element rms displacement (Å) along each of x, y, z.
    energy : float
        Beam energy in eV (200e3 = 200 kV acceleration voltage).
    semiangle : float
        Probe convergence semi-angle in mrad.
    Cs : float
        Spherical aberration in Å (1.2e4 Å = 1.2 µm). Defocus and all other
        aberrations are 0.
    detector : (float, float)
        Inner and outer annular detector angles in mrad.
    source_fwhm : float
        FWHM in Å of the Gaussian source-size blur applied to the image
        (0 for none); see the module docstring for why FWHM.
    potential_sampling : float
        Real-space sampling of the potential and wave functions in Å. Must
        resolve the detector's outer angle (checked).
    slice_thickness : float
        Multislice slice thickness in Å.
    cell_padding : float
        Å of vacuum between the scanned area and the periodic cell's edges.
    parametrization : str
        abTEM atomic potential parametrization.
    """

    method: str = "prism"
    interpolation: int = 4
    phonons: int = 16
    phonon_sigmas: dict = field(default_factory=lambda: dict(DEFAULT_PHONON_SIGMAS))
    energy: float = 200e3
    semiangle: float = 24.5
    Cs: float = 1.2e4
    detector: tuple = (50.0, 150.0)
    source_fwhm: float = 0.88
    potential_sampling: float = 0.05
    slice_thickness: float = 2.0
    cell_padding: float = 3.0
    parametrization: str = "lobato"

    def __post_init__(self):
        if self.method not in _METHODS:
            raise InputError(f"method must be one of {_METHODS}, got {self.method!r}")
        if int(self.interpolation) != self.interpolation or self.interpolation < 1:
            raise InputError(f"PRISM interpolation must be a positive integer, got {self.interpolation!r}")
        if int(self.phonons) != self.phonons or self.phonons < 1:
            raise InputError(f"number of frozen phonons must be a positive integer, got {self.phonons!r}")
        for name in ("energy", "semiangle", "potential_sampling", "slice_thickness"):
            v = getattr(self, name)
            if not (np.isfinite(v) and v > 0):
                raise InputError(f"{name} must be a positive number, got {v!r}")
        for name in ("Cs", "source_fwhm", "cell_padding"):
            v = getattr(self, name)
            if not np.isfinite(v) or (name != "Cs" and v < 0):
                raise InputError(f"{name} must be a finite{'' if name == 'Cs' else ' non-negative'} number, got {v!r}")
        det = tuple(float(a) for a in self.detector)
        if len(det) != 2 or not (0 <= det[0] < det[1]):
            raise InputError(f"detector must be (inner, outer) mrad with 0 <= inner < outer, got {self.detector!r}")
        object.__setattr__(self, "detector", det)
        object.__setattr__(self, "interpolation", int(self.interpolation))
        object.__setattr__(self, "phonons", int(self.phonons))
        sig = {str(k): float(v) for k, v in dict(self.phonon_sigmas).items()}
        if any(not (np.isfinite(v) and v >= 0) for v in sig.values()):
            raise InputError(f"phonon displacements must be non-negative Å, got {self.phonon_sigmas!r}")
        object.__setattr__(self, "phonon_sigmas", sig)
        limit = max_scattering_angle(self.energy, self.potential_sampling)
        if det[1] > limit:
            raise InputError(
                f"detector outer angle {det[1]:g} mrad exceeds the largest angle the potential sampling "
                f"{self.potential_sampling:g} Å simulates ({limit:.1f} mrad at {self.energy / 1e3:g} kV); "
                f"use a potential sampling <= {_sampling_for_angle(self.energy, det[1]):.4f} Å"
            )

    @property
    def source_sigma(self) -> float:
        """Standard deviation (Å) of the source-size Gaussian."""
        return self.source_fwhm * FWHM_TO_SIGMA

    def to_dict(self) -> dict:
        d = asdict(self)
        d["detector"] = list(self.detector)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "HAADFParameters":
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        if "detector" in known:
            known["detector"] = tuple(known["detector"])
        return cls(**known)


def _wavelength(energy: float) -> float:
    """Relativistic electron wavelength (Å) at ``energy`` eV."""
    from ase.units import _c, _e, _hplanck, _me

    e = energy * _e
    return _hplanck * _c / math.sqrt(e * (2 * _me * _c**2 + e)) * 1e10


def max_scattering_angle(energy: float, sampling: float) -> float:
    """Largest scattering angle (mrad) simulated at ``sampling`` Å and ``energy`` eV.

    abTEM band-limits waves to 2/3 of the Nyquist frequency 1/(2·sampling) to
    avoid aliasing, so the limit is λ · (2/3) / (2·sampling).
    """
    return 1e3 * _wavelength(energy) * (2.0 / 3.0) / (2.0 * sampling)


def _sampling_for_angle(energy: float, angle: float) -> float:
    return 1e3 * _wavelength(energy) * (2.0 / 3.0) / (2.0 * angle)


def _phonon_sigma_map(params: HAADFParameters, symbols) -> dict:
    return {s: params.phonon_sigmas.get(s, FALLBACK_PHONON_SIGMA) for s in sorted(set(symbols))}


def _seeds(seed, n: int) -> list[int]:
    # One independent integer seed per frozen-phonon configuration; a Generator
    # passed in is advanced, never the global state.
    if isinstance(seed, np.random.Generator):
        rng = seed
    elif seed is None or isinstance(seed, (int, np.integer)):
        rng = np.random.default_rng(seed)
    else:
        raise InputError(f"seed must be an int, None or a numpy Generator, got {type(seed).__name__}")
    return [int(s) for s in rng.integers(0, 2**31 - 1, size=n)]


def _nice_gpts(n: int, multiple: int) -> int:
    # FFT sizes with small prime factors, divisible by the PRISM interpolation.
    n = int(math.ceil(n / multiple)) * multiple
    while True:
        m = n
        for p in (2, 3, 5, 7):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += multiple


def simulation_cell(atoms, grid: ProbeGrid, params: HAADFParameters):
    """The atoms translated into abTEM's periodic cell, and the scan's start (Å).

    Returns
    -------
    atoms : ase.Atoms
        Copy, with pixel ``(0, 0)``'s probe position mapped to ``(pad, pad)``,
        a cell of ``gpts × potential_sampling`` Å laterally and the particle's
        thickness + 2 Å along z; ``pbc`` True.
    gpts : (int, int)
        Potential grid points.
    start : (float, float)
        Scan start in cell coordinates.
    """
    pad = params.cell_padding
    a = atoms.copy()
    a.calc = None
    pos = a.positions
    zmin, zmax = (pos[:, 2].min(), pos[:, 2].max()) if len(a) else (0.0, 0.0)
    shift = np.array([pad - grid.origin[0], pad - grid.origin[1], 1.0 - zmin])
    a.positions = pos + shift
    f = params.interpolation if params.method == "prism" else 1
    gpts = []
    for n in grid.shape:
        length = n * grid.pixel_size + 2 * pad
        gpts.append(_nice_gpts(int(math.ceil(length / params.potential_sampling)), 2 * f))
    extent = [g * params.potential_sampling for g in gpts]
    a.set_cell([extent[0], extent[1], (zmax - zmin) + 2.0])
    a.pbc = True
    xy = a.positions[:, :2]
    if len(a) and (xy.min() < 0 or xy[:, 0].max() >= extent[0] or xy[:, 1].max() >= extent[1]):
        logger.warning("atoms lie outside the scanned area plus padding; they wrap around the periodic cell")
    return a, tuple(gpts), (pad, pad)


def haadf_image(atoms, grid: ProbeGrid | None = None, params: HAADFParameters | None = None, *,
                seed=None, device: str = "cpu", num_threads: int | None = None,
                progress: bool = False, cell_grid: ProbeGrid | None = None, **overrides) -> np.ndarray:
    """HAADF-STEM image of a structure on a probe grid.

    Parameters
    ----------
    atoms : ase.Atoms
        Structure, positions in Å, beam along z.
    grid : ProbeGrid, optional
        Probe positions; default :meth:`ProbeGrid.around` the atoms (4 Å margin,
        0.1 Å pixels).
    params : HAADFParameters, optional
        Microscope and simulation settings (paper defaults).
    seed : int, numpy.random.Generator or None
        Seeds the frozen-phonon displacements; the same seed gives the same image.
    device : {"cpu", "gpu"}
        "gpu" needs CuPy; it is never required.
    num_threads : int, optional
        Threads of the local Dask scheduler abTEM computes with (default: all cores).
        abTEM always computes with a local threaded scheduler here, so the
        function can itself run inside a Dask distributed worker.
    progress : bool
        Show abTEM's task progress bar (tqdm, stderr).
    cell_grid : ProbeGrid, optional
        The grid whose extent (plus ``cell_padding``) defines the periodic
        simulation cell; default ``grid``. Give the full image's grid to
        simulate only a patch ``grid`` of it in exactly the same cell (as the
        benchmark does); ``grid`` must lie inside ``cell_grid``.
    **overrides
        Fields of :class:`HAADFParameters` to change, e.g. ``method="multislice"``,
        ``interpolation=2``, ``phonons=4``.

    Returns
    -------
    ndarray of float64, shape ``grid.shape``
        Fraction of the incident beam reaching the detector at each probe position.
    """
    import abtem

    try:
        params = replace(params or HAADFParameters(), **overrides)
    except TypeError as exc:
        raise InputError(f"unknown HAADF parameter: {exc}") from None
    if device not in _DEVICES:
        raise InputError(f"device must be 'cpu' or 'gpu', got {device!r}")
    if device == "gpu":
        try:
            import cupy  # noqa: F401
        except ImportError:
            raise InputError("device='gpu' needs CuPy, which is not installed; use device='cpu'") from None
    if len(atoms) == 0:
        raise InputError("cannot simulate a structure with no atoms")
    if not np.all(np.isfinite(atoms.positions)):
        raise InputError("structure has non-finite atomic positions")
    if grid is None:
        grid = ProbeGrid.around(atoms)

    if cell_grid is None:
        cell_grid = grid
    elif not np.isclose(cell_grid.pixel_size, grid.pixel_size):
        raise InputError("cell_grid and grid must have the same pixel size")
    cell_atoms, gpts, start = simulation_cell(atoms, cell_grid, params)
    offset = (grid.origin[0] - cell_grid.origin[0], grid.origin[1] - cell_grid.origin[1])
    if min(offset) < -1e-9 or any(o + n * grid.pixel_size > m * cell_grid.pixel_size + 1e-9
                                  for o, n, m in zip(offset, grid.shape, cell_grid.shape)):
        raise InputError("the scanned grid must lie inside cell_grid")
    start = (start[0] + offset[0], start[1] + offset[1])
    end = (start[0] + grid.shape[0] * grid.pixel_size, start[1] + grid.shape[1] * grid.pixel_size)
    t0 = time.perf_counter()

    phonons = abtem.FrozenPhonons(
        cell_atoms, num_configs=params.phonons,
        sigmas=_phonon_sigma_map(params, cell_atoms.get_chemical_symbols()),
        seed=_seeds(seed, params.phonons),
    )
    potential = abtem.Potential(
        phonons, gpts=gpts, slice_thickness=params.slice_thickness,
        parametrization=params.parametrization, projection="infinite", device=device,
    )
    scan = abtem.GridScan(start=start, end=end, gpts=grid.shape, endpoint=False)
    detector = abtem.AnnularDetector(inner=params.detector[0], outer=params.detector[1])
    ctf = abtem.CTF(Cs=params.Cs, energy=params.energy, semiangle_cutoff=params.semiangle)
    if params.method == "prism":
        smatrix = abtem.SMatrix(potential=potential, energy=params.energy, semiangle_cutoff=params.semiangle,
                                interpolation=params.interpolation, device=device)
        measurement = smatrix.scan(scan=scan, detectors=detector, ctf=ctf)
    else:
        probe = abtem.Probe(energy=params.energy, semiangle_cutoff=params.semiangle, Cs=params.Cs, device=device)
        measurement = probe.scan(potential, scan=scan, detectors=detector)

    # A local threaded scheduler, not any distributed Client that may be active:
    # the builder runs this function inside Dask workers.
    n = num_threads or None
    measurement = measurement.compute(scheduler="threads", num_workers=n,
                                      progress_bar="tqdm" if progress else False)
    array = measurement.array
    if device == "gpu":
        import cupy

        array = cupy.asnumpy(array)
    image = np.array(array, dtype=np.float64)
    if image.shape != grid.shape:  # pragma: no cover - guards abTEM behaviour changes
        raise RuntimeError(f"abTEM returned an image of shape {image.shape}, expected {grid.shape}")
    image = apply_source_size(image, grid.pixel_size, params.source_sigma)
    logger.info("%s HAADF of %d atoms on %s pixels, %d phonons: %.1f s", params.method, len(atoms),
                grid.shape, params.phonons, time.perf_counter() - t0)
    return image


def apply_source_size(image: np.ndarray, pixel_size: float, sigma: float) -> np.ndarray:
    """Blur an image by the Gaussian source size, as the paper does.

    The image is embedded in a uniform background (the median of its border
    pixels — vacuum for a grid with a margin around the particle), convolved
    with a normalized Gaussian of standard deviation ``sigma`` Å, and cropped
    back to its own shape.
    """
    if sigma <= 0:
        return image
    from scipy.ndimage import gaussian_filter

    border = np.concatenate([image[0], image[-1], image[1:-1, 0], image[1:-1, -1]])
    return gaussian_filter(image, sigma / pixel_size, mode="constant", cval=float(np.median(border)), truncate=4.0)
