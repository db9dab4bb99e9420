"""surrogate.imaging."""
