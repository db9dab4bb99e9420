"""The shipped independent abTEM image (``tests/data/small``: a tilted Pt70 decahedron, PRISM f=2, 8 phonons,
0.1 Å pixels) and its Poisson-noisy versions: shared by the tests and ``tests/benchmarks/bench_search_small.py``."""

from pathlib import Path

import numpy as np

SMALL = Path(__file__).resolve().parents[1] / "data" / "small"
PIXEL = 0.1  # Å
#: e/Å²
HIGH_DOSE, REALISTIC_DOSE = 2e7, 5e5


def noisy_small_image(dose: float, seed: int = 7) -> np.ndarray:
    """Poisson noise at ``dose`` e/Å² on the clean image (fraction of the incident beam); fixed stream per seed."""
    clean = np.clip(np.load(SMALL / "clean.npy").astype(float), 0.0, None)
    n = dose * PIXEL * PIXEL
    return np.random.default_rng(seed).poisson(clean * n) / n


def as_image(data):
    """``data`` (2-D, beam units) as an :class:`refine.io.ExperimentalImage` at the small case's pixel size, all valid."""
    from refine.io import ExperimentalImage

    return ExperimentalImage(data=np.asarray(data, dtype=float), pixel_size=PIXEL, mask=np.ones(np.shape(data), bool))
