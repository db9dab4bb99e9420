"""refine.cost."""
