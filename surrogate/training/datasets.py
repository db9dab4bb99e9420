"""The project's dataset file: convolution/multislice image pairs with their atoms.

Format ``stem-refine-dataset`` version 1
----------------------------------------
One NumPy ``.npz`` file per dataset, readable with ``allow_pickle=False``:

``meta``
    UTF-8 JSON as a ``uint8`` array::

        {"format": "stem-refine-dataset", "version": 1,
         "pixel_size": 0.1,                       # Å, shared by every pair
         "convolution": {...},                    # ConvolutionParameters.to_dict()
         "microscope": {...},                     # HAADFParameters.to_dict()
         "pairs": [{"id": 0, "grid": {origin, shape, pixel_size}, "seed": ...,
                    "recipe": {...}, "n_atoms": 250, "formula": "Pt250",
                    "seconds": 61.2}, ...],
         "provenance": {"command": ..., "created": ISO-8601 UTC,
                        "versions": {"abtem": ..., ...}, ...}}

``convolution/{k}``, ``multislice/{k}``
    Images of pair ``k`` (convolution float64; multislice float32, abTEM's
    working precision; both read back as float64) (k = 0 … n−1), both of shape
    ``pairs[k]["grid"]["shape"]`` on that :class:`~surrogate.imaging.grid.ProbeGrid`
    (``image[i, j]`` = probe at ``origin + (i, j)·pixel_size``). Convolution
    intensities are κ·Z^n per Å² (see :mod:`surrogate.imaging.convolution`);
    multislice intensities are fractions of the incident beam.
``atoms/{k}``
    The structure of pair ``k`` as extended-XYZ text (``uint8``), keeping
    ``atoms.info`` (the generator's recipe).

Files are written to a temporary file in the target directory and moved into
place with :func:`os.replace`, so a reader never sees a half-written dataset.
Anything that does not match this description raises :class:`InputError`.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from dataclasses import dataclass, field

import numpy as np

from surrogate.common import atomic_path
from surrogate.common import InputError
from surrogate.imaging import ProbeGrid

__all__ = ["Dataset", "FORMAT_NAME", "FORMAT_VERSION", "read_dataset", "write_dataset", "atoms_to_text",
           "atoms_from_text"]

FORMAT_NAME = "stem-refine-dataset"
FORMAT_VERSION = 1


def atoms_to_text(atoms) -> str:
    """Extended-XYZ text of one structure."""
    from ase.io import write

    buf = io.StringIO()
    a = atoms.copy()
    a.calc = None
    write(buf, a, format="extxyz")
    return buf.getvalue()


def atoms_from_text(text: str):
    """Inverse of :func:`atoms_to_text`."""
    from ase.io import read

    return read(io.StringIO(text), format="extxyz")


@dataclass
class Dataset:
    """Convolution/multislice image pairs, their atoms, grids and metadata.

    Attributes
    ----------
    convolution_images, multislice_images : list of ndarray
        float64 images, pair ``k`` of shape ``grids[k].shape``.
    atoms : list of ase.Atoms
    grids : list of ProbeGrid
    meta : dict
        Everything else (see the module docstring); ``meta["pairs"][k]``
        describes pair ``k``.
    """

    convolution_images: list
    multislice_images: list
    atoms: list
    grids: list
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        n = len(self.convolution_images)
        if not (len(self.multislice_images) == len(self.atoms) == len(self.grids) == n):
            raise InputError("a dataset needs as many multislice images, structures and grids as convolution images")
        pixel = None
        for k, (c, m, g) in enumerate(zip(self.convolution_images, self.multislice_images, self.grids)):
            if np.shape(c) != g.shape or np.shape(m) != g.shape:
                raise InputError(f"pair {k}: images {np.shape(c)} / {np.shape(m)} do not match its grid {g.shape}")
            if pixel is not None and not np.isclose(g.pixel_size, pixel):
                raise InputError(f"pair {k} has pixel size {g.pixel_size} Å, others {pixel} Å")
            pixel = g.pixel_size
        self.meta = dict(self.meta)
        pairs = list(self.meta.get("pairs", [{} for _ in range(n)]))
        if len(pairs) != n:
            raise InputError(f"metadata describes {len(pairs)} pairs, the dataset holds {n}")
        for k, g in enumerate(self.grids):
            pairs[k] = dict(pairs[k], grid=g.to_dict())
        self.meta["pairs"] = pairs
        self.meta["format"] = FORMAT_NAME
        self.meta["version"] = FORMAT_VERSION
        if pixel is not None:
            self.meta["pixel_size"] = pixel

    def __len__(self) -> int:
        return len(self.convolution_images)

    @property
    def pixel_size(self) -> float:
        """Å."""
        return float(self.meta.get("pixel_size", self.grids[0].pixel_size if self.grids else np.nan))

    @property
    def ids(self) -> list:
        """The ``id`` of each pair (its index in the builder's spec), or its position."""
        return [p.get("id", k) for k, p in enumerate(self.meta["pairs"])]

    def subset(self, indices) -> "Dataset":
        """A new dataset with pairs ``indices`` (in that order)."""
        idx = list(indices)
        meta = dict(self.meta, pairs=[self.meta["pairs"][k] for k in idx])
        return Dataset([self.convolution_images[k] for k in idx], [self.multislice_images[k] for k in idx],
                       [self.atoms[k] for k in idx], [self.grids[k] for k in idx], meta)

    def write(self, path) -> None:
        """Write atomically to ``path`` (``.npz``)."""
        arrays = {"meta": np.frombuffer(json.dumps(self.meta, sort_keys=True).encode("utf-8"), dtype=np.uint8)}
        for k in range(len(self)):
            arrays[f"convolution/{k}"] = np.ascontiguousarray(self.convolution_images[k], dtype=np.float64)
            # float32 on disk: abTEM computes in single precision, so this loses
            # nothing and halves the file; read() returns float64.
            arrays[f"multislice/{k}"] = np.ascontiguousarray(self.multislice_images[k], dtype=np.float32)
            arrays[f"atoms/{k}"] = np.frombuffer(atoms_to_text(self.atoms[k]).encode("utf-8"), dtype=np.uint8)
        with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)

    @classmethod
    def read(cls, path) -> "Dataset":
        """Read a dataset file; :class:`InputError` if it is not a valid one."""
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise InputError(f"dataset file {path!r} does not exist")
        try:
            with np.load(path, allow_pickle=False) as z:
                files = set(z.files)
                if "meta" not in files:
                    raise InputError(f"{path!r} is not a {FORMAT_NAME} file (no 'meta' entry)")
                meta = json.loads(bytes(z["meta"]).decode("utf-8"))
                if meta.get("format") != FORMAT_NAME:
                    raise InputError(f"{path!r} is not a {FORMAT_NAME} file (format {meta.get('format')!r})")
                if meta.get("version") != FORMAT_VERSION:
                    raise InputError(f"{path!r} is {FORMAT_NAME} version {meta.get('version')!r}; "
                                     f"this code reads version {FORMAT_VERSION}")
                pairs = meta.get("pairs")
                if not isinstance(pairs, list):
                    raise InputError(f"{path!r}: metadata has no list of pairs")
                conv, ms, atoms, grids = [], [], [], []
                for k, p in enumerate(pairs):
                    for key in (f"convolution/{k}", f"multislice/{k}", f"atoms/{k}"):
                        if key not in files:
                            raise InputError(f"{path!r}: pair {k} is missing {key!r}")
                    try:
                        grids.append(ProbeGrid.from_dict(p["grid"]))
                    except (KeyError, TypeError) as exc:
                        raise InputError(f"{path!r}: pair {k} has no valid grid ({exc})") from None
                    conv.append(np.asarray(z[f"convolution/{k}"], dtype=np.float64))
                    ms.append(np.asarray(z[f"multislice/{k}"], dtype=np.float64))
                    atoms.append(atoms_from_text(bytes(z[f"atoms/{k}"]).decode("utf-8")))
                    for name, im in (("convolution", conv[-1]), ("multislice", ms[-1])):
                        if im.ndim != 2 or not np.all(np.isfinite(im)):
                            raise InputError(f"{path!r}: {name} image {k} is not a finite 2-D array")
                extra = files - {"meta"} - {f"{n}/{k}" for n in ("convolution", "multislice", "atoms")
                                             for k in range(len(pairs))}
                if extra:
                    raise InputError(f"{path!r}: entries {sorted(extra)[:3]} are not described by its metadata")
        except InputError:
            raise
        except (OSError, ValueError, zipfile.BadZipFile, EOFError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot read dataset {path!r}: {exc}") from None
        return cls(conv, ms, atoms, grids, meta)


def read_dataset(path) -> Dataset:
    """:meth:`Dataset.read`."""
    return Dataset.read(path)


def write_dataset(dataset: Dataset, path) -> None:
    """:meth:`Dataset.write`."""
    dataset.write(path)
