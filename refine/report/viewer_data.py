"""What the page's 3-D viewer draws: atom positions, radii and the per-atom quantities that colour them.

The viewer (``viewer.js``) takes one JSON object (:func:`viewer_data`):
positions centred on the particle (Å, the image frame: x right, y up, beam
along z), element symbols, sphere radii (Å) and a list of *fields*, each a
per-atom quantity with its colours and legend, computed here with
matplotlib's colour maps so that the page needs no colour code of its own:

``spread``
    Spread of the atom's position across an ensemble of runs (Å; when one
    is found, :mod:`refine.report.ensemble_spread`): where the image does not
    pin the structure down. The default when present.
``coordination``
    Neighbours of each atom (:func:`refine.analysis.comparison.coordination_numbers`:
    closer than 1.2 × the sum of covalent radii): surface (low) against
    bulk (12 in fcc). The default otherwise.
``depth``
    z (Å), the height along the beam: the coordinate the image constrains least.
``element``
    For particles of more than one element (Jmol colours).
"""

from __future__ import annotations

import numpy as np
from ase import Atoms

__all__ = ["FIELD_LABELS", "SPHERE_SCALE", "viewer_data"]

#: sphere radius as a fraction of the covalent radius: gaps between neighbours show the lattice
SPHERE_SCALE = 0.72
#: field name -> (label with unit, colour map, colour-map interval used)
FIELD_LABELS = {
    # magma_r as in ensemble.png, without its near-white end (invisible on the page's white)
    "spread": ("spread across the ensemble (Å)", "magma_r", (0.12, 0.88)),
    "coordination": ("coordination (neighbours)", "viridis", (0.0, 1.0)),
    "depth": ("height along the beam z (Å)", "cividis", (0.0, 1.0)),
}
_LEGEND_STOPS = 9
_TONES = 64


def _hex(rgb) -> str:
    r, g, b = (int(round(255 * float(np.clip(c, 0.0, 1.0)))) for c in rgb[:3])
    return f"#{r:02x}{g:02x}{b:02x}"


def _colour_map(name: str, interval):
    from matplotlib import colormaps

    cmap = colormaps[name]
    lo, hi = interval
    return lambda t: cmap(lo + (hi - lo) * np.clip(t, 0.0, 1.0))


def _continuous(name: str, values: np.ndarray, vmin: float | None = None) -> dict:
    label, cmap_name, interval = FIELD_LABELS[name]
    cmap = _colour_map(cmap_name, interval)
    v = np.asarray(values, dtype=float)
    lo = float(np.nanmin(v)) if vmin is None else vmin
    hi = float(np.nanmax(v))
    span = hi - lo if hi > lo else 1.0
    # 64 tones are more than the eye tells apart on a sphere, and bound the viewer's sprite cache (one per colour)
    t = np.round((v - lo) / span * (_TONES - 1)) / (_TONES - 1)
    stops = np.linspace(0.0, 1.0, _LEGEND_STOPS)
    return {"name": name, "label": label, "values": [round(float(x), 4) for x in v],
            "colours": [_hex(c) for c in cmap(t)],
            "legend": {"kind": "continuous", "min": lo, "max": hi if hi > lo else lo + span,
                       "stops": [_hex(c) for c in cmap(stops)]}}


def _discrete(name: str, label: str, values, colour_of) -> dict:
    values = list(values)
    kinds = sorted(set(values))
    return {"name": name, "label": label, "values": values, "colours": [colour_of(v) for v in values],
            "legend": {"kind": "discrete", "items": [[str(k), colour_of(k), values.count(k)] for k in kinds]}}


def _coordination(atoms: Atoms) -> dict:
    from refine.analysis.comparison import coordination_numbers

    cn = [int(c) for c in coordination_numbers(atoms)]
    _, cmap_name, interval = FIELD_LABELS["coordination"]
    cmap = _colour_map(cmap_name, interval)
    lo, hi = min(cn), max(cn)
    return _discrete("coordination", FIELD_LABELS["coordination"][0], cn,
                     lambda k: _hex(cmap((k - lo) / (hi - lo) if hi > lo else 0.5)))


def _elements(atoms: Atoms) -> dict:
    from ase.data import atomic_numbers
    from ase.data.colors import jmol_colors

    return _discrete("element", "element", atoms.get_chemical_symbols(),
                     lambda s: _hex(jmol_colors[atomic_numbers[s]]))


def viewer_data(atoms: Atoms, *, spread=None, title: str = "") -> dict:
    """The viewer's JSON object for ``atoms`` (the run's ``best.xyz``).

    Parameters
    ----------
    atoms : ase.Atoms
        Positions in Å, beam along z.
    spread : ndarray, shape (n_atoms,), optional
        Per-atom spread across an ensemble (Å), in the order of ``atoms``.
    title : str
        Shown above the viewer.

    Returns
    -------
    dict
        ``n_atoms``, ``positions`` (Å, centred), ``symbols``, ``radii`` (Å),
        ``fields`` (list, see the module docstring), ``default`` (name of the
        field shown first), ``title``.
    """
    from ase.data import covalent_radii

    pos = np.asarray(atoms.positions, dtype=float)
    centred = pos - pos.mean(axis=0)
    fields = []
    if spread is not None:
        s = np.asarray(spread, dtype=float).reshape(-1)
        if s.shape != (len(atoms),):
            raise ValueError(f"spread has {s.size} values for {len(atoms)} atoms")
        fields.append(_continuous("spread", s, vmin=0.0))  # from 0: a small spread should look small
    fields.append(_coordination(atoms))
    fields.append(_continuous("depth", pos[:, 2]))
    if len(set(atoms.numbers)) > 1:
        fields.append(_elements(atoms))
    return {"n_atoms": len(atoms), "title": title,
            "positions": [[round(float(c), 4) for c in p] for p in centred],
            "symbols": atoms.get_chemical_symbols(),
            "radii": [round(SPHERE_SCALE * float(covalent_radii[z]), 3) for z in atoms.numbers],
            "fields": fields, "default": fields[0]["name"]}
