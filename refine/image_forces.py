"""Image forces: the gradient of the image term, and a calculator for the full cost.

Deaven–Ho's GA works because every offspring is relaxed to its local minimum
before it competes. Relaxing on the energy alone pulls offspring towards
*some* compact cluster; relaxing on the refinement's own cost

    C(r) = E(r) + α·χ²(r)

pulls them towards the experimental image as well: atoms slide in x and y
onto the bright features they are missing, while the energy places them along
the beam. The image force −α·∂χ²/∂rᵢ comes from the surrogate's adjoint
(:mod:`surrogate.gradient`).

χ² here is the fitness's χ² with the closed-form intensity map a·S + b at the
current positions and *no* further translation alignment (the positions are
already in the image frame after an evaluation: :class:`refine.ga.GASettings`
``align_individuals``). Because a and b minimise χ², their own change does
not enter the gradient (envelope theorem): ∂χ²/∂S_p = 2 w_p a (a S_p + b − I_p).
"""

from __future__ import annotations

import math

import numba
import numpy as np
from ase.calculators.calculator import Calculator, all_changes

from surrogate.convolution import CUTOFF_SIGMAS, _splat_gaussians, scratch_rows
from surrogate.gradient import SurrogateGradient, positions_vjp

from .exceptions import InputError

__all__ = ["ImageTerm", "CostCalculator"]


class ImageTerm:
    """χ² of a structure against a fitness's image, and its gradient.

    Parameters
    ----------
    fitness : refine.fitness.Fitness
        Supplies the model, the experimental image, its noise weights and the
        atom weights; its χ² (with ``align="none"``) is what is differentiated.
    """

    def __init__(self, fitness):
        self.fitness = fitness
        self.model = fitness.model
        self.gradient = SurrogateGradient(self.model)
        self.h = int(self.model.border)
        self.sigma = float(fitness.params.sigma)
        self.dx = float(fitness.image.pixel_size)
        self.origin = tuple(float(v) for v in fitness.grid.origin)
        self.weights = np.ascontiguousarray(fitness.weights, dtype=np.float64)
        exp = np.ascontiguousarray(fitness.exp, dtype=np.float64)
        self.exp_mean = float((self.weights * exp).sum() / self.weights.sum())
        self.exp_c = np.ascontiguousarray(exp - self.exp_mean)
        self.w_tot = float(self.weights.sum())
        self.we_tot = float((self.weights * self.exp_c).sum())
        self.wee_tot = float((self.weights * self.exp_c ** 2).sum())
        s = 2 * self.h + 1
        self.background = float(self.model.predict_into(np.zeros((s, s)), np.empty((1, 1)))[0, 0])
        self.reach = int(math.ceil(CUTOFF_SIGMAS * self.sigma / self.dx)) + 2 + self.h
        self._gx, self._gy = scratch_rows(self.sigma, self.dx)
        self.n_calls = 0

    def _atom_weights(self, numbers):
        f = self.fitness
        f._prepare_numbers(np.asarray(numbers))
        return f._atom_w

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
            ∂χ²/∂r in 1/Å (z column 0: the image does not see z).
        """
        pos = np.ascontiguousarray(positions, dtype=np.float64)
        if pos.ndim != 2 or pos.shape[1] != 3 or not np.all(np.isfinite(pos)):
            raise InputError("positions must be a finite (n, 3) array")
        w_atoms = self._atom_weights(numbers)
        self.n_calls += 1
        m, n = self.exp_c.shape
        dx, h = self.dx, self.h
        x0, y0 = self.origin
        fi = (pos[:, 0] - x0) / dx
        fj = (pos[:, 1] - y0) / dx
        i0 = max(int(math.floor(fi.min())) - self.reach, 0)
        i1 = min(int(math.ceil(fi.max())) + self.reach + 1, m)
        j0 = max(int(math.floor(fj.min())) - self.reach, 0)
        j1 = min(int(math.ceil(fj.max())) + self.reach + 1, n)
        grad = np.zeros(pos.shape) if gradient else None
        if i1 <= i0 or j1 <= j0:  # every atom far outside the image: χ² of a flat image
            chi2 = self.wee_tot - self.we_tot ** 2 / self.w_tot
            return max(chi2, 0.0), grad
        conv = np.zeros((i1 - i0 + 2 * h, j1 - j0 + 2 * h))
        cx0, cy0 = x0 + (i0 - h) * dx, y0 + (j0 - h) * dx
        xy = np.ascontiguousarray(pos[:, :2])
        _splat_gaussians(xy, w_atoms, cx0, cy0, dx, self.sigma, CUTOFF_SIGMAS, conv, self._gx, self._gy)
        sim = np.empty((i1 - i0, j1 - j0))
        self.model.predict_into(conv, sim)
        w = self.weights[i0:i1, j0:j1]
        e = self.exp_c[i0:i1, j0:j1]
        a, b, chi2 = _intensity_map(sim, w, e, self.background, self.w_tot, self.we_tot, self.wee_tot)
        if gradient:
            upstream = 2.0 * a * w * (a * (sim - self.background) + b - e)
            dconv = self.gradient.convolution_vjp(conv, upstream)
            g2 = positions_vjp(xy, w_atoms, (cx0, cy0), dx, self.sigma, dconv)
            grad[:, :2] = g2
        return chi2, grad


@numba.njit(cache=True, nogil=True)
def _intensity_map(sim, w, e, bg, w_tot, we_tot, wee_tot):  # pragma: no cover - jitted
    # min over (a, b') of Σ w (a·s + b' − e)², s = sim − bg (0 outside the box), e centred
    sss = 0.0
    ss = 0.0
    sse = 0.0
    for i in range(sim.shape[0]):
        for j in range(sim.shape[1]):
            ww = w[i, j]
            if ww == 0.0:
                continue
            s = sim[i, j] - bg
            ws = ww * s
            sss += ws * s
            ss += ws
            sse += ws * e[i, j]
    det = sss * w_tot - ss * ss
    if det <= 1e-300 * max(sss * w_tot, 1e-300):
        b = we_tot / w_tot
        return 0.0, b, max(wee_tot - b * we_tot, 0.0)
    a = (sse * w_tot - ss * we_tot) / det
    b = (sss * we_tot - ss * sse) / det
    chi2 = wee_tot - a * sse - b * we_tot
    return a, b, max(chi2, 0.0)


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
