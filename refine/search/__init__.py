"""refine.search."""

from refine.search.ga import CHECKPOINT_NAME, FitnessDifference, GASettings, LOGBOOK_NAME, load_checkpoint, run_ga
from refine.search.operators import LocalRelaxation, nearest_neighbour_distance
from refine.search.population import composition_string, make_population, parse_composition, validate_composition
from refine.search.recipes import SEARCHES, search_options

__all__ = ["CHECKPOINT_NAME", "FitnessDifference", "GASettings", "LOGBOOK_NAME", "LocalRelaxation", "SEARCHES", "composition_string", "load_checkpoint", "make_population", "nearest_neighbour_distance", "parse_composition", "run_ga", "search_options", "validate_composition"]
