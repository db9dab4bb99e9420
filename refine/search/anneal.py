"""Image-restrained simulated annealing: melt, then cool on E + α·χ².

A GA of ~300-atom particles whose offspring are relaxed on the image cost
(:mod:`refine.cost.image_forces`) matches the projection quickly (χ² at the noise
level, >90 % of the atoms within 0.5 Å in x, y) but stays in an amorphous,
high-energy arrangement along the beam: local moves cannot crystallise a
cluster. Molecular dynamics can. Langevin dynamics on the full cost

    C(r) = E(r) + α·χ²(r)

from a hot, liquid-like state down to room temperature lets the particle
crystallise while the image force holds its projection on the experiment —
the same melt–quench that makes realistic particles, steered by the image.
The ramp weighs χ² by a fraction of α (``AnnealSchedule.image_weight``):
the image force only acts in x, y and at full strength pins the melt to its
columns. A final FIRE quench on the full cost puts the result in its local
minimum.

:class:`Annealing` is a picklable operator (``annealing(atoms, seed)``), so a
GA can map it over a process pool; each call draws its thermal noise from its
own seed, which keeps runs reproducible whatever the worker order.

Units: temperatures in K, time step in fs, friction in 1/fs, α in eV per
unit χ².
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from surrogate.common import InputError

__all__ = ["AnnealSchedule", "Annealing"]


@dataclass(frozen=True)
class AnnealSchedule:
    """How one annealing run goes.

    Parameters
    ----------
    start_temperature, end_temperature : float
        K; the thermostat target falls linearly from one to the other.
    steps : int
        MD steps of the cooling ramp.
    timestep : float
        fs.
    friction : float
        Langevin friction in 1/fs (0.002: the thermostat acts over ~0.5 ps).
    image_every : int
        Recompute the image force every this many MD steps and reuse it in
        between (multiple time stepping: the image force changes on the
        scale of the PSF, σ ≈ 0.4 Å, the atoms move ~0.02 Å per step).
        The final quench always uses exact forces.
    quench_steps : int
        FIRE steps on the cost after the ramp.
    quench_fmax : float
        eV/Å.
    image_weight : float
        Fraction of α on χ² during the MD ramp (0 < w ≤ 1); the final
        quench uses the full α. The surrogate's image depends on the
        projected positions only, so the image force pins atoms to their
        columns in x, y; at full α the melt cannot rearrange across columns
        and freezes disordered. A weaker pull lets it crystallise while
        still steering it to the projection, and the quench then fits the
        projection tightly (on the small abTEM image, ``tests/data/small``,
        10 annealings of 3000 steps from one start reached 90 % of the atoms
        within 0.5 Å in 3 of 10 at w = 1 and 5 of 10 at w = 0.3:
        ``tests/benchmarks/bench_anneal_small.py``, docs/benchmarks.md).
    """

    start_temperature: float = 1500.0
    end_temperature: float = 300.0
    steps: int = 8000
    timestep: float = 5.0
    friction: float = 0.002
    image_every: int = 2
    quench_steps: int = 300
    quench_fmax: float = 0.02
    image_weight: float = 0.3

    def __post_init__(self):
        for name in ("start_temperature", "end_temperature", "timestep", "friction", "quench_fmax"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise InputError(f"anneal {name} must be a positive number, got {v!r}")
        for name, low in (("steps", 0), ("image_every", 1), ("quench_steps", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
                raise InputError(f"anneal {name} must be an integer ≥ {low}, got {v!r}")
        w = self.image_weight
        if isinstance(w, bool) or not (isinstance(w, (int, float)) and 0 < w <= 1):
            raise InputError(f"anneal image_weight must be a number in (0, 1], got {w!r}")

    def to_dict(self) -> dict:
        return asdict(self)


class _Cached:
    """Wraps a CostCalculator's image term: recompute it every ``every`` calls, reuse it in between."""

    def __init__(self, term, every: int):
        self.term = term
        self.every = int(every)
        self._count = 0
        self._last = None

    def chi2_and_gradient(self, positions, numbers, *, gradient: bool = True):
        if self._last is None or self._count % self.every == 0 or not gradient:
            self._last = self.term.chi2_and_gradient(positions, numbers, gradient=gradient)
        self._count += 1
        return self._last


