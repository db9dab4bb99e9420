"""Compositions and starting populations for the genetic algorithm.

* :func:`parse_composition` / :func:`validate_composition` turn ``"Pt557Mo29"``
  into ``{"Pt": 557, "Mo": 29}`` and check it against the elements a
  surrogate model was fitted on.
* :func:`random_cluster`: random positions in a sphere of roughly bulk
  density, repaired to a minimum interatomic distance, optionally relaxed.
* :func:`shape_cluster`: an :mod:`ase.cluster` shape (icosahedron,
  decahedron, cuboctahedron, truncated octahedron, octahedron) of the
  nearest atom count, trimmed (least coordinated atoms removed) or padded
  (atoms added on the best hollow sites) to the exact count, species
  assigned at random.
* :func:`read_structures`: a user's structure file.
* :func:`make_population`: a seeded list of any of these, in random
  orientations, centred at the origin.

All randomness comes from the :class:`numpy.random.Generator` passed in.
Lengths in Å.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers, reference_states
from scipy.spatial.transform import Rotation

from surrogate.common import InputError
from surrogate.common.geometry import coordination_numbers
from refine.search.geometry import (
    NEIGHBOUR_FACTOR,
    best_site,
    composition_of,
    default_min_distance,
    nearest_neighbour_distance,
    outside_point,
    repair_min_distance,
)
from refine.search.relaxation import LocalRelaxation

__all__ = [
    "parse_composition",
    "validate_composition",
    "composition_string",
    "random_cluster",
    "image_cluster",
    "shape_cluster",
    "SHAPES",
    "read_structures",
    "random_orientation",
    "make_population",
]

log = logging.getLogger(__name__)

_TOKEN = re.compile(r"([A-Z][a-z]?)(\d*)")

#: shape names accepted by :func:`shape_cluster`
SHAPES = ("icosahedron", "decahedron", "cuboctahedron", "truncated_octahedron", "octahedron")


def parse_composition(text: str, allowed: Iterable[str] | None = None) -> dict[str, int]:
    """Parse a composition such as ``"Pt309"`` or ``"Pt557Mo29"``.

    Parameters
    ----------
    text : str
        Element symbols each followed by a positive number of atoms.
    allowed : iterable of str, optional
        Elements that may appear (e.g. a surrogate model's ``elements_``);
        ``None`` or empty means no restriction.

    Returns
    -------
    dict
        ``{symbol: count}`` in the order given.

    Raises
    ------
    InputError
        On bad syntax, an unknown or repeated element, a missing or zero
        count, or an element not in ``allowed``.
    """
    if not isinstance(text, str):
        raise InputError(f"composition must be a string like 'Pt309' or 'Pt557Mo29', got {text!r}")
    s = text.strip().replace(" ", "")
    if not s:
        raise InputError("empty composition; expected e.g. 'Pt309' or 'Pt557Mo29'")
    pos = 0
    out: dict[str, int] = {}
    for m in _TOKEN.finditer(s):
        if m.start() != pos:
            break
        pos = m.end()
        sym, count = m.group(1), m.group(2)
        if sym not in atomic_numbers or sym == "X":
            raise InputError(f"unknown element {sym!r} in composition {text!r}")
        if not count:
            raise InputError(f"composition {text!r}: give the number of {sym} atoms, e.g. '{sym}309'")
        if sym in out:
            raise InputError(f"composition {text!r} lists {sym} twice")
        out[sym] = int(count)
    if pos != len(s):
        raise InputError(f"cannot read composition {text!r} at {s[pos:]!r}; expected element symbols with "
                         "atom counts, e.g. 'Pt309' or 'Pt557Mo29'")
    return validate_composition(out, allowed)


def validate_composition(composition, allowed: Iterable[str] | None = None) -> dict[str, int]:
    """Normalise a composition given as a string or a ``{symbol: count}`` mapping.

    Zero counts are refused (an element absent from the particle should not
    be listed), as are a total of zero atoms and elements outside
    ``allowed`` (when non-empty). Returns a new ``dict``.
    """
    if isinstance(composition, str):
        return parse_composition(composition, allowed)
    if not isinstance(composition, Mapping):
        raise InputError(f"composition must be a string like 'Pt309' or a mapping, got {composition!r}")
    out: dict[str, int] = {}
    for sym, n in composition.items():
        if sym not in atomic_numbers or sym == "X":
            raise InputError(f"unknown element {sym!r} in composition")
        if isinstance(n, bool) or not float(n).is_integer():
            raise InputError(f"number of {sym} atoms must be a whole number, got {n!r}")
        n = int(n)
        if n <= 0:
            raise InputError(f"number of {sym} atoms must be positive, got {n}")
        out[sym] = n
    if not out:
        raise InputError("composition has no atoms")
    allowed = tuple(allowed or ())
    if allowed:
        bad = [s for s in out if s not in allowed]
        if bad:
            raise InputError(f"element(s) {', '.join(bad)} not among the model's elements "
                             f"({', '.join(allowed)}); the surrogate is only valid for what it was fitted on")
    return out


def composition_string(composition: Mapping[str, int]) -> str:
    """``{"Pt": 557, "Mo": 29}`` → ``"Pt557Mo29"``."""
    return "".join(f"{s}{n}" for s, n in composition.items())


def _species(composition: Mapping[str, int], rng: np.random.Generator) -> np.ndarray:
    numbers = np.concatenate([np.full(n, atomic_numbers[s]) for s, n in composition.items()])
    return rng.permutation(numbers)


def _centre(atoms: Atoms) -> Atoms:
    atoms.positions = atoms.positions - atoms.positions.mean(axis=0)
    return atoms


def random_orientation(atoms: Atoms, rng: np.random.Generator) -> Atoms:
    """Rotate ``atoms`` (in place) by a uniformly random rotation about its centroid; returns it."""
    pos = atoms.positions
    com = pos.mean(axis=0)
    atoms.positions = Rotation.random(random_state=rng).apply(pos - com) + com
    return atoms


def random_cluster(composition, rng: np.random.Generator, *, min_distance: float | None = None,
                   density: float = 0.85, relax: LocalRelaxation | None = None) -> Atoms:
    """A random compact cluster of exactly the given composition, centred at the origin.

    Positions are uniform in a sphere holding the atoms at ``density`` × the
    close-packed density of the composition's nearest-neighbour distance
    ``d`` (d³/√2 Å³ per atom), species shuffled, then repaired to
    ``min_distance`` (default 0.75·d) and optionally relaxed by ``relax``.
    """
    comp = validate_composition(composition)
    n = sum(comp.values())
    d = nearest_neighbour_distance(comp)
    d_min = default_min_distance(comp) if min_distance is None else float(min_distance)
    volume = n * d ** 3 / np.sqrt(2.0) / density
    radius = (3.0 * volume / (4.0 * np.pi)) ** (1.0 / 3.0)
    u = rng.normal(size=(n, 3))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    r = radius * rng.random(n) ** (1.0 / 3.0)
    atoms = Atoms(numbers=_species(comp, rng), positions=u * r[:, None])
    repair_min_distance(atoms, d_min, rng, nn_distance=d)
    if relax is not None:
        relax(atoms)
        repair_min_distance(atoms, d_min, rng, nn_distance=d)
    return _centre(atoms)


def image_cluster(composition, rng: np.random.Generator, image, grid, *, min_distance: float | None = None,
                  background: float | None = None, relax: LocalRelaxation | None = None) -> Atoms:
    """A random compact cluster whose projection follows an image (positions in the image's frame).

    Each atom's (x, y) is a pixel drawn with probability ∝ max(I − background, 0)
    (``background`` default: the image's 10th percentile), jittered
    uniformly within the pixel; its z is uniform within the chord of a
    sphere of bulk-like density (radius R, see :func:`random_cluster`)
    centred on the image's intensity centroid, at least ±0.3·R. The cluster
    is then repaired to ``min_distance`` and optionally relaxed. It is not
    recentred: it starts on the image.

    Parameters
    ----------
    image : ndarray, shape grid.shape
        Experimental (or any) image; NaN pixels are ignored.
    grid : surrogate.ProbeGrid
        Its probe positions (``image[i, j]`` at ``x0 + iΔ, y0 + jΔ``).
    """
    comp = validate_composition(composition)
    data = np.asarray(image, dtype=float)
    if data.shape != tuple(grid.shape):
        raise InputError(f"image shape {data.shape} does not match the grid {tuple(grid.shape)}")
    n = sum(comp.values())
    d = nearest_neighbour_distance(comp)
    d_min = default_min_distance(comp) if min_distance is None else float(min_distance)
    finite = np.isfinite(data)
    if not finite.any():
        raise InputError("image has no finite pixels to place atoms on")
    bg = np.percentile(data[finite], 10) if background is None else float(background)
    w = np.where(finite, np.clip(data - bg, 0.0, None), 0.0).ravel()
    if not w.sum() > 0:
        raise InputError("image has nothing above its background to place atoms on")
    p = w / w.sum()
    flat = rng.choice(p.size, size=n, p=p)
    i, j = np.unravel_index(flat, data.shape)
    dx = grid.pixel_size
    x = grid.origin[0] + (i + rng.uniform(-0.5, 0.5, n)) * dx
    y = grid.origin[1] + (j + rng.uniform(-0.5, 0.5, n)) * dx
    cx, cy = float(np.sum(p * np.repeat(grid.x, data.shape[1]))), float(np.sum(p * np.tile(grid.y, data.shape[0])))
    radius = (3.0 * n * d ** 3 / np.sqrt(2.0) / (4.0 * np.pi)) ** (1.0 / 3.0)
    rho2 = (x - cx) ** 2 + (y - cy) ** 2
    half = np.sqrt(np.maximum(radius ** 2 - rho2, (0.3 * radius) ** 2))
    z = rng.uniform(-1.0, 1.0, n) * half
    atoms = Atoms(numbers=_species(comp, rng), positions=np.column_stack([x, y, z]))
    repair_min_distance(atoms, d_min, rng, nn_distance=d)
    if relax is not None:
        relax(atoms)
        repair_min_distance(atoms, d_min, rng, nn_distance=d)
    return atoms


def _lattice_constant(symbol: str, d: float) -> float:
    state = reference_states[atomic_numbers[symbol]] or {}
    if state.get("symmetry") == "fcc":
        return float(state["a"])
    return d * np.sqrt(2.0)


@lru_cache(maxsize=None)
def _shape_sizes(shape: str, max_atoms: int) -> tuple[tuple[int, tuple], ...]:
    """(atom count, construction parameters) of a shape family, up to ~2·max_atoms."""
    from ase.cluster import Decahedron, Icosahedron, Octahedron

    limit = 2 * max_atoms + 20
    out = []
    if shape == "icosahedron":
        for k in range(1, 30):
            n = len(Icosahedron("Cu", k))
            out.append((n, (k,)))
            if n > limit:
                break
    elif shape == "decahedron":
        for r in range(0, 3):
            for q in range(1, 12):
                for p in range(1, 12):
                    n = len(Decahedron("Cu", p, q, r))
                    if n > limit:
                        break
                    out.append((n, (p, q, r)))
    else:
        for length in range(2, 40):
            if shape == "octahedron":
                cutoff = 0
            elif shape == "cuboctahedron":
                if length % 2 == 0:
                    continue
                cutoff = (length - 1) // 2
            else:  # truncated octahedron, regular when length = 3·cutoff + 1
                if (length - 1) % 3:
                    continue
                cutoff = (length - 1) // 3
            n = len(Octahedron("Cu", length, cutoff=cutoff))
            out.append((n, (length, cutoff)))
            if n > limit:
                break
    return tuple(out)


def _build_shape(shape: str, symbol: str, params: tuple, a: float) -> Atoms:
    from ase.cluster import Decahedron, Icosahedron, Octahedron

    if shape == "icosahedron":
        return Icosahedron(symbol, params[0], latticeconstant=a)
    if shape == "decahedron":
        return Decahedron(symbol, *params, latticeconstant=a)
    return Octahedron(symbol, params[0], cutoff=params[1], latticeconstant=a)


def _trim_or_pad(atoms: Atoms, n: int, d: float, d_min: float, rng: np.random.Generator) -> Atoms:
    pos = np.array(atoms.positions, dtype=float)
    cutoff = NEIGHBOUR_FACTOR * d
    while len(pos) > n:  # remove the least coordinated atom (random among ties)
        cn = coordination_numbers(pos, cutoff)
        worst = np.flatnonzero(cn == cn.min())
        pos = np.delete(pos, worst[rng.integers(len(worst))], axis=0)
    while len(pos) < n:  # add on the best-coordinated hollow site
        site = best_site(pos, d, rng, min_distance=d_min, n_triples=128)
        pos = np.vstack([pos, site if site is not None else outside_point(pos, d_min, rng)])
    return Atoms(positions=pos)


def shape_cluster(composition, shape: str, rng: np.random.Generator, *, min_distance: float | None = None,
                  lattice_constant: float | None = None) -> Atoms:
    """An :mod:`ase.cluster` shape with exactly the given composition, centred at the origin.

    The member of the shape family with the atom count nearest to the
    composition's total is built with the majority element's lattice
    constant (or ``lattice_constant`` Å), trimmed or padded to the exact
    count, and given randomly assigned species. Orientation is the
    shape's own (see :func:`random_orientation`).
    """
    comp = validate_composition(composition)
    if shape not in SHAPES:
        raise InputError(f"unknown cluster shape {shape!r}; expected one of {', '.join(SHAPES)}")
    n = sum(comp.values())
    d = nearest_neighbour_distance(comp)
    d_min = default_min_distance(comp) if min_distance is None else float(min_distance)
    major = max(comp, key=comp.get)
    a = float(lattice_constant) if lattice_constant else _lattice_constant(major, d)
    sizes = _shape_sizes(shape, n)
    count, params = min(sizes, key=lambda t: (abs(t[0] - n), t[0]))
    base = _build_shape(shape, major, params, a)
    log.debug("%s %s with %d atoms for a %d-atom particle", shape, params, count, n)
    atoms = _trim_or_pad(base, n, a / np.sqrt(2.0), d_min, rng)
    atoms.numbers = _species(comp, rng)
    repair_min_distance(atoms, d_min, rng, nn_distance=d)
    atoms.info["shape"] = shape
    return _centre(atoms)


def read_structures(path, composition=None) -> list[Atoms]:
    """Every frame of a structure file (any :func:`ase.io.read` format).

    When ``composition`` is given each frame must match it exactly, else
    :class:`InputError`. Cells and calculators are dropped (particles are
    isolated).
    """
    from ase.io import read

    path = Path(path)
    if not path.is_file():
        raise InputError(f"structure file {str(path)!r} does not exist")
    try:
        frames = read(path, index=":")
    except Exception as exc:  # ase raises many kinds for unreadable files
        raise InputError(f"cannot read structures from {str(path)!r}: {exc}") from exc
    if not frames:
        raise InputError(f"no structures in {str(path)!r}")
    return [validate_frame(frame, composition, where=f"structure {k} in {str(path)!r}")
            for k, frame in enumerate(frames)]


def validate_frame(frame, composition=None, *, where: str = "the starting structure") -> Atoms:
    """A copy of ``frame`` (positions, numbers and ``info["origin"]`` only), checked against ``composition``."""
    want = validate_composition(composition) if composition is not None else None
    have = composition_of(frame)
    if want is not None and have != want:
        raise InputError(f"{where} has composition {''.join(f'{s}{c}' for s, c in have.items())}, expected "
                         f"{composition_string(want)}")
    atoms = Atoms(numbers=frame.numbers, positions=frame.positions)
    if "origin" in frame.info:
        atoms.info["origin"] = frame.info["origin"]
    return atoms


def make_population(composition, size: int, rng: np.random.Generator, *, source: str = "random",
                    shapes: Iterable[str] = SHAPES, min_distance: float | None = None, orient: bool = True,
                    relax: LocalRelaxation | None = None, rattle: float = 0.1, image=None,
                    grid=None) -> list[Atoms]:
    """A seeded starting population of ``size`` structures of exactly ``composition``.

    Parameters
    ----------
    composition : str or mapping
        E.g. ``"Pt309"`` or ``{"Pt": 557, "Mo": 29}``.
    size : int
        Number of structures.
    rng : numpy.random.Generator
        The only source of randomness.
    source : {"random", "shapes", "mixed", "image"}, path or list of ase.Atoms
        ``"random"``: :func:`random_cluster`; ``"shapes"``: the ``shapes``
        in turn (:func:`shape_cluster`); ``"mixed"``: half shapes, half
        random; ``"image"``: :func:`image_cluster` on ``image``/``grid``
        (kept in the image's frame, not reoriented); a path: the file's
        frames in turn, each copy after the first rattled by ``rattle`` Å
        (Gaussian σ) and repaired; a list of structures: the same, kept in
        their own frame (not centred).
    orient : bool
        Give each structure a uniformly random orientation (not for ``"image"``).
    relax : LocalRelaxation, optional
        Short relaxation of each random cluster.

    Returns
    -------
    list of ase.Atoms
        Each centred at the origin (except ``"image"`` ones and given structures), no cell, ``info["origin"]`` saying how it was made.
    """
    comp = validate_composition(composition)
    size = int(size)
    if size < 1:
        raise InputError(f"population size must be at least 1, got {size}")
    d_min = default_min_distance(comp) if min_distance is None else float(min_distance)
    shapes = tuple(shapes)
    for s in shapes:
        if s not in SHAPES:
            raise InputError(f"unknown cluster shape {s!r}; expected one of {', '.join(SHAPES)}")
    frames = None
    if isinstance(source, (list, tuple)):
        frames = [validate_frame(a, comp) for a in source]
        source = "frames"
    elif source == "image":
        if image is None or grid is None:
            raise InputError("an image population needs the image and its probe grid")
    elif source not in ("random", "shapes", "mixed"):
        frames = read_structures(source, comp)
    elif source != "random" and not shapes:
        raise InputError("no cluster shapes given for a shape population")
    pop = []
    shape_cache: dict[str, Atoms] = {}
    for k in range(size):
        if frames is not None:
            atoms = frames[k % len(frames)].copy()
            if k >= len(frames) and rattle > 0:
                atoms.positions = atoms.positions + rng.normal(scale=rattle, size=atoms.positions.shape)
            repair_min_distance(atoms, d_min, rng)
            origin = (frames[k % len(frames)].info.get("origin", "given") if source == "frames"
                      else f"file:{Path(source).name}[{k % len(frames)}]")
        elif source == "shapes" or (source == "mixed" and k % 2 == 0):
            shape = shapes[(k // (2 if source == "mixed" else 1)) % len(shapes)]
            if shape not in shape_cache:  # geometry is deterministic, species are not
                shape_cache[shape] = shape_cluster(comp, shape, rng, min_distance=d_min)
            atoms = shape_cache[shape].copy()
            atoms.numbers = _species(comp, rng)
            origin = shape
        elif source == "image":
            atoms = image_cluster(comp, rng, image, grid, min_distance=d_min, relax=relax)
            atoms.info = {"origin": "image"}
            pop.append(atoms)
            continue
        else:
            atoms = random_cluster(comp, rng, min_distance=d_min, relax=relax)
            origin = "random"
        if orient:
            random_orientation(atoms, rng)
        if source != "frames":  # given structures keep their frame (e.g. the image's)
            _centre(atoms)
        atoms.info = {"origin": origin}
        pop.append(atoms)
    return pop
