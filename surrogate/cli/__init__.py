"""surrogate.cli."""
