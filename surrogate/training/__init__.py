"""surrogate.training."""
