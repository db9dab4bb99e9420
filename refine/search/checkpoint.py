"""GA checkpoints without pickle: one ``.npz`` file of arrays and a JSON header.

:func:`save_checkpoint` writes what DEAP's checkpoint tutorial keeps
(population, generation, hall of fame, logbook, random state) plus what an
exact resume of this GA needs (the stagnation count, α and the finishing
stage, the durations that decide whether an annealing or a polish still fits
in the time limit, the count of out-of-domain evaluations, the settings and
the composition). :func:`load_checkpoint` reads it back as a dict with the
same keys.

File layout (``checkpoint.npz``, format ``stem-refine-ga-checkpoint``,
version 2):

* ``header``: the UTF-8 bytes of a JSON object (uint8 array) with the
  scalars, the settings (flat: :data:`refine.search.settings.FLAT_NAMES`,
  so the header does not change with how the settings are grouped in the
  code), the NumPy generator's ``bit_generator.state``
  (its 128-bit integers are exact JSON integers), the logbook records and
  each individual's ``info``. Python's ``json`` writes a float as its
  shortest round-trip ``repr``, NaN and ±∞ as ``NaN``/``Infinity``, so every
  float read back is the float written, bit for bit.
* per group ``population`` and ``hall_of_fame``: ``<group>_sizes`` (m,)
  atoms per individual; ``<group>_numbers`` (Σ sizes,) and
  ``<group>_positions`` (Σ sizes, 3) Å, concatenated;
  ``<group>_cell`` (m, 3, 3) Å, ``<group>_pbc`` (m, 3);
  ``<group>_fitness`` (m, k) fitness values (NaN where invalid) and
  ``<group>_valid`` (m,).

Python's global ``random`` state is not kept: nothing in the search draws
from it (the parent selection uses the injected NumPy generator instead of
DEAP's ``selTournament``; ``selNSGA2``, ``sortNondominated`` and the hall of
fame draw nothing).

The file is read with ``allow_pickle=False``: loading a checkpoint never
runs code, and an array that would need unpickling is refused. A folder
that still holds a ``checkpoint.pkl`` of an older stem-refine is refused
without opening it.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from deap import tools

from surrogate.common import InputError, atomic_write_bytes
from refine.search.individuals import StemIndividual, StemParetoIndividual
from refine.search.selection import SimilarityCriterion

__all__ = ["CHECKPOINT_NAME", "LEGACY_CHECKPOINT_NAME", "CHECKPOINT_FORMAT", "CHECKPOINT_VERSION",
           "save_checkpoint", "load_checkpoint"]

CHECKPOINT_NAME = "checkpoint.npz"
#: the pickled checkpoint of stem-refine before version 2 of the format: refused, never opened
LEGACY_CHECKPOINT_NAME = "checkpoint.pkl"
CHECKPOINT_FORMAT = "stem-refine-ga-checkpoint"
CHECKPOINT_VERSION = 2

#: state entries that are plain JSON values (everything but the individuals and the logbook)
_SCALARS = ("generation", "best_cost", "stale", "evaluations", "elapsed", "alpha", "rng_state", "settings",
            "composition", "operators", "finishing", "search_alpha", "anneal_seconds", "polish_seconds",
            "n_out_of_domain")
_GROUPS = ("population", "hall_of_fame")


def _json_value(o):
    """JSON form of the NumPy scalars an ``info`` dict may hold; anything else cannot go into a checkpoint."""
    if isinstance(o, (np.integer, np.bool_)):
        return o.item()
    if isinstance(o, np.floating):
        return float(o)
    raise TypeError(f"a checkpoint cannot hold a {type(o).__name__} ({o!r})")


def _individual_arrays(group: str, individuals) -> tuple[dict, list]:
    """The arrays of a list of individuals (see the module docstring) and their ``info`` dicts."""
    n_obj = max((len(ind.fitness.weights) for ind in individuals), default=1)
    fitness = np.full((len(individuals), n_obj), np.nan)
    valid = np.zeros(len(individuals), dtype=bool)
    for k, ind in enumerate(individuals):
        if ind.fitness.valid:
            fitness[k, : len(ind.fitness.values)] = ind.fitness.values
            valid[k] = True
    arrays = {
        f"{group}_sizes": np.array([len(ind) for ind in individuals], dtype=np.int64),
        f"{group}_numbers": np.concatenate([ind.numbers for ind in individuals] or [np.empty(0, np.int64)]),
        f"{group}_positions": np.concatenate([ind.positions for ind in individuals] or [np.empty((0, 3))]),
        f"{group}_cell": np.array([ind.cell.array for ind in individuals], dtype=float).reshape(-1, 3, 3),
        f"{group}_pbc": np.array([ind.pbc for ind in individuals], dtype=bool).reshape(-1, 3),
        f"{group}_fitness": fitness,
        f"{group}_valid": valid,
    }
    return arrays, [dict(ind.info) for ind in individuals]


def save_checkpoint(path, state: dict) -> Path:
    """Write the GA state ``state`` (the keys of :func:`load_checkpoint`) to ``path`` atomically.

    ``state["hall_of_fame"]`` is a :class:`deap.tools.HallOfFame` or
    :class:`deap.tools.ParetoFront`, ``state["logbook"]`` a
    :class:`deap.tools.Logbook`. The file is built in memory, written to a
    temporary file, synced and moved into place (:func:`os.replace`): a
    kill at any moment leaves the previous checkpoint or the new one.
    """
    hof = state["hall_of_fame"]
    header = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION}
    header.update({key: state[key] for key in _SCALARS})
    header["logbook"] = {"header": list(state["logbook"].header or []), "records": list(state["logbook"])}
    header["hall_of_fame"] = {"pareto": isinstance(hof, tools.ParetoFront), "maxsize": hof.maxsize}
    arrays = {}
    for group, individuals in (("population", list(state["population"])), ("hall_of_fame", list(hof.items))):
        group_arrays, infos = _individual_arrays(group, individuals)
        arrays.update(group_arrays)
        header.setdefault(group, {})["info"] = infos
    text = json.dumps(header, default=_json_value, allow_nan=True)
    buf = io.BytesIO()
    np.savez(buf, header=np.frombuffer(text.encode("utf-8"), dtype=np.uint8), **arrays)
    return atomic_write_bytes(path, buf.getvalue())


def _individuals(arrays: dict, group: str, infos: list, multi_objective: bool) -> list:
    """The individuals of ``group`` rebuilt from their arrays and ``info`` dicts."""
    cls = StemParetoIndividual if multi_objective else StemIndividual
    sizes = arrays[f"{group}_sizes"]
    ends = np.cumsum(sizes)
    numbers, positions = arrays[f"{group}_numbers"], arrays[f"{group}_positions"]
    fitness, valid = arrays[f"{group}_fitness"], arrays[f"{group}_valid"]
    if not (len(infos) == len(sizes) == len(fitness) == len(valid)) or (len(sizes) and ends[-1] != len(numbers)):
        raise ValueError(f"the {group} arrays do not agree in length")
    out = []
    for k, (end, size) in enumerate(zip(ends, sizes)):
        atoms = slice(int(end - size), int(end))
        ind = cls(numbers=numbers[atoms], positions=positions[atoms], cell=arrays[f"{group}_cell"][k],
                  pbc=arrays[f"{group}_pbc"][k])
        ind.info = dict(infos[k])
        if valid[k]:
            ind.fitness.values = tuple(float(v) for v in fitness[k, : len(ind.fitness.weights)])
        out.append(ind)
    return out


def _hall_of_fame(spec: dict, items: list, similar):
    """A DEAP hall of fame (or Pareto front) holding ``items`` in their stored order (best first)."""
    hof = tools.ParetoFront(similar=similar) if spec["pareto"] else tools.HallOfFame(spec["maxsize"],
                                                                                     similar=similar)
    # DEAP keeps the fitnesses in ``keys`` in ascending order, the reverse of ``items`` (same objects)
    hof.items = list(items)
    hof.keys = [ind.fitness for ind in reversed(hof.items)]
    return hof


def _legacy_refusal(path: Path) -> InputError:
    return InputError(f"{str(path)!r} is a checkpoint in the old pickle format, which this stem-refine no longer "
                      "reads (loading a pickle can run code): start a new run")


def load_checkpoint(path, *, similar=None) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (a file, or the folder holding ``checkpoint.npz``).

    Returns a dict: ``version``, ``generation``, ``population`` (list of
    individuals with their fitness), ``hall_of_fame`` (a DEAP
    ``HallOfFame`` or ``ParetoFront`` whose duplicate test is ``similar``,
    default the settings' :class:`refine.search.selection.SimilarityCriterion`),
    ``logbook`` (a DEAP ``Logbook``), ``best_cost``, ``stale``,
    ``evaluations``, ``elapsed`` (s), ``alpha``, ``rng_state`` (for
    ``rng.bit_generator.state``), ``settings`` (by their flat names, :meth:`GASettings.to_flat`),
    ``composition``, ``operators`` (the mutations' repr), ``finishing``,
    ``search_alpha``, ``anneal_seconds``, ``polish_seconds`` and
    ``n_out_of_domain``.

    Raises
    ------
    InputError
        No checkpoint there; a file that is not a readable checkpoint of
        this version (including one holding arrays that need unpickling);
        or an old ``checkpoint.pkl`` (refused without being opened).
    """
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if path.suffix == ".pkl":
        raise _legacy_refusal(path)
    if not path.exists() and (path.parent / LEGACY_CHECKPOINT_NAME).exists():
        raise _legacy_refusal(path.parent / LEGACY_CHECKPOINT_NAME)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {key: z[key] for key in z.files}
        header = json.loads(arrays.pop("header").tobytes().decode("utf-8"))
    except FileNotFoundError:
        raise InputError(f"no checkpoint at {str(path)!r}") from None
    except Exception as exc:  # zipfile, pickle refusal (ValueError), JSON, decoding: all mean "not a checkpoint"
        raise InputError(f"cannot read checkpoint {str(path)!r}: {type(exc).__name__}: {exc}") from None
    if not isinstance(header, dict) or header.get("format") != CHECKPOINT_FORMAT \
            or header.get("version") != CHECKPOINT_VERSION:
        raise InputError(f"{str(path)!r} is not a checkpoint of this version of stem-refine")
    try:
        state = {"version": CHECKPOINT_VERSION, **{key: header[key] for key in _SCALARS}}
        settings = state["settings"]
        multi_objective = bool(settings["multi_objective"])
        state["population"] = _individuals(arrays, "population", header["population"]["info"], multi_objective)
        if similar is None:
            similar = SimilarityCriterion(settings["duplicate_cost_tol"], settings["duplicate_fingerprint_tol"])
        fame = _individuals(arrays, "hall_of_fame", header["hall_of_fame"]["info"], multi_objective)
        state["hall_of_fame"] = _hall_of_fame(header["hall_of_fame"], fame, similar)
        logbook = tools.Logbook()
        logbook.header = list(header["logbook"]["header"])
        for record in header["logbook"]["records"]:
            logbook.record(**record)
        state["logbook"] = logbook
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise InputError(f"{str(path)!r} is not a valid stem-refine checkpoint ({type(exc).__name__}: {exc})") \
            from None
    return state
