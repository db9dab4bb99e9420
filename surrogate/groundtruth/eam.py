"""The Zhou–Johnson–Wadley embedded-atom potential for Pt–Mo (and its other elements).

Reference
---------
X. W. Zhou, R. A. Johnson and H. N. G. Wadley, "Misfit-energy-increasing
dislocations in vapor-deposited CoFe/NiFe multilayers", Phys. Rev. B 69,
144113 (2004). Per-element parameters as distributed with LAMMPS
(``tools/eam_database/EAM_code``, including the NIST-revised Pt low-density
embedding bound ρn = 0.25 ρe; https://www.ctcms.nist.gov/potentials/,
"2004--Zhou-X-W-Johnson-R-A-Wadley-H-N-G").

Why this potential
------------------
EMT (asap3) has no Mo, and we found no published Gupta/RGL parameterization
of the Pt–Mo *cross* interaction that we could verify. Zhou 2004 is a
published, widely used EAM whose element functions are normalized so that
alloys of any of its 16 elements can be formed: the cross pair term is
Johnson's rule φ_ab = ½ (f_b/f_a · φ_aa + f_a/f_b · φ_bb). **Caveat:** the
Pt–Mo cross terms are therefore *not* fitted to Pt–Mo data (heat of mixing,
intermetallics); the potential is a reasonable, physically bounded energy for
structure refinement of Pt-rich Pt–Mo particles, not a predictive alloy model.

Functional form (x = r / r_e)::

    f(r)    = f_e exp(−β (x−1)) / (1 + (x − λ)^20)
    φ_aa(r) = A exp(−α (x−1)) / (1 + (x − κ)^20) − B exp(−β (x−1)) / (1 + (x − λ)^20)
    F(ρ)    = Σ F_ni (ρ/ρn − 1)^i               ρ < ρn = ρl·ρe
            = Σ F_i  (ρ/ρe − 1)^i               ρn ≤ ρ < ρo = ρh·ρe   (F_3 above/below ρe)
            = F_e (1 − η ln(ρ/ρs)) (ρ/ρs)^η      ρo ≤ ρ

with a cutoff of √5 · max(r_e) Å (the LAMMPS tables' cutoff, √10/2 of the
largest fcc lattice constant √2·r_e). Energies in eV, lengths in Å. The
implementation is an analytic Numba kernel (no tabulation), so energy and
forces are consistent to round-off.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from ase.calculators.calculator import Calculator, all_changes
from ase.data import atomic_numbers

from surrogate.common import InputError

__all__ = ["ZhouEAM", "ZHOU2004_ELEMENTS", "ZHOU2004_PARAMETERS"]

_FIELDS = ("re", "fe", "rhoe", "rhos", "alpha", "beta", "A", "B", "kappa", "lam", "Fn0", "Fn1", "Fn2", "Fn3",
           "F0", "F1", "F2", "F3", "eta", "Fe", "F3_high", "beta1", "lam1", "rhol", "rhoh")

#: Zhou et al. 2004 parameters (order of :data:`_FIELDS`); Pt and Mo are the
#: ones this project needs, Pd/Au/Ni/Cu for checks against EMT metals.
ZHOU2004_PARAMETERS = {
    "Pt": (2.771916, 2.336509, 33.367564, 35.205357, 7.105782, 3.789750, 0.556398, 0.696037, 0.385255,
           0.770510, -1.455568, -2.149952, 0.528491, 1.222875, -4.17, 0.00, 3.010561, -2.420128, 1.450000,
           -4.145597, -2.420128, 3.789750, 0.770510, 0.25, 1.15),
    "Mo": (2.728100, 2.723710, 29.354065, 29.354065, 8.393531, 4.476550, 0.708787, 1.120373, 0.137640,
           0.275280, -3.692913, -0.178812, 0.380450, -3.133650, -3.71, 0.00, 0.875874, 0.776222, 0.790879,
           -3.712093, 0.776222, 4.476550, 0.275280, 0.85, 1.15),
    "Pd": (2.750897, 1.595417, 21.335246, 21.940073, 8.697397, 4.638612, 0.406763, 0.598880, 0.397263,
           0.754799, -2.321006, -0.473983, 1.615343, -0.231681, -2.36, 0.00, 1.481742, -1.675615, 1.130000,
           -2.352753, -1.675615, 4.638612, 0.754799, 0.85, 1.15),
    "Au": (2.885034, 1.529021, 19.991632, 19.991509, 9.516052, 5.075228, 0.229762, 0.356666, 0.356570,
           0.748798, -2.937772, -0.500288, 1.601954, -0.835530, -2.98, 0.00, 1.706587, -1.134778, 1.021095,
           -2.978815, -1.134778, 5.075228, 0.748798, 0.85, 1.15),
}
ZHOU2004_ELEMENTS = tuple(ZHOU2004_PARAMETERS)


class ZhouEAM(Calculator):
    """ASE calculator for the Zhou 2004 EAM (energy, per-atom energies, forces).

    Parameters
    ----------
    elements : sequence of str
        Elements the calculator must handle (all must be in
        :data:`ZHOU2004_ELEMENTS`); structures may contain a subset.
    """

    implemented_properties = ["energy", "energies", "forces", "free_energy"]

    def __init__(self, elements=("Pt", "Mo"), **kwargs):
        super().__init__(**kwargs)
        elements = list(elements)
        bad = [e for e in elements if e not in ZHOU2004_PARAMETERS]
        if bad:
            raise InputError(f"Zhou 2004 EAM has no parameters for {bad}; available: {list(ZHOU2004_ELEMENTS)}")
        self.elements = elements
        self._params = np.array([ZHOU2004_PARAMETERS[e] for e in elements], dtype=np.float64)
        self._z_to_type = {atomic_numbers[e]: k for k, e in enumerate(elements)}
        self.cutoff = math.sqrt(5.0) * max(ZHOU2004_PARAMETERS[e][0] for e in elements)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        try:
            types = np.array([self._z_to_type[z] for z in self.atoms.numbers], dtype=np.int64)
        except KeyError as exc:
            raise InputError(f"ZhouEAM set up for {self.elements} got atomic number {exc.args[0]}") from None
        if self.atoms.cell.rank < 3 and any(self.atoms.pbc):
            raise InputError("periodic structures need a full 3-D cell")
        atoms = self.atoms
        if not any(atoms.pbc):
            # Free particles (the usual case): a k-d tree is ~100x faster than
            # ASE's general neighbour list for a few hundred atoms.
            from scipy.spatial import cKDTree

            pos = atoms.positions
            pairs = cKDTree(pos).query_pairs(self.cutoff, output_type="ndarray")
            i = np.concatenate([pairs[:, 0], pairs[:, 1]])
            j = np.concatenate([pairs[:, 1], pairs[:, 0]])
            D = pos[j] - pos[i]
        else:
            from ase.neighborlist import neighbor_list

            i, j, D = neighbor_list("ijD", atoms, self.cutoff)
        energies, forces = _eam(len(atoms), types, i.astype(np.int64), j.astype(np.int64),
                                np.ascontiguousarray(D, dtype=np.float64), self._params)
        self.results["energies"] = energies
        self.results["energy"] = self.results["free_energy"] = float(energies.sum())
        self.results["forces"] = forces


# Parameter column indices for the kernels.
_RE, _FE, _RHOE, _RHOS, _ALPHA, _BETA, _A, _B, _KAPPA, _LAM = range(10)
_FN0, _FN1, _FN2, _FN3, _F0, _F1, _F2, _F3, _ETA, _FEE, _F3H, _BETA1, _LAM1, _RHOL, _RHOH = range(10, 25)


@numba.njit(cache=True)
def _term(r, re, c, a, shift):  # pragma: no cover - jitted
    # c·exp(−a(x−1)) / (1 + (x − shift)^20) and its r-derivative.
    x = r / re
    e = c * math.exp(-a * (x - 1.0))
    s = x - shift
    s19 = s**19
    den = 1.0 + s19 * s
    g = e / den
    dg = g * (-a - 20.0 * s19 / den) / re
    return g, dg


@numba.njit(cache=True)
def _density(r, p):  # pragma: no cover - jitted
    return _term(r, p[_RE], p[_FE], p[_BETA1], p[_LAM1])


@numba.njit(cache=True)
def _pair_same(r, p):  # pragma: no cover - jitted
    g1, d1 = _term(r, p[_RE], p[_A], p[_ALPHA], p[_KAPPA])
    g2, d2 = _term(r, p[_RE], p[_B], p[_BETA], p[_LAM])
    return g1 - g2, d1 - d2


@numba.njit(cache=True)
def _pair(r, pa, pb, same):  # pragma: no cover - jitted
    phia, dphia = _pair_same(r, pa)
    if same:
        return phia, dphia
    phib, dphib = _pair_same(r, pb)
    fa, dfa = _density(r, pa)
    fb, dfb = _density(r, pb)
    # Johnson's cross rule and its derivative by the product/quotient rules.
    q = fb / fa
    dq = (dfb * fa - fb * dfa) / (fa * fa)
    v = 0.5 * (q * phia + phib / q)
    dv = 0.5 * (dq * phia + q * dphia + dphib / q - phib * dq / (q * q))
    return v, dv


@numba.njit(cache=True)
def _embed(rho, p):  # pragma: no cover - jitted
    rhoe = p[_RHOE]
    rhon = p[_RHOL] * rhoe
    rhoo = p[_RHOH] * rhoe
    if rho < rhon:
        t = rho / rhon - 1.0
        return (p[_FN0] + p[_FN1] * t + p[_FN2] * t * t + p[_FN3] * t * t * t,
                (p[_FN1] + 2.0 * p[_FN2] * t + 3.0 * p[_FN3] * t * t) / rhon)
    if rho < rhoo:
        f3 = p[_F3] if rho < rhoe else p[_F3H]
        t = rho / rhoe - 1.0
        return (p[_F0] + p[_F1] * t + p[_F2] * t * t + f3 * t * t * t,
                (p[_F1] + 2.0 * p[_F2] * t + 3.0 * f3 * t * t) / rhoe)
    u = rho / p[_RHOS]
    eta = p[_ETA]
    ue = u**eta
    lu = math.log(u)
    return p[_FEE] * (1.0 - eta * lu) * ue, -p[_FEE] * eta * eta * lu * ue / rho


@numba.njit(cache=True)
def _eam(n, types, ii, jj, D, params):  # pragma: no cover - jitted
    # Full (directed) neighbour list: each pair appears as (i, j) and (j, i).
    rho = np.zeros(n)
    energies = np.zeros(n)
    forces = np.zeros((n, 3))
    m = ii.shape[0]
    dist = np.empty(m)
    for k in range(m):
        d = math.sqrt(D[k, 0] ** 2 + D[k, 1] ** 2 + D[k, 2] ** 2)
        dist[k] = d
        f, _ = _density(d, params[types[jj[k]]])
        rho[ii[k]] += f
    dF = np.empty(n)
    for a in range(n):
        e, de = _embed(rho[a], params[types[a]])
        energies[a] += e
        dF[a] = de
    for k in range(m):
        i = ii[k]
        j = jj[k]
        d = dist[k]
        ti = types[i]
        tj = types[j]
        phi, dphi = _pair(d, params[ti], params[tj], ti == tj)
        energies[i] += 0.5 * phi
        _, dfj = _density(d, params[tj])
        g = 0.5 * dphi + dF[i] * dfj
        for c in range(3):
            u = g * D[k, c] / d
            forces[i, c] += u
            forces[j, c] -= u
    return energies, forces
