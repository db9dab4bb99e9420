"""refine.search."""