class Annealing:
    """Image-restrained simulated annealing of a structure (an operator).

    Parameters
    ----------
    fitness : refine.cost.fitness.Fitness
        Image, model and noise weights; its ``alpha`` is used unless ``alpha`` is given.
    calculator : str, ase calculator or factory
        Energy calculator name for :func:`refine.cost.energy.make_calculator`
        (``"auto"``, ``"emt"``, …: made in the process that runs the
        annealing, as asap3 calculators do not pickle), a zero-argument
        factory, or a calculator instance (serial use).
    schedule : AnnealSchedule
    alpha : float, optional
        Weight of χ² (eV); default: ``fitness.alpha`` at call time.
    single_precision : bool
        Image forces from the float32 adjoint (:class:`refine.cost.image_forces.ImageTerm`):
        the image gradient is most of an MD step, and float32 makes the step
        1.31× faster (``tests/benchmarks/bench_anneal_step.py``; forces
        accurate to ~1e-6 relative, and the trajectory is chaotic anyway).
        Default True.

    Calling ``annealing(atoms, seed)`` returns a new ``ase.Atoms`` (no cell,
    no calculator) with ``info["anneal_seed"]``; ``atoms`` is not changed.
    """

    name = "anneal"

    def __init__(self, fitness, calculator="auto", schedule: AnnealSchedule | None = None, alpha=None, *,
                 single_precision: bool = True):
        self.fitness = fitness
        self.calculator = calculator
        self.schedule = schedule or AnnealSchedule()
        self.alpha = alpha
        self.single_precision = bool(single_precision)

    def _energy_calculator(self, symbols):
        c = self.calculator
        if isinstance(c, str):
            from refine.cost import make_calculator

            return make_calculator(c, tuple(sorted(set(symbols))))
        if isinstance(c, type) or (callable(c) and not hasattr(c, "calculate")):
            return c()
        return c

    def __call__(self, atoms, seed):
        from ase import units
        from ase.md.langevin import Langevin
        from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
        import warnings
        from ase.optimize import FIRE

        from refine.cost import CostCalculator, ImageTerm

        alpha = self.alpha if self.alpha is not None else getattr(self.fitness, "alpha", None)
        if alpha is None:
            raise InputError("annealing needs α: calibrate the fitness first or pass alpha")
        sch = self.schedule
        rng = np.random.default_rng(seed)
        work = atoms.copy()
        work.calc = None
        work.constraints = []
        span = np.ptp(work.positions, axis=0)
        work.cell = np.diag(span + 40.0)  # asap3 needs a cell; free cluster, no periodicity
        work.pbc = False
        term = ImageTerm(self.fitness, single_precision=self.single_precision)
        energy_calc = self._energy_calculator(work.get_chemical_symbols())
        if sch.steps > 0:
            work.calc = CostCalculator(_Cached(term, sch.image_every), energy_calc,
                                       alpha=float(alpha) * sch.image_weight)
            with warnings.catch_warnings():  # ASE ≥ 3.28 renames these; the old names still work
                warnings.simplefilter("ignore", (DeprecationWarning, FutureWarning))
                MaxwellBoltzmannDistribution(work, temperature_K=sch.start_temperature, rng=rng)
                Stationary(work)
                md = Langevin(work, sch.timestep * units.fs, temperature_K=sch.start_temperature,
                              friction=sch.friction / units.fs, fixcm=True, rng=rng)
            blocks = max(1, min(50, sch.steps // 20))
            done = 0
            for k in range(blocks):
                n = (sch.steps * (k + 1)) // blocks - done
                frac = k / max(blocks - 1, 1)
                md.set_temperature(temperature_K=sch.start_temperature
                                   + frac * (sch.end_temperature - sch.start_temperature))
                md.run(n)
                done += n
        if sch.quench_steps > 0:
            work.calc = CostCalculator(term, energy_calc, alpha=float(alpha))
            FIRE(work, logfile=None).run(fmax=sch.quench_fmax, steps=sch.quench_steps)
        out = atoms.copy()
        out.positions = work.positions
        out.calc = None
        out.info = dict(atoms.info)
        out.info["anneal_seed"] = int(seed)
        for key in ("cost", "chi2", "energy"):
            out.info.pop(key, None)
        return out
