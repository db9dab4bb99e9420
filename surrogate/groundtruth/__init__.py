"""surrogate.groundtruth."""
