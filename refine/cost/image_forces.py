"""Image forces: the gradient of the image term, and a calculator for the full cost.

Deaven–Ho's GA works because every offspring is relaxed to its local minimum
before it competes. Relaxing on the energy alone pulls offspring towards
*some* compact cluster; relaxing on the refinement's own cost

    C(r) = E(r) + α·χ²(r)

pulls them towards the experimental image as well: atoms slide in x and y
onto the bright features they are missing, while the energy places them along
the beam. The image force −α·∂χ²/∂rᵢ comes from the surrogate's adjoint
(:mod:`surrogate.imaging.adjoint`).

χ² here is the fitness's χ² with the closed-form intensity map a·S + b at the
current positions and *no* further translation alignment (the positions are
already in the image frame after an evaluation: :class:`refine.search.ga.GASettings`
``align_individuals``). Because a and b minimise χ², their own change does
not enter the gradient (envelope theorem): ∂χ²/∂S_p = 2 w_p a (a S_p + b − I_p).
"""

from __future__ import annotations

import math

import numpy as np
from ase.calculators.calculator import Calculator, all_changes

from surrogate.imaging import SurrogateGradient, positions_vjp
from surrogate.imaging.convolution import entrance_depths

from surrogate.common import InputError

__all__ = ["ImageTerm", "CostCalculator"]


class ImageTerm:
    """χ² of a structure against a fitness's image, and its gradient.

    Parameters
    ----------
    fitness : refine.cost.fitness.Fitness
        Supplies the model, the experimental image, its noise weights and the
        atom weights; its χ² (with ``align="none"``) is what is differentiated.
    single_precision : bool
        The adjoint through the polynomial in float32
        (:class:`surrogate.imaging.adjoint.SurrogateGradient`): 1.49× faster
        (``tests/benchmarks/bench_anneal_step.py``), gradient accurate to
        ~1e-6 relative; χ² itself stays float64.
    """

    def __init__(self, fitness, *, single_precision: bool = False):
        self.fitness = fitness
        self.gradient = SurrogateGradient(fitness.model, single_precision=single_precision)

    def chi2_and_gradient(self, positions, numbers, *, gradient: bool = True):
        """χ² (no alignment) and ∂χ²/∂r.

        Parameters
        ----------
        positions : ndarray, shape (n, 3)
            Å, in the image frame.
        numbers : ndarray, shape (n,)
        gradient : bool
            False: χ² only (one render).

        Returns
        -------
        chi2 : float
        grad : ndarray, shape (n, 3) or None
            ∂χ²/∂r in 1/Å (z column 0 unless the model has a depth blur: the image sees z only then).
        """
        f = self.fitness
        pos = np.ascontiguousarray(positions, dtype=np.float64)
        if pos.ndim != 2 or pos.shape[1] != 3 or not np.all(np.isfinite(pos)):
            raise InputError("positions must be a finite (n, 3) array")
        f.prepare_numbers(np.asarray(numbers))
        # the fitness's own render (its convolution box, border h included, stays in the renderer's
        # buffer) and closed-form intensity map: this χ² is the fitness's χ² with align="none"
        sim, i0, j0, _ = f.render_box(pos, (0.0, 0.0))
        a, b, _, _, chi2 = f.aligner.fit_box(sim, i0, j0, 2)
        grad = np.zeros(pos.shape) if gradient else None
        if not gradient or sim.size == 0:
            return chi2, grad
        bi, bj = sim.shape
        h = f.h
        conv = f.renderer.convolution_box(bi, bj)
        w = f.weights[i0:i0 + bi, j0:j0 + bj]
        upstream = 2.0 * a * w * (a * sim + b - f.exp[i0:i0 + bi, j0:j0 + bj])
        upstream[w == 0.0] = 0.0  # masked pixels (their data may be NaN)
        dconv = self.gradient.convolution_vjp(conv, upstream)
        dx = f.image.pixel_size
        x0, y0 = f.grid.origin
        origin = (x0 + (i0 - h) * dx, y0 + (j0 - h) * dx)
        sigmas = f.renderer.sigmas  # per-atom PSF widths of this render (a depth-blur model), else None
        if sigmas is None:
            grad[:, :2] = positions_vjp(pos[:, :2], f.renderer.atom_weights, origin, dx, f.params.sigma, dconv)
        else:
            # σᵢ² = σ² + β²dᵢ², dᵢ = zᵢ − z_top + entrance: ∂σᵢ/∂zᵢ = β²dᵢ/σᵢ (the first atom plane z_top held)
            dsigma = np.zeros(len(pos))
            grad[:, :2] = positions_vjp(pos[:, :2], f.renderer.atom_weights, origin, dx, sigmas, dconv,
                                        sigma_out=dsigma)
            beta = f.params.depth_blur
            grad[:, 2] = dsigma * beta * beta * entrance_depths(pos[:, 2]) / sigmas
        return chi2, grad


class CostCalculator(Calculator):
    """ASE calculator of the refinement cost E + α·χ² (eV) and its forces.

    Parameters
    ----------
    image_term : ImageTerm
    calculator : ase calculator or None
        The energy calculator (asap3 EMT…); None: image term only.
    alpha : float or callable
        Weight of χ² (eV per unit χ²); a callable is asked on every
        calculation (the GA's α may be re-calibrated), and ``None`` from it
        means "not known yet": energy only.

    The energy is E + α·χ², the forces are F_E − α·∂χ²/∂r. ``results`` also
    hold ``chi2`` and ``energy_term`` for logging.
    """

    implemented_properties = ["energy", "forces"]

    def __init__(self, image_term: ImageTerm, calculator=None, alpha=1.0, **kw):
        super().__init__(**kw)
        self.image_term = image_term
        self.calculator = calculator
        self.alpha = alpha
        self._work = None

    def _alpha(self):
        a = self.alpha() if callable(self.alpha) else self.alpha
        return None if a is None else float(a)

    def calculate(self, atoms=None, properties=("energy", "forces"), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        energy = 0.0
        forces = np.zeros((len(atoms), 3))
        if self.calculator is not None:
            work = self._work
            if work is None or len(work) != len(atoms) or not np.array_equal(work.numbers, atoms.numbers):
                # one persistent copy, so that asap3 keeps its neighbour list between steps
                work = self._work = atoms.copy()
                work.calc = self.calculator
            work.cell, work.pbc = atoms.cell, atoms.pbc
            work.positions = atoms.positions
            energy = float(work.get_potential_energy())
            forces = np.array(work.get_forces())
        alpha = self._alpha()
        chi2 = math.nan
        if alpha is not None and alpha > 0:
            chi2, grad = self.image_term.chi2_and_gradient(atoms.positions, atoms.numbers)
            forces = forces - alpha * grad
            total = energy + alpha * chi2
        else:
            total = energy
        self.results = {"energy": total, "forces": forces, "free_energy": total, "chi2": chi2,
                        "energy_term": energy}
