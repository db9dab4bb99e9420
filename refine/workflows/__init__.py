"""refine.workflows."""

from refine.workflows.batch import read_manifest, run_batch
from refine.workflows.refinement import refine_image

__all__ = ["read_manifest", "refine_image", "run_batch"]
