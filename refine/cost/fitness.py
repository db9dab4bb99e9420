"""The refinement's cost: energy plus α·χ² of the surrogate image (Yu et al., ACS Nano 10, 4031, 2016).

    C(s) = E(s) + α · χ²[I(s), I_exp]

For a candidate structure s (positions in Å, atomic numbers), :class:`Fitness`

1. **renders** the surrogate image on the experimental grid, only on the box
   the atoms reach (:mod:`refine.cost.render`);
2. **aligns** it by a sub-pixel translation and 3. **fits the intensity map**
   a·I + b in closed form (:mod:`refine.cost.alignment`, ``align=``,
   ``shift_method=``). ``FitnessResult.shift`` is the total (dx, dy) in Å to
   add to the atoms' xy; :meth:`Fitness.simulated_image` re-renders exactly
   there;
4. computes **χ² = Σ w·(I_exp − a·I − b)²** over the valid pixels, with
   w = 1/σ² of the **noise model** (:mod:`refine.cost.noise`, ``noise=``,
   ``dose=``). ``chi2_per_pixel`` = χ² / (number of valid pixels); ≈ 1 for a
   perfect structure under a correct noise model;
5. adds the **energy** (:class:`refine.cost.energy.Energy`): total eV by
   default (as Yu et al.), eV/atom with ``per_atom_energy=True``;
   ``calculator=None`` drops the term (E = 0);
6. weighs χ² by **α**. A number, or ``"auto"``: :meth:`Fitness.calibrate_alpha` sets

       α = IQR(E) / IQR(χ²)   over a population (the initial one),

   so that both terms spread over the same range across the population and
   neither dominates selection (falls back to standard deviations when an
   interquartile range is 0, and to α = 1 when χ² does not vary). The value
   is logged. With ``"auto"``, :meth:`Fitness.evaluate` raises
   :class:`StemRefineError` until α is calibrated.

   Or ``"thermal"``: α = k_B·T/2 with T = ``prior_temperature`` (300 K:
   0.0129 eV). χ² under a correct noise model is −2 ln(likelihood), and a
   Boltzmann prior exp(−E/k_BT) on the structures makes E + (k_BT/2)·χ² the
   negative log-posterior in units of k_BT: its minimum is the most probable
   structure given the image. It weighs the image much more than ``"auto"``
   does (×5–25 on ~300-atom particles): right for the final choice between
   structures, too rough a landscape for a search from random starts (see
   the GA's finishing stage, :class:`refine.search.ga.GASettings` ``finish_alpha``).

``mode="pareto"`` makes the DEAP-style call ``fitness(atoms)`` return
``(χ², E)`` for NSGA-II instead of ``(cost,)``.

**Domain warning.** The first time a candidate's convolution image has a
pixel above the model's training input range (``model.input_range_``,
which bounds every degree-1 feature; convolution pixels are never below
the training minimum 0) by more than ``domain_tolerance`` of the range
(checked on the box only, one pass over the buffer; the higher-degree
feature ranges are not checked per evaluation), a warning is logged once and
:attr:`Fitness.out_of_domain` becomes True; :attr:`Fitness.n_out_of_domain`
counts such evaluations (for the run summary).

Hot path: per evaluation nothing image-sized is allocated (the renderer's
and the aligner's buffers are reused; views of them cover the box); only the
FFT path of the coarse alignment allocates its spectra.
``tests/benchmarks/bench_fitness.py`` times each part (``profile=True``
fills :attr:`Fitness.timings`).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, replace

import numpy as np

from refine.cost.alignment import ALIGN_MODES, Aligner, fit_intensity_map
from refine.cost.energy import Energy
from refine.cost.noise import noise_weights
from refine.cost.render import BoxRenderer
from refine.io import ExperimentalImage
from surrogate.common import InputError, StemRefineError

__all__ = ["Fitness", "FitnessResult"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FitnessResult:
    """One evaluation.

    Attributes
    ----------
    cost : float
        E + α·χ² with α as when evaluated (NaN only in ``mode="pareto"``
        before α is known).
    chi2 : float
        Weighted χ² over the valid pixels (dimensionless).
    chi2_per_pixel : float
        χ² / its expectation for a perfect structure (``n_effective``: the
        number of valid pixels, less where the model's correlated error
        dominates; see :mod:`refine.cost.noise`).
    energy : float
        eV (total, or per atom; see :class:`Fitness`).
    scale, offset : float
        a, b of the intensity map a·I_sim + b (experimental image units).
    shift : (float, float)
        (dx, dy) in Å added to the atoms' xy for the best alignment.
    out_of_domain : bool
        This candidate's convolution image left the model's training range.
    """

    cost: float
    chi2: float
    chi2_per_pixel: float
    energy: float
    scale: float
    offset: float
    shift: tuple
    out_of_domain: bool = False


class Fitness:
    """Cost of candidate structures against one experimental image.

    Parameters
    ----------
    model : PolynomialSurrogate
        Fitted surrogate; its pixel size must equal the image's (read the image
        with ``target_pixel_size=model.convolution_parameters.pixel_size``).
    image : ExperimentalImage
    alpha : "auto", "thermal" or float
        Weight of χ², eV per unit χ² (see module docstring).
    prior_temperature : float
        K; the temperature of the Boltzmann prior behind ``alpha="thermal"``
        and :meth:`thermal_alpha`.
    model_error : bool
        Add the surrogate's own error (``model.discrepancy_``, from its file)
        to the noise (:mod:`refine.cost.noise`): the χ² that stays right when
        the surrogate is wrong. An image not in beam units (no ``dose``) is
        scaled by its integrated intensity, which needs the ``composition``.
    composition : mapping, optional
        Element → number of atoms of the particle (with ``model_error`` and no dose).
    noise : "estimate", "poisson", float or ndarray
        Noise model (:mod:`refine.cost.noise`).
    dose : float, optional
        e/Å² for ``noise="poisson"``.
    calculator : str, ASE calculator or None
        Energy calculator (:func:`refine.cost.energy.make_calculator`); None: no energy term.
    symbols : iterable of str, optional
        Elements of the candidates (to build the calculator up front; else on first use).
    align : {"auto", "fft", "local", "none"} or bool
        True = "auto", False = "none" (:mod:`refine.cost.alignment`).
    per_atom_energy : bool
        Energy term in eV/atom instead of eV.
    mode : {"weighted", "pareto"}
        What ``fitness(atoms)`` returns: ``(cost,)`` or ``(χ², E)``.
    tol : float, optional
        Pixels: iterate the alignment while the Gauss–Newton step is larger
        than this (default 0.05 with ``shift_method="interpolate"``, 0.25
        with ``"render"``, where each step costs a render).
    coarse_threshold : float
        Pixels: in "auto" mode, a first Gauss–Newton step larger than this
        triggers the FFT cross-correlation.
    max_iter : int, optional
        Alignment steps allowed (default 8 interpolating, 4 rendering).
    shift_method : {"interpolate", "render"}
        How a trial shift is applied: move the rendered image by Keys cubic
        interpolation (one render per evaluation), or re-render at the
        shifted atom positions (exact, a render per step).
    domain_tolerance : float
        A convolution pixel counts as outside the training range when it
        exceeds ``input_range_[1]`` by more than this fraction of the range
        (the training maximum itself depends on where the probe grid samples
        the columns, by ~1 % at the paper's σ/Δ).

    Attributes
    ----------
    renderer : BoxRenderer
        Draws the surrogate image of a candidate (:mod:`refine.cost.render`).
    aligner : Aligner
        Fits it to the image (:mod:`refine.cost.alignment`).
    weights : ndarray, shape ``image.shape``
        χ² weights 1/σ² (0 on excluded pixels); ``noise_info`` describes them.

    Notes
    -----
    Not thread-safe: an instance reuses its buffers across evaluations. Use
    one instance per worker (it pickles, for Dask or multiprocessing).
    """

    def __init__(self, model, image: ExperimentalImage, *, alpha="auto", noise="estimate", dose=None,
                 calculator="auto", symbols=None, align="auto", per_atom_energy: bool = False,
                 mode: str = "weighted", tol: float | None = None, coarse_threshold: float = 1.5,
                 max_iter: int | None = None, domain_tolerance: float = 0.02, shift_method: str = "interpolate",
                 prior_temperature: float = 300.0, model_error: bool = False, composition=None):
        params = _check_model_and_image(model, image)
        align = _align_mode(align)
        if shift_method not in ("interpolate", "render"):
            raise InputError(f"shift_method must be 'interpolate' or 'render', got {shift_method!r}")
        self.shift_method = shift_method
        if mode not in ("weighted", "pareto"):
            raise InputError(f"mode must be 'weighted' or 'pareto', got {mode!r}")
        self.model = model
        self.image = image
        self.params = params
        self.mode = mode
        interp = shift_method == "interpolate"
        tol = float(tol if tol is not None else (0.05 if interp else 0.25))
        coarse_threshold = float(coarse_threshold)
        max_iter = int(max_iter if max_iter is not None else (8 if interp else 4))
        self.per_atom_energy = bool(per_atom_energy)
        self.prior_temperature = _check_temperature(prior_temperature)
        self._set_alpha_rule(alpha)

        self.grid = image.grid
        self.h = int(model.border)
        self.model_error = bool(model_error)
        self.weights, self.noise_info = noise_weights(image, noise, dose,
                                                      **self._model_error_terms(model, image, noise, dose, composition))
        self.n_valid = image.n_valid
        self.n_effective = float(self.noise_info.get("n_effective", self.n_valid))
        self.renderer = BoxRenderer(model, self.grid)
        self.aligner = Aligner(image, self.weights, self.renderer.background, mode=align, tol=tol,
                               coarse_threshold=coarse_threshold, max_iter=max_iter, border=self.h)
        self._set_domain(model, domain_tolerance)
        self.n_evaluations = 0
        self.timings = {"convolution": 0.0, "polynomial": 0.0, "alignment": 0.0, "energy": 0.0}
        self.profile = False
        self._numbers = None
        self._calc_spec = calculator
        self._energy = None
        if calculator is not None and symbols is not None:
            self._energy = Energy(calculator, symbols, per_atom=self.per_atom_energy)

    # -- settings held by the parts (read-only) ---------------------------------
    @property
    def align(self) -> str:
        """Alignment mode: "auto", "fft", "local" or "none"."""
        return self.aligner.mode

    @property
    def tol(self) -> float:
        """Pixels: the alignment's convergence step."""
        return self.aligner.tol

    @property
    def coarse_threshold(self) -> float:
        """Pixels: the largest Gauss–Newton step trusted."""
        return self.aligner.coarse_threshold

    @property
    def max_iter(self) -> int:
        """Alignment steps allowed."""
        return self.aligner.max_iter

    @property
    def exp(self) -> np.ndarray:
        """The experimental image, float64, shape ``image.shape``."""
        return self.aligner.exp

    @property
    def background(self) -> float:
        """c₀, the surrogate's value on vacuum (every pixel no atom reaches)."""
        return self.renderer.background

    # -- setup ----------------------------------------------------------------
    def _model_error_terms(self, model, image, noise, dose, composition) -> dict:
        """``discrepancy`` and ``beam_scale`` for :func:`noise_weights`: none without ``model_error``."""
        if not self.model_error:
            return {}
        discrepancy = getattr(model, "discrepancy_", None)
        if discrepancy is None:
            log.warning("the model file has no calibration of its own error; χ² weighs the noise alone "
                        "(rebuild the model, or recalibrate it, to add it)")
            return {}
        if isinstance(noise, str) and noise.lower() == "poisson" and dose is not None:
            return {"discrepancy": discrepancy, "beam_scale": (1.0, 0.0)}  # the image is in beam units
        if not composition:
            raise InputError("the model error of an image not in beam units needs the composition, or a dose")
        from refine.cost.noise import integrated_beam_scale

        atoms = [element for element, count in composition.items() for _ in range(int(count))]
        return {"discrepancy": discrepancy, "beam_scale": integrated_beam_scale(image, model, atoms)}

    def _set_alpha_rule(self, alpha) -> None:
        """α and its rule ("auto", "thermal" or "fixed") from the ``alpha`` argument."""
        self.alpha = None
        if isinstance(alpha, str):
            if alpha not in ("auto", "thermal"):
                raise InputError(f"alpha must be 'auto', 'thermal' or a number, got {alpha!r}")
            if alpha == "thermal":
                self.alpha = self.thermal_alpha()
                log.info("alpha = %.6g (thermal: k_B·%g K / 2)", self.alpha, self.prior_temperature)
            self.alpha_rule = alpha
        else:
            self.alpha = self._check_alpha(alpha)
            self.alpha_rule = "fixed"

    @staticmethod
    def _check_alpha(alpha) -> float:
        try:
            a = float(alpha)
        except (TypeError, ValueError):
            raise InputError(f"alpha must be 'auto' or a number, got {alpha!r}") from None
        if not (np.isfinite(a) and a >= 0):
            raise InputError(f"alpha must be a non-negative finite number, got {alpha!r}")
        return a

    def _set_domain(self, model, domain_tolerance) -> None:
        """The convolution value above which a candidate leaves the model's training range."""
        self.input_range = tuple(float(v) for v in getattr(model, "input_range_", (-np.inf, np.inf)))
        self.domain_tolerance = float(domain_tolerance)
        span = self.input_range[1] - self.input_range[0]
        self._domain_max = self.input_range[1] + self.domain_tolerance * span if np.isfinite(span) else np.inf
        self.out_of_domain = False
        self.n_out_of_domain = 0
        self._last_conv_max = np.nan

    def prepare_numbers(self, numbers) -> None:
        """Check the atomic numbers of the next candidates and set up their weights and energy calculator.

        A no-op when they equal the previous call's.

        Raises
        ------
        InputError
            No atoms, unknown atomic numbers, or elements the model was not trained on.
        """
        if self._numbers is not None and len(numbers) == len(self._numbers) and np.array_equal(numbers, self._numbers):
            return
        from ase.data import chemical_symbols

        numbers = np.asarray(numbers)
        if numbers.size == 0:
            raise InputError("a candidate structure has no atoms")
        if numbers.min() < 1 or numbers.max() >= len(chemical_symbols):
            raise InputError(f"unknown atomic number in a candidate: {sorted(set(numbers.tolist()))}")
        symbols = [chemical_symbols[z] for z in np.unique(numbers)]
        if hasattr(self.model, "check_elements"):
            try:
                self.model.check_elements(symbols)
            except ValueError as exc:
                raise InputError(f"candidate structure: {exc}") from None
        self.renderer.set_atoms(numbers)
        self._numbers = numbers.copy()
        if self._calc_spec is not None and (self._energy is None
                                            or not set(symbols) <= set(self._energy.elements)):
            self._energy = Energy(self._calc_spec, symbols, per_atom=self.per_atom_energy)

    # -- the image term -------------------------------------------------------------
    def render_box(self, positions, shift=(0.0, 0.0)):
        """Surrogate image box of ``positions`` (n, 3) Å moved by ``shift`` (Å), with the domain check.

        Returns ``(box, i0, j0, out_of_domain)``: see :meth:`BoxRenderer.render`;
        the box is a view of a reused buffer. Call :meth:`prepare_numbers` first.
        """
        sim, i0, j0, conv_max = self.renderer.render(positions, shift, self.timings if self.profile else None)
        ood = conv_max > self._domain_max
        if ood:
            self._last_conv_max = conv_max
        return sim, i0, j0, ood

    def _align(self, pos):
        """(a, b, χ², shift Å, out of domain) of positions at their best alignment."""
        timings = self.timings if self.profile else None
        if self.shift_method == "render" or self.align == "none":
            return self.aligner.align_by_rendering(self.render_box, pos, timings)
        sim, i0, j0, ood = self.render_box(pos, (0.0, 0.0))
        a, b, chi2, shift = self.aligner.align_interpolated(sim, i0, j0, timings)
        return a, b, chi2, shift, ood

    def _count_out_of_domain(self) -> None:
        """Count an evaluation outside the training range; warn the first time."""
        self.n_out_of_domain += 1
        if not self.out_of_domain:
            self.out_of_domain = True
            log.warning("a candidate's convolution image (max %.4g) leaves the model's training range "
                        "[%.4g, %.4g]: the surrogate is extrapolating (reported once)",
                        self._last_conv_max, *self.input_range)

    # -- public API -----------------------------------------------------------
    @staticmethod
    def _unpack(atoms, numbers=None):
        if numbers is None:
            pos, numbers = atoms.positions, atoms.numbers
        else:
            pos = atoms
        pos = np.asarray(pos, dtype=np.float64)
        if pos.ndim != 2 or pos.shape[1] != 3 or pos.shape[0] != len(numbers):
            raise InputError(f"positions must be (n, 3) with one number per atom, got {pos.shape} and {len(numbers)}")
        if not np.all(np.isfinite(pos)):
            raise InputError("candidate has non-finite positions")
        return np.ascontiguousarray(pos), np.asarray(numbers)

    def image_terms(self, atoms, numbers=None):
        """χ² part only: (a, b, χ², shift Å) of a structure, no energy."""
        pos, numbers = self._unpack(atoms, numbers)
        self.prepare_numbers(numbers)
        a, b, chi2, shift, _ = self._align(pos)
        return a, b, chi2, shift

    def evaluate(self, atoms, numbers=None) -> FitnessResult:
        """Evaluate an ``ase.Atoms`` (or ``positions (n, 3) Å, numbers (n,)``).

        Raises
        ------
        StemRefineError
            ``alpha="auto"`` and :meth:`calibrate_alpha` was not called yet
            (in ``mode="pareto"`` the cost is not needed: it is NaN until then).
        """
        if self.alpha is None and self.mode != "pareto":
            raise StemRefineError("alpha='auto' is not calibrated yet: call calibrate_alpha(population) first")
        return self._evaluate(atoms, numbers, self.alpha)

    def _evaluate(self, atoms, numbers, alpha):
        pos, numbers = self._unpack(atoms, numbers)
        self.prepare_numbers(numbers)
        a, b, chi2, shift, ood = self._align(pos)
        t = time.perf_counter() if self.profile else 0.0
        energy = self._energy(pos, numbers) if self._energy is not None else 0.0
        if self.profile:
            self.timings["energy"] += time.perf_counter() - t
        self.n_evaluations += 1
        if ood:
            self._count_out_of_domain()
        cost = energy + (alpha if alpha is not None else np.nan) * chi2
        return FitnessResult(cost=float(cost), chi2=float(chi2), chi2_per_pixel=float(chi2) / self.n_effective,
                             energy=float(energy), scale=float(a), offset=float(b), shift=shift,
                             out_of_domain=bool(ood))

    def __call__(self, atoms) -> tuple:
        """DEAP ``evaluate``: ``(cost,)`` or, with ``mode="pareto"``, ``(χ², E)``."""
        if self.mode == "pareto":
            r = self._evaluate(atoms, None, self.alpha)
            return (r.chi2, r.energy)
        return (self.evaluate(atoms).cost,)

    # -- α ----------------------------------------------------------------------
    def cost(self, result: FitnessResult) -> float:
        """E + α·χ² of a result with the current α (after a re-calibration)."""
        if self.alpha is None:
            raise StemRefineError("alpha='auto' is not calibrated yet: call calibrate_alpha(population) first")
        return result.energy + self.alpha * result.chi2

    def calibrate_alpha(self, population) -> list:
        """Set α (when ``alpha="auto"``) from a population; return its results.

        Rule: α = IQR(E)/IQR(χ²) over the population (see module docstring).
        With a fixed α the population is only evaluated.
        """
        results = [self._evaluate(p, None, self.alpha) for p in population]
        if self.alpha_rule == "auto":
            self.alpha = self.alpha_from(np.array([r.energy for r in results]), np.array([r.chi2 for r in results]))
            results = [replace(r, cost=r.energy + self.alpha * r.chi2) for r in results]
        return results

    def thermal_alpha(self) -> float:
        """k_B·T/2 (eV per unit χ²) at T = ``prior_temperature``: E + α·χ² is then −k_BT·ln(posterior)."""
        from ase.units import kB

        return 0.5 * kB * self.prior_temperature

    @staticmethod
    def alpha_from(energies, chi2s) -> float:
        """The automatic α for given energies (eV) and χ² values (logged)."""
        e = np.asarray(energies, dtype=float)
        c = np.asarray(chi2s, dtype=float)
        if e.size < 2:
            raise InputError("calibrating alpha needs at least 2 structures")

        def spread(v):
            q75, q25 = np.percentile(v, [75, 25])
            s = q75 - q25
            return s if s > 0 else float(np.std(v))

        se, sc = spread(e), spread(c)
        if not sc > 0:
            log.warning("χ² does not vary over the population; alpha = 1")
            return 1.0
        if not se > 0:
            # no energy term (or no spread): put χ² on the scale of 1 eV per unit spread
            alpha = 1.0 / sc
        else:
            alpha = se / sc
        log.info("alpha = %.6g (IQR of E %.4g eV / IQR of χ² %.4g over %d structures)", alpha, se, sc, e.size)
        return float(alpha)

    # -- outputs ------------------------------------------------------------------
    def simulated_image(self, atoms, numbers=None, *, aligned: bool = True) -> np.ndarray:
        """a·I_sim + b on the experimental grid (shape ``image.shape``), at the best alignment.

        The image is recomputed exactly at the aligned positions and a, b refitted.
        """
        pos, numbers = self._unpack(atoms, numbers)
        self.prepare_numbers(numbers)
        shift = (0.0, 0.0)
        if aligned and self.align != "none":
            _, _, _, shift, _ = self._align(pos)
        sim, i0, j0, _ = self.render_box(pos, shift)
        full = np.full(self.image.shape, self.background)
        full[i0: i0 + sim.shape[0], j0: j0 + sim.shape[1]] = sim
        a, b, _ = fit_intensity_map(full, self.exp, self.weights)
        return a * full + b

    def difference_image(self, atoms, numbers=None) -> np.ndarray:
        """Experimental minus aligned simulated image; excluded pixels are NaN."""
        diff = self.exp - self.simulated_image(atoms, numbers)
        diff[~self.image.mask] = np.nan
        return diff

    @staticmethod
    def aligned(atoms, result: FitnessResult):
        """A copy of ``atoms`` moved by ``result.shift`` (xy, Å) onto the experimental image.

        Keeping GA individuals aligned lets the next evaluations start at the
        optimum (Gauss–Newton only, no cross-correlation).
        """
        out = atoms.copy()
        out.positions[:, 0] += result.shift[0]
        out.positions[:, 1] += result.shift[1]
        return out

    def summary(self) -> dict:
        """What a run summary reports about the fitness."""
        return {"alpha": self.alpha, "alpha_rule": self.alpha_rule, "noise": self.noise_info,
                "align": self.align, "n_valid_pixels": self.n_valid, "n_effective_pixels": self.n_effective,
                "per_atom_energy": self.per_atom_energy,
                "out_of_domain": self.out_of_domain, "n_out_of_domain": self.n_out_of_domain,
                "n_evaluations": self.n_evaluations, "model_input_range": list(self.input_range)}


def _check_model_and_image(model, image):
    """The model's convolution parameters, once the model and image are known to fit together."""
    if not isinstance(image, ExperimentalImage):
        raise InputError("image must be an ExperimentalImage (see refine.io.images.read_image)")
    if not hasattr(model, "predict_into"):
        raise InputError("model must be a fitted surrogate with predict_into (PolynomialSurrogate)")
    params = model.convolution_parameters
    if abs(params.pixel_size - image.pixel_size) > 1e-6 * params.pixel_size:
        raise InputError(f"image pixel size {image.pixel_size:.6g} Å differs from the model's "
                         f"{params.pixel_size:.6g} Å; read it with target_pixel_size={params.pixel_size}")
    return params


def _align_mode(align) -> str:
    """``align`` as one of :data:`refine.cost.alignment.ALIGN_MODES` (True = "auto", False/None = "none")."""
    if align is True:
        align = "auto"
    elif align is False or align is None:
        align = "none"
    if align not in ALIGN_MODES:
        raise InputError(f"align must be one of {ALIGN_MODES}, got {align!r}")
    return align


def _check_temperature(t) -> float:
    """The prior temperature in K, or :class:`InputError`."""
    if isinstance(t, bool) or not (isinstance(t, (int, float)) and math.isfinite(t) and t > 0):
        raise InputError(f"prior temperature must be a positive number of K, got {t!r}")
    return float(t)
