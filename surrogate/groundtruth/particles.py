"""Pt and Pt–Mo nanoparticle generators: crystalline → disordered → amorphous.

Families (as Combs et al. 2019 trained on, "ranging from purely amorphous to
purely crystalline"):

``cuboctahedron``, ``truncated_octahedron``, ``icosahedron``, ``decahedron``,
``marks_decahedron``
    fcc/multiply-twinned shapes from :mod:`ase.cluster`, trimmed to exactly
    the requested number of atoms by removing low-coordinated surface atoms.
``column_rod``
    A cylinder of fcc crystal with a zone axis (⟨110⟩ or ⟨100⟩) along the
    beam and 8–16 atoms in every column: narrow (its cross-section is the
    number of atoms over the column height), so PRISM, whose cost follows
    the area, simulates it quickly, while its columns are as tall as those
    of a particle three times the size. For models of images of thicker
    particles than the compact shapes of a size range give.
``disordered``
    A crystalline shape rattled by ``rattle`` Å rms and partly relaxed
    (a few FIRE steps), i.e. crystalline with frozen-in disorder.
``amorphous``
    Melt-and-quench molecular dynamics (asap3/ASE Langevin) from
    ``melt_temperature`` to 300 K at ``cooling_rate`` K/ps, then relaxed.
    Fast quenches (≳ 50 K/ps) stay glassy; slow ones recrystallize partly.

Random alloying replaces exactly ``round(mo_fraction · n_atoms)`` randomly
chosen atoms by Mo *before* any relaxation or MD, so disordered/amorphous
alloys relax with the alloy potential.

Every function takes a ``numpy.random.Generator``; nothing touches global
random state (the MD thermostat is seeded from the generator too). Every
generated particle has no two atoms closer than ``min_distance`` Å (default
:data:`MIN_DISTANCE`), checked at the end (a repair step pushes apart any
pair that a short relaxation left too close; if that fails a
:class:`RuntimeError` is raised rather than returning an unphysical
structure).

Energies
--------
:func:`energy_calculator` is the single source of the interatomic potential,
shared with the refinement:

* Pt only (or other EMT metals): asap3 EMT (Jacobsen, Stoltze & Nørskov,
  Surf. Sci. 366, 394 (1996)).
* anything containing Mo: the embedded-atom potential of Zhou, Johnson &
  Wadley, Phys. Rev. B 69, 144113 (2004), whose published per-element
  parameters (Pt and Mo among them) come with an alloy construction
  (normalized densities, Johnson's cross-pair rule); implemented in
  :mod:`surrogate.groundtruth.eam` (Numba). See that module for the caveat that the
  Pt–Mo cross terms are from the mixing rule, not fitted to Pt–Mo data.
"""

from __future__ import annotations

import logging
import math

import numpy as np
from ase import Atoms

from surrogate.common import InputError
from surrogate.common.geometry import coordination_numbers

__all__ = [
    "FAMILIES",
    "CRYSTALLINE_FAMILIES",
    "MIN_DISTANCE",
    "make_particle",
    "crystalline_particle",
    "column_rod",
    "disorder",
    "melt_quench",
    "alloy",
    "random_rotation",
    "minimum_distance",
    "energy_calculator",
    "relax",
]

logger = logging.getLogger(__name__)

CRYSTALLINE_FAMILIES = ("cuboctahedron", "truncated_octahedron", "icosahedron", "decahedron", "marks_decahedron")
FAMILIES = CRYSTALLINE_FAMILIES + ("disordered", "amorphous", "column_rod")
#: atoms per column of a ``column_rod`` (drawn uniformly, inclusive)
ROD_COLUMN_HEIGHTS = (8, 16)
#: Å; no two atoms of a generated particle are closer. Pt–Pt nearest
#: neighbours are 2.77 Å in the bulk, ~2.6 Å at surfaces; 2.2 Å is far
#: inside any physical configuration yet excludes overlaps.
MIN_DISTANCE = 2.2
#: Å, fcc lattice constants used to build the crystalline shapes.
LATTICE_CONSTANTS = {"Pt": 3.924}
_EMT_ELEMENTS = {"Al", "Ni", "Cu", "Pd", "Ag", "Pt", "Au"}


