"""Structure refinement of nanoparticles from HAADF-STEM images.

Data flow: experimental image (:mod:`refine.images`) → fitness
(surrogate image χ² + energy) → DEAP genetic algorithm → best structure,
images and history → comparison and reports.
"""

__all__: list[str] = []
