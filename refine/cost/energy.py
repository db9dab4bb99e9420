"""Energies of candidate structures (the physical term of the fitness).

:class:`Energy` evaluates one ASE calculator on a private, reused
``ase.Atoms``: the calculator is created once (asap3's EMT builds neighbour
lists and parameter tables; creating it costs more than an evaluation) and
each call only updates positions (and numbers, when a species permutation
changed them).

Calculators by name (:func:`make_calculator`):

``"auto"``
    asap3 EMT when every element is one asap3's standard EMT parameters
    cover (Al, Ni, Cu, Pd, Ag, Pt, Au); else the alloy potential of
    :mod:`surrogate.groundtruth.particles` (``energy_calculator(symbols)``, e.g. for
    Pt–Mo) when that module provides one; else :class:`InputError` naming
    the supported elements.
``"emt"``, ``"asap-emt"``, ``"asap3-emt"``
    asap3's EMT (fast, C++).
``"ase-emt"``
    ASE's pure-Python EMT (same metals plus H, C, N, O; ~100× slower).
``"particles"``
    the potential chosen in :mod:`surrogate.groundtruth.particles`.
``"package.module:Name"`` or ``"package.module.Name"``
    any importable calculator class or factory, called with no arguments
    (or with ``symbols=`` when it accepts that keyword).

An ``ase`` calculator instance is accepted as is.

Energies are in eV. EMT energies are relative to the bulk crystal
(a cluster has positive energy: its surface energy), which is all the
fitness needs: only differences between candidates of one composition matter.
Free boundary conditions: atoms get a non-periodic box around them (asap3
needs a non-zero cell even without periodicity; atoms may leave it).
"""

from __future__ import annotations

import importlib
import inspect
import logging

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers, chemical_symbols

from surrogate.common import InputError

__all__ = ["Energy", "make_calculator", "ASAP_EMT_ELEMENTS", "ASE_EMT_ELEMENTS", "CALCULATOR_NAMES"]

log = logging.getLogger(__name__)

#: elements with standard parameters in asap3's EMT
ASAP_EMT_ELEMENTS = ("Al", "Ni", "Cu", "Pd", "Ag", "Pt", "Au")
#: elements ASE's own EMT knows (H, C, N, O only as rough pseudo-parameters)
ASE_EMT_ELEMENTS = ("Al", "Ni", "Cu", "Pd", "Ag", "Pt", "Au", "H", "C", "N", "O")
CALCULATOR_NAMES = ("auto", "emt", "asap-emt", "asap3-emt", "ase-emt", "particles")


def _particles_factory():
    """``surrogate.groundtruth.particles.energy_calculator`` when it exists, else None."""
    try:
        mod = importlib.import_module("surrogate.groundtruth.particles")
    except ImportError:
        return None
    return getattr(mod, "energy_calculator", None)


def _call_factory(factory, elements):
    try:
        return factory(list(elements))
    except ValueError as exc:  # surrogate's InputError is a ValueError of another family
        if isinstance(exc, InputError):
            raise
        raise InputError(str(exc)) from None
    except ImportError as exc:
        raise InputError(f"the alloy potential for {', '.join(elements)} is not available ({exc})") from None


def _check_symbols(symbols) -> tuple[str, ...]:
    out = []
    for s in symbols:
        if isinstance(s, (int, np.integer)):
            if not 1 <= int(s) < len(chemical_symbols):
                raise InputError(f"unknown atomic number {s}")
            s = chemical_symbols[int(s)]
        if s not in atomic_numbers:
            raise InputError(f"unknown element {s!r}")
        out.append(s)
    return tuple(sorted(set(out)))


def _unsupported(elements, supported, what) -> InputError:
    missing = sorted(set(elements) - set(supported))
    return InputError(f"{what} has no parameters for {', '.join(missing)}; it supports "
                      f"{', '.join(supported)}. Choose another calculator (calculator='package.module:Class') "
                      "or a composition of supported elements")


