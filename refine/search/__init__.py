"""refine.search: the genetic algorithm that refines a particle against an image.

Modules, in data-flow order (starting structures → individuals → variation
→ evaluation → selection → the loop → files):

* ``population`` — compositions (``"Pt557Mo29"``) and seeded starting
  structures (random, shapes, image-guided, from a file).
* ``geometry`` — bond lengths, minimum distance, hollow sites, the repairs
  every operator ends with; ``sites`` — empty lattice sites, lines of
  sight, surface islands, columns and wedges along the beam.
* ``individuals`` — the DEAP types (``Atoms`` with a fitness), created once.
* ``settings`` — :class:`GASettings` (every setting, composed of the
  parts in ``setting_parts``: stopping, selection, variation, relaxation,
  annealing, polish, finishing; one flat name per setting) and
  :class:`GAResult`; ``recipes`` — named settings (``--search``).
* ``operators`` — crossover and mutations (injected generator, DEAP's
  contract); ``difference`` — the difference image that guides the
  image-guided moves; ``relaxation`` — the offspring's FIRE on E or E + α·χ².
* ``sweeps`` — deterministic sweeps of one structure; ``polish`` — the
  sweeps chained on the best and on annealed structures.
* ``anneal`` — image-restrained simulated annealing; ``anneal_tasks`` — its
  picklable tasks and one round per generation.
* ``evaluation`` — fitness → costs on individuals; ``selection`` —
  tournaments, duplicates, survival.
* ``toolbox`` — :func:`make_toolbox`: everything the loop calls.
* ``ga`` — :func:`run_ga`: the generational loop.
* ``logbook`` — per-generation records and ``logbook.csv``;
  ``checkpoint`` — ``checkpoint.npz`` (arrays + JSON, no pickle) for exact
  resumes.
"""

from refine.search.checkpoint import CHECKPOINT_NAME, LEGACY_CHECKPOINT_NAME, load_checkpoint
from refine.search.difference import FitnessDifference
from refine.search.ga import run_ga
from refine.search.geometry import nearest_neighbour_distance
from refine.search.logbook import LOGBOOK_NAME
from refine.search.population import composition_string, make_population, parse_composition, validate_composition
from refine.search.recipes import SEARCHES, search_settings
from refine.search.relaxation import LocalRelaxation
from refine.search.settings import (
    FLAT_NAMES,
    AnnealingSettings,
    FinishingSettings,
    GAResult,
    GASettings,
    PolishSettings,
    RelaxationSettings,
    SelectionSettings,
    StoppingSettings,
    VariationSettings,
)
from refine.search.toolbox import make_toolbox

__all__ = ["CHECKPOINT_NAME", "FLAT_NAMES", "AnnealingSettings", "FinishingSettings", "FitnessDifference", "GAResult",
           "GASettings", "LEGACY_CHECKPOINT_NAME", "LOGBOOK_NAME", "LocalRelaxation", "PolishSettings",
           "RelaxationSettings", "SEARCHES", "SelectionSettings", "StoppingSettings", "VariationSettings",
           "composition_string", "load_checkpoint", "make_population", "make_toolbox", "nearest_neighbour_distance",
           "parse_composition", "run_ga", "search_settings", "validate_composition"]
