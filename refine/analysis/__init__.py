"""refine.analysis."""