def make_calculator(name="auto", symbols=()):
    """Build an ASE calculator by name for structures made of ``symbols``.

    Parameters
    ----------
    name : str or ase calculator
        See the module docstring.
    symbols : iterable of str or int
        Elements the calculator must handle (checked where the calculator's
        coverage is known).

    Returns
    -------
    ase.calculators.calculator.Calculator (or asap3 calculator)

    Raises
    ------
    InputError
        Unknown name, unimportable path, or elements the calculator does not cover.
    """
    elements = _check_symbols(symbols)
    if not isinstance(name, str):
        if hasattr(name, "get_potential_energy") or hasattr(name, "calculate"):
            return name
        raise InputError(f"calculator must be a name or an ASE calculator, got {type(name).__name__}")
    key = name.strip().lower()
    if key == "auto":
        if set(elements) <= set(ASAP_EMT_ELEMENTS):
            return make_calculator("asap-emt", elements)
        factory = _particles_factory()
        if factory is not None:
            return _call_factory(factory, elements)
        raise _unsupported(elements, ASAP_EMT_ELEMENTS, "asap3 EMT (and no alloy potential is available yet)")
    if key in ("emt", "asap-emt", "asap3-emt", "asap"):
        if not set(elements) <= set(ASAP_EMT_ELEMENTS):
            raise _unsupported(elements, ASAP_EMT_ELEMENTS, "asap3 EMT")
        from asap3 import EMT

        return EMT()
    if key == "ase-emt":
        if not set(elements) <= set(ASE_EMT_ELEMENTS):
            raise _unsupported(elements, ASE_EMT_ELEMENTS, "ASE EMT")
        from ase.calculators.emt import EMT

        return EMT()
    if key == "particles":
        factory = _particles_factory()
        if factory is None:
            raise InputError("surrogate.groundtruth.particles provides no energy_calculator(symbols) yet; "
                             f"use one of {', '.join(CALCULATOR_NAMES)} or a dotted path")
        return _call_factory(factory, elements)
    # a dotted path
    modname, sep, attr = name.partition(":")
    if not sep:
        modname, _, attr = name.rpartition(".")
    if not modname or not attr:
        raise InputError(f"unknown calculator {name!r}; use one of {', '.join(CALCULATOR_NAMES)} "
                         "or 'package.module:Class'")
    try:
        obj = getattr(importlib.import_module(modname), attr)
    except (ImportError, AttributeError) as exc:
        raise InputError(f"cannot import calculator {name!r}: {exc}") from None
    try:
        params = inspect.signature(obj).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins without signature
        params = {}
    return obj(symbols=list(elements)) if "symbols" in params else obj()


class Energy:
    """Potential energy of structures with a fixed, reused calculator.

    Parameters
    ----------
    calculator : str or ase calculator
        See :func:`make_calculator`.
    symbols : iterable of str
        Elements of the structures to evaluate (checked against the calculator).
    per_atom : bool
        Return E / N instead of E.

    Notes
    -----
    Not thread-safe (one private ``Atoms``); pickles without its calculator,
    which is rebuilt by name on first use (for Dask workers).
    """

    def __init__(self, calculator="auto", symbols=(), *, per_atom: bool = False):
        self._spec = calculator
        self.elements = _check_symbols(symbols)
        self.per_atom = bool(per_atom)
        self._calc = make_calculator(calculator, self.elements)
        self._atoms = None
        self._present = frozenset()

    @property
    def calculator(self):
        """The ASE calculator (created once)."""
        if self._calc is None:
            self._calc = make_calculator(self._spec, self.elements)
        return self._calc

    def __getstate__(self):
        state = dict(self.__dict__)
        if not isinstance(self._spec, str):
            raise TypeError("an Energy built from a calculator instance cannot be pickled; build it by name")
        state["_calc"] = None
        state["_atoms"] = None
        return state

    def _prepare(self, positions, numbers):
        atoms = self._atoms
        n = len(numbers)
        if atoms is None or len(atoms) != n:
            lo = positions.min(axis=0) if n else np.zeros(3)
            hi = positions.max(axis=0) if n else np.zeros(3)
            atoms = Atoms(numbers=numbers, positions=positions, pbc=False,
                          cell=np.diag(np.maximum(hi - lo, 1.0) + 20.0))
            missing = sorted(set(atoms.get_chemical_symbols()) - set(self.elements)) if self.elements else []
            if missing:
                self._calc = make_calculator(self._spec, tuple(self.elements) + tuple(missing))
                self.elements = _check_symbols(tuple(self.elements) + tuple(missing))
            atoms.calc = self.calculator
            self._atoms = atoms
            self._present = frozenset(np.unique(numbers).tolist())
            return atoms
        if not np.array_equal(atoms.numbers, numbers):
            new = sorted(set(chemical_symbols[z] for z in np.unique(numbers)) - set(self.elements))
            if new:
                raise InputError(f"structure has element(s) {', '.join(new)} this Energy was not built for "
                                 f"({', '.join(self.elements)})")
            present = frozenset(np.unique(numbers).tolist())
            atoms.numbers = numbers
            if present != self._present:
                # asap3 sets its per-element tables up when attached: a new set of
                # elements needs a fresh calculator (a permutation does not)
                self._calc = make_calculator(self._spec, self.elements)
                atoms.calc = self._calc
                self._present = present
        atoms.positions = positions
        return atoms

    def __call__(self, atoms_or_positions, numbers=None) -> float:
        """Energy (eV, or eV/atom with ``per_atom``) of an ``Atoms`` or of (positions, numbers)."""
        if numbers is None:
            positions = np.asarray(atoms_or_positions.positions, dtype=float)
            numbers = atoms_or_positions.numbers
        else:
            positions = np.asarray(atoms_or_positions, dtype=float)
            numbers = np.asarray(numbers)
        if positions.ndim != 2 or positions.shape[1] != 3 or len(positions) != len(numbers):
            raise InputError(f"positions must be (n, 3) with n numbers, got {positions.shape} and {len(numbers)}")
        if len(numbers) == 0:
            raise InputError("cannot compute the energy of a structure with no atoms")
        atoms = self._prepare(positions, numbers)
        e = float(atoms.get_potential_energy())
        return e / len(numbers) if self.per_atom else e
