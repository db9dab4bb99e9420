"""surrogate.common."""
