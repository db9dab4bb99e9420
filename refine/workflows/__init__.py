"""refine.workflows."""