# --------------------------------------------------------------------- energy
def energy_calculator(symbols):
    """The interatomic potential for structures made of ``symbols``.

    Parameters
    ----------
    symbols : iterable of str
        Chemical symbols present (e.g. ``atoms.get_chemical_symbols()``).

    Returns
    -------
    ase.calculators.calculator.Calculator
        A fresh calculator: asap3 EMT for EMT metals (Pt), the Zhou–Johnson–
        Wadley EAM (:class:`surrogate.groundtruth.eam.ZhouEAM`) when Mo is present.
    """
    elements = set(symbols)
    if not elements:
        raise InputError("no elements given for the energy calculator")
    if elements <= _EMT_ELEMENTS:
        from asap3 import EMT

        return EMT()
    from surrogate.groundtruth.eam import ZHOU2004_ELEMENTS, ZhouEAM

    if elements <= set(ZHOU2004_ELEMENTS):
        return ZhouEAM(sorted(elements))
    raise InputError(f"no interatomic potential for elements {sorted(elements)}; "
                     f"supported: EMT {sorted(_EMT_ELEMENTS)} or Zhou 2004 EAM {sorted(ZHOU2004_ELEMENTS)}")


def relax(atoms, fmax: float = 0.05, steps: int = 200) -> Atoms:
    """Relax in place with FIRE on :func:`energy_calculator`; returns ``atoms``."""
    from ase.optimize import FIRE

    _attach_calculator(atoms)
    FIRE(atoms, logfile=None).run(fmax=fmax, steps=steps)
    return atoms


def _attach_calculator(atoms, vacuum: float = 20.0) -> None:
    # asap3 needs a non-degenerate cell even for a free particle: give it a
    # non-periodic box with ``vacuum`` Å around the atoms.
    if atoms.cell.rank < 3 or np.any(atoms.cell.lengths() < np.ptp(atoms.positions, axis=0) + vacuum / 2):
        atoms.pbc = False
        atoms.cell = np.ptp(atoms.positions, axis=0) + vacuum
    atoms.calc = energy_calculator(atoms.get_chemical_symbols())


