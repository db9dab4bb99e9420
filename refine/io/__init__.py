"""refine.io."""