# ---------------------------------------------------------------- crystalline
def _shape_candidates(family: str, symbol: str):
    from ase.cluster import Decahedron, Icosahedron, Octahedron

    a = LATTICE_CONSTANTS.get(symbol)
    kw = {"latticeconstant": a} if a else {}
    if family == "icosahedron":
        for p in range(2, 12):
            yield lambda p=p: Icosahedron(symbol, p, **kw)
    elif family == "cuboctahedron":
        for c in range(1, 8):
            yield lambda c=c: Octahedron(symbol, 2 * c + 1, c, **kw)
    elif family == "truncated_octahedron":
        # Regular truncation: length = 3·cutoff + 1 gives hexagonal {111} facets.
        for c in range(1, 6):
            yield lambda c=c: Octahedron(symbol, 3 * c + 1, c, **kw)
    elif family == "decahedron":
        for p in range(2, 10):
            yield lambda p=p: Decahedron(symbol, p, max(1, p // 2), 0, **kw)
    elif family == "marks_decahedron":
        for p in range(2, 9):
            yield lambda p=p: Decahedron(symbol, p, max(1, p // 2), 1, **kw)
    else:
        raise InputError(f"unknown crystalline family {family!r}; expected one of {CRYSTALLINE_FAMILIES}")


def crystalline_particle(family: str, n_atoms: int, rng: np.random.Generator, symbol: str = "Pt") -> Atoms:
    """A crystalline ``ase.cluster`` shape with exactly ``n_atoms`` atoms.

    The smallest shape of the family with at least ``n_atoms`` atoms is
    built and surplus atoms are removed one at a time, each chosen at random
    among the currently lowest-coordinated (corner/edge) atoms — so the
    particle stays compact and the facets recognisable. Centered at the origin.
    """
    n_atoms = _validate_n(n_atoms)
    for build in _shape_candidates(family, symbol):
        atoms = build()
        if len(atoms) >= n_atoms:
            break
    else:
        raise InputError(f"{family} shapes available here stop at {len(atoms)} atoms; asked for {n_atoms}")
    nn = (LATTICE_CONSTANTS.get(symbol, 3.9) / math.sqrt(2.0))
    keep = np.ones(len(atoms), bool)
    pos = atoms.positions
    while keep.sum() > n_atoms:
        idx = np.flatnonzero(keep)
        cn = coordination_numbers(pos[idx], 1.2 * nn)
        low = idx[cn == cn.min()]
        keep[rng.choice(low)] = False
    # A plain Atoms: ase.cluster.Cluster's extra state does not survive slicing.
    atoms = Atoms(np.array(atoms.get_chemical_symbols())[keep].tolist(), positions=pos[keep])
    atoms.info["family"] = family
    atoms.positions = atoms.positions - atoms.positions.mean(axis=0)
    atoms.cell = None
    atoms.pbc = False
    return atoms


def column_rod(n_atoms: int, rng: np.random.Generator, symbol: str = "Pt", *, axis: str | None = None,
               heights: tuple[int, int] = ROD_COLUMN_HEIGHTS) -> Atoms:
    """A cylinder of fcc crystal with ``n_atoms`` atoms and a zone axis along z (the beam).

    ``axis`` "110" or "100" (default: drawn); the column height, in atoms,
    is drawn from ``heights`` (inclusive); the cylinder's radius is the
    smallest that holds ``n_atoms`` atoms at that height, and surplus atoms
    are removed from the ends of the outermost columns (so that no column
    has a hole and the inner ones keep the drawn height). Centered at the origin; ``info`` holds
    ``family``, ``axis`` and ``column_height`` (atoms).
    """
    from ase.build import bulk
    from scipy.spatial import cKDTree
    from scipy.spatial.transform import Rotation

    n_atoms = _validate_n(n_atoms)
    a = LATTICE_CONSTANTS.get(symbol, 3.9)
    axis = str(rng.choice(["110", "100"])) if axis is None else str(axis)
    if axis not in ("110", "100"):
        raise InputError(f"column_rod axis must be '110' or '100', got {axis!r}")
    lo, hi = (int(v) for v in heights)
    if not 2 <= lo <= hi:
        raise InputError(f"column heights must be 2 <= lo <= hi atoms, got {heights!r}")
    height = int(rng.integers(lo, hi + 1))
    spacing = a / math.sqrt(2.0) if axis == "110" else a  # atoms along a column, Å
    # a block of crystal large enough for any radius needed, the zone axis turned onto z
    reach = math.sqrt(n_atoms / height) * a + 2.0 * a
    m = int(math.ceil(max(reach, 0.5 * height * spacing + a) / a)) + 1
    block = bulk(symbol, "fcc", a=a, cubic=True).repeat((2 * m, 2 * m, 2 * m))
    pos = block.positions - block.positions.mean(axis=0)
    pos -= pos[np.argmin(np.linalg.norm(pos, axis=1))]  # an atom at the origin: columns through it are whole
    direction = [1.0, 1.0, 0.0] if axis == "110" else [0.0, 0.0, 1.0]
    rot, _ = Rotation.align_vectors([[0.0, 0.0, 1.0]], [direction])
    pos = rot.apply(pos)
    half = 0.5 * (height - 1) * spacing + 0.25 * spacing
    slab = pos[np.abs(pos[:, 2]) <= half]
    r_xy = np.hypot(slab[:, 0], slab[:, 1])
    order = np.sort(r_xy)
    if len(order) < n_atoms:  # pragma: no cover - the block is sized for it
        raise RuntimeError("column_rod: block too small")
    inside = slab[r_xy <= order[n_atoms - 1] + 1e-6]
    keep = np.ones(len(inside), bool)
    step = np.array([0.0, 0.0, spacing])
    while keep.sum() > n_atoms:
        # surplus atoms leave from the ends of the outermost columns: no column gets a hole, inner ones stay whole
        idx = np.flatnonzero(keep)
        tree = cKDTree(inside[idx])
        end = (tree.query(inside[idx] + step)[0] > 0.1) | (tree.query(inside[idx] - step)[0] > 0.1)
        r = np.where(end, np.round(np.hypot(inside[idx, 0], inside[idx, 1]), 3), -np.inf)
        keep[rng.choice(idx[r == r.max()])] = False
    atoms = Atoms([symbol] * n_atoms, positions=inside[keep] - inside[keep].mean(axis=0))
    atoms.info.update(family="column_rod", axis=axis, column_height=height)
    return atoms


# ------------------------------------------------------------------- alloying
def alloy(atoms: Atoms, fraction: float, rng: np.random.Generator, solute: str = "Mo") -> Atoms:
    """Replace exactly ``round(fraction · N)`` randomly chosen atoms by ``solute`` (in place)."""
    if not (0.0 <= fraction <= 1.0):
        raise InputError(f"alloy fraction must be in [0, 1], got {fraction!r}")
    n = int(round(fraction * len(atoms)))
    if n:
        idx = rng.choice(len(atoms), size=n, replace=False)
        symbols = np.array(atoms.get_chemical_symbols(), dtype=object)
        symbols[idx] = solute
        atoms.set_chemical_symbols(list(symbols))
    return atoms


# ------------------------------------------------------------------- disorder
def disorder(atoms: Atoms, rng: np.random.Generator, rattle: float = 0.25, relax_steps: int = 20) -> Atoms:
    """Partial disorder: Gaussian displacements of ``rattle`` Å rms per axis, then
    ``relax_steps`` FIRE steps so that the structure is physical but keeps
    some of the disorder (in place)."""
    if not (rattle >= 0):
        raise InputError(f"rattle must be a non-negative number of Å, got {rattle!r}")
    atoms.positions = atoms.positions + rng.normal(0.0, rattle, size=atoms.positions.shape)
    if relax_steps > 0:
        relax(atoms, fmax=0.05, steps=relax_steps)
    return atoms


def melt_quench(atoms: Atoms, rng: np.random.Generator, melt_temperature: float = 2200.0,
                melt_time: float = 10.0, cooling_rate: float = 100.0, final_temperature: float = 300.0,
                timestep: float = 2.0, relax_steps: int = 300) -> Atoms:
    """Amorphize by molecular dynamics: melt, quench, relax (in place).

    Parameters
    ----------
    melt_temperature : float
        K, held for ``melt_time`` ps (Pt melts at 2041 K in the bulk and lower
        in a particle of a few hundred atoms).
    cooling_rate : float
        K/ps of the linear quench to ``final_temperature`` K (10–1000 K/ps are
        sensible; slower is more crystalline).
    timestep : float
        fs.

    Atoms that evaporate during the melt (no neighbour within 4 Å) are put
    back on the particle's surface before the quench so that the atom count
    and composition stay exact.
    """
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md import velocitydistribution as vd

    if not (cooling_rate > 0 and melt_temperature > final_temperature > 0 and melt_time >= 0 and timestep > 0):
        raise InputError("melt-quench needs cooling_rate > 0, melt_temperature > final_temperature > 0, "
                         "melt_time >= 0 and timestep > 0")
    _attach_calculator(atoms, vacuum=40.0)
    # ASE >= 3.28 renamed MaxwellBoltzmannDistribution to thermalize_momenta.
    thermalize = getattr(vd, "thermalize_momenta", None) or vd.MaxwellBoltzmannDistribution
    thermalize(atoms, temperature_K=melt_temperature, rng=rng)
    # fixcm=False: a free particle's drift is harmless and fixcm biases NVT sampling.
    dyn = Langevin(atoms, timestep * units.fs, temperature_K=melt_temperature, friction=0.02, fixcm=False, rng=rng)
    n_melt = int(round(melt_time * 1000.0 / timestep))
    chunk = 250
    for start in range(0, n_melt, chunk):
        dyn.run(min(chunk, n_melt - start))
        _recapture(atoms, rng)
    n_cool = max(1, int(round((melt_temperature - final_temperature) / cooling_rate * 1000.0 / timestep)))
    steps_per_stage = max(1, n_cool // 50)
    done = 0
    while done < n_cool:
        t = melt_temperature - (melt_temperature - final_temperature) * done / n_cool
        dyn.set_temperature(temperature_K=t)
        n = min(steps_per_stage, n_cool - done)
        dyn.run(n)
        done += n
        _recapture(atoms, rng)
    atoms.set_momenta(np.zeros_like(atoms.positions))
    relax(atoms, fmax=0.05, steps=relax_steps)
    return atoms


def _recapture(atoms: Atoms, rng: np.random.Generator, cutoff: float = 4.0) -> None:
    # Put evaporated atoms back at a random surface direction just outside the
    # particle, at rest, so that counts and compositions stay as requested.
    pos = atoms.positions
    cn = coordination_numbers(pos, cutoff)
    lone = np.flatnonzero(cn == 0)
    if len(lone) == 0:
        return
    rest = np.setdiff1d(np.arange(len(atoms)), lone)
    com = pos[rest].mean(axis=0)
    radius = np.linalg.norm(pos[rest] - com, axis=1).max()
    mom = atoms.get_momenta()
    for i in lone:
        d = rng.normal(size=3)
        d /= np.linalg.norm(d)
        pos[i] = com + d * (radius + 2.0)
        mom[i] = 0.0
    atoms.positions = pos
    atoms.set_momenta(mom)
    logger.debug("recaptured %d evaporated atoms", len(lone))


# ------------------------------------------------------------------- geometry
def random_rotation(atoms: Atoms, rng: np.random.Generator, axis: str | None = None) -> Atoms:
    """Rotate about the centre of mass (in place): uniformly in SO(3), or about ``axis`` ('z')."""
    from scipy.spatial.transform import Rotation

    com = atoms.positions.mean(axis=0)
    if axis == "z":
        rot = Rotation.from_euler("z", rng.uniform(0.0, 360.0), degrees=True)
    elif axis is None:
        rot = Rotation.random(random_state=np.random.RandomState(rng.integers(2**31 - 1)))
    else:
        raise InputError(f"rotation axis must be 'z' or None, got {axis!r}")
    atoms.positions = rot.apply(atoms.positions - com) + com
    return atoms


def minimum_distance(atoms: Atoms) -> float:
    """Smallest interatomic distance in Å (inf for fewer than two atoms)."""
    from scipy.spatial import cKDTree

    if len(atoms) < 2:
        return math.inf
    d, _ = cKDTree(atoms.positions).query(atoms.positions, k=2)
    return float(d[:, 1].min())


def _repair_min_distance(atoms: Atoms, d_min: float, iterations: int = 200) -> None:
    # Push every too-close pair apart symmetrically along its bond until all
    # pairs are at least d_min (+1 %) apart.
    from scipy.spatial import cKDTree

    pos = atoms.positions.copy()
    for _ in range(iterations):
        pairs = cKDTree(pos).query_pairs(d_min, output_type="ndarray")
        if len(pairs) == 0:
            break
        for i, j in pairs:
            v = pos[j] - pos[i]
            r = np.linalg.norm(v)
            v = v / r if r > 1e-8 else np.array([1.0, 0.0, 0.0])
            shift = 0.5 * (1.01 * d_min - r)
            pos[i] -= shift * v
            pos[j] += shift * v
    atoms.positions = pos


# ---------------------------------------------------------------------- main
def _validate_n(n_atoms) -> int:
    if int(n_atoms) != n_atoms or n_atoms < 2:
        raise InputError(f"number of atoms must be an integer >= 2, got {n_atoms!r}")
    return int(n_atoms)


def make_particle(family: str, n_atoms: int, rng: np.random.Generator, *, mo_fraction: float = 0.0,
                  base: str = "Pt", rattle: float = 0.25, cooling_rate: float = 100.0,
                  melt_temperature: float = 2200.0, orientation: str = "zone",
                  column_heights: tuple = ROD_COLUMN_HEIGHTS, min_distance: float = MIN_DISTANCE) -> Atoms:
    """One nanoparticle of a family, size and composition.

    Parameters
    ----------
    family : str
        One of :data:`FAMILIES`.
    n_atoms : int
        Exact number of atoms.
    rng : numpy.random.Generator
        All randomness (trimming, alloying, rattling, MD, rotation).
    mo_fraction : float
        Fraction of atoms replaced by Mo; exactly ``round(mo_fraction·n_atoms)``.
    rattle : float
        Å rms displacement for ``disordered``.
    cooling_rate : float
        K/ps for ``amorphous``.
    column_heights : (int, int)
        Atoms per column of a ``column_rod``, drawn from [lo, hi].
    orientation : {"zone", "random"}
        "zone": as built by ``ase.cluster`` (a low-index/symmetry axis along
        the beam) with a random rotation about z; "random": uniform 3-D
        rotation. Amorphous particles are always rotated uniformly.
    min_distance : float
        Å; guaranteed minimum interatomic distance.

    Returns
    -------
    ase.Atoms
        Centered at the origin, no cell, ``info`` holding the recipe
        (family, n_atoms, mo_fraction, rattle / cooling_rate, orientation).
    """
    if not isinstance(rng, np.random.Generator):
        raise InputError("make_particle needs a numpy.random.Generator")
    n_atoms = _validate_n(n_atoms)
    if family not in FAMILIES:
        raise InputError(f"unknown particle family {family!r}; expected one of {FAMILIES}")
    if orientation not in ("zone", "random"):
        raise InputError(f"orientation must be 'zone' or 'random', got {orientation!r}")
    info = {"family": family, "n_atoms": n_atoms, "mo_fraction": float(mo_fraction), "orientation": orientation}
    if family in CRYSTALLINE_FAMILIES:
        atoms = crystalline_particle(family, n_atoms, rng, base)
        alloy(atoms, mo_fraction, rng)
    elif family == "column_rod":
        atoms = column_rod(n_atoms, rng, base, heights=tuple(column_heights))
        alloy(atoms, mo_fraction, rng)
        info.update(axis=atoms.info["axis"], column_height=atoms.info["column_height"])
    elif family == "disordered":
        shape = CRYSTALLINE_FAMILIES[rng.integers(len(CRYSTALLINE_FAMILIES))]
        atoms = crystalline_particle(shape, n_atoms, rng, base)
        alloy(atoms, mo_fraction, rng)
        disorder(atoms, rng, rattle=rattle)
        info.update(shape=shape, rattle=float(rattle))
    else:
        shape = CRYSTALLINE_FAMILIES[rng.integers(len(CRYSTALLINE_FAMILIES))]
        atoms = crystalline_particle(shape, n_atoms, rng, base)
        alloy(atoms, mo_fraction, rng)
        melt_quench(atoms, rng, melt_temperature=melt_temperature, cooling_rate=cooling_rate)
        info.update(shape=shape, cooling_rate=float(cooling_rate), melt_temperature=float(melt_temperature))
        orientation = "random"
        info["orientation"] = orientation
    random_rotation(atoms, rng, axis="z" if orientation == "zone" else None)
    if minimum_distance(atoms) < min_distance:
        _repair_min_distance(atoms, min_distance)
    d = minimum_distance(atoms)
    if d < min_distance:  # pragma: no cover - the repair converges for physical inputs
        raise RuntimeError(f"could not make {family} particle with minimum distance {min_distance} Å (got {d:.3f})")
    atoms.calc = None
    if atoms.has("momenta"):  # MD leftovers are not part of the structure
        del atoms.arrays["momenta"]
    atoms.positions = atoms.positions - atoms.positions.mean(axis=0)
    atoms.cell = None
    atoms.pbc = False
    atoms.info = dict(info)
    return atoms
