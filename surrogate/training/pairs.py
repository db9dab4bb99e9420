"""Reading image files and paired convolution/multislice folders.

Supported image files: whitespace-separated text (``.txt``, ``.dat``, ``.csv``
with commas), TIFF (``.tif``, ``.tiff``), NumPy ``.npy``. One 2-D array each.

Pairing (the published layout of Combs et al.'s data): within each folder the
file names differ only by one integer, e.g. ``Pt_Mo5_convolution_7.txt`` and
``pt_mo5_7_cl160mm_ss.tif``. The varying number is found per folder, and file
*k* of one folder pairs with file *k* of the other. Folders whose numbers do
not match one to one are refused.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from surrogate.common import InputError

__all__ = ["read_image", "write_image", "read_image_metadata", "pair_folders", "read_pairs", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".txt", ".dat", ".csv", ".tif", ".tiff", ".npy")


def read_image(path) -> np.ndarray:
    """Read one 2-D image as float64, shape (M, N); :class:`InputError` on any problem."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"image file {path} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix in (".tif", ".tiff"):
            import tifffile

            data = tifffile.imread(path)
        elif suffix == ".npy":
            data = np.load(path, allow_pickle=False)
        elif suffix in (".txt", ".dat", ".csv"):
            data = np.loadtxt(path, delimiter="," if suffix == ".csv" else None, ndmin=2)
        else:
            raise InputError(f"{path}: unsupported image format {suffix!r} (use one of {', '.join(IMAGE_SUFFIXES)})")
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"cannot read image {path}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    data = np.asarray(data)
    if data.ndim == 3 and 1 in data.shape:
        data = data.squeeze()
    if data.ndim != 2:
        raise InputError(f"{path}: expected a 2-D image, got shape {data.shape}")
    if data.size == 0:
        raise InputError(f"{path}: image is empty")
    if not np.issubdtype(data.dtype, np.number):
        raise InputError(f"{path}: image does not hold numbers (dtype {data.dtype})")
    data = data.astype(np.float64)
    bad = int(np.count_nonzero(~np.isfinite(data)))
    if bad:
        raise InputError(f"{path}: {bad} NaN or infinite pixels")
    return data


def write_image(path, image: np.ndarray, grid=None, *, meta: dict | None = None) -> Path:
    """Write a 2-D image atomically with its probe grid recorded; returns the path.

    Formats (chosen by suffix), float64:

    * TIFF (``.tif``/``.tiff``): the ImageDescription tag holds JSON
      ``{"stem-refine": 1, "shape": [nx, ny], "grid": {"origin": [x0, y0],
      "shape": [...], "pixel_size": Δ}, "units": "Å", ...meta}`` (tifffile's
      "shaped" form, so ``tifffile.imread`` still returns the 2-D array), and
      the X/Y resolution tags hold 1e8/Δ pixels per cm (ImageJ/Fiji show Δ).
    * NumPy (``.npy``): the same JSON in a sidecar ``IMAGE.npy.json``.

    :func:`read_image_metadata` reads the record back; ``refine.io.images.read_image``
    takes its calibration from it.

    Parameters
    ----------
    path : path-like
    image : ndarray, shape grid.shape
    grid : ProbeGrid, optional
        Where the pixels are (Å). Without it nothing about calibration is written.
    meta : dict, optional
        More JSON-serializable facts (what was simulated, with which parameters).
    """
    import json

    from surrogate.common import atomic_path, atomic_write_text

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".tif", ".tiff"):
        raise InputError(f"{path}: output images are .npy, .tif or .tiff, not {suffix!r}")
    image = np.ascontiguousarray(image, dtype=np.float64)
    if image.ndim != 2:
        raise InputError(f"{path}: can only write 2-D images, got shape {image.shape}")
    record = {"stem-refine": 1, "shape": list(image.shape), "units": "Å", **(meta or {})}
    if grid is not None:
        if tuple(grid.shape) != image.shape:
            raise InputError(f"{path}: image shape {image.shape} does not match its grid {grid.shape}")
        record["grid"] = grid.to_dict()
    text = json.dumps(record, sort_keys=True)
    with atomic_path(path) as tmp:
        if suffix == ".npy":
            np.save(tmp, image)
        else:
            import tifffile

            kwargs = {}
            if grid is not None:
                per_cm = 1e8 / grid.pixel_size
                kwargs = dict(resolution=(per_cm, per_cm), resolutionunit="CENTIMETER")
            tifffile.imwrite(tmp, image, description=text, metadata=None, **kwargs)
    if suffix == ".npy":
        atomic_write_text(path.with_name(path.name + ".json"), text + "\n")
    return path


def read_image_metadata(path) -> dict | None:
    """The record :func:`write_image` left with an image (TIFF description or ``.npy.json``), or None."""
    import json

    path = Path(path)
    text = None
    try:
        if path.suffix.lower() == ".npy":
            side = path.with_name(path.name + ".json")
            if side.is_file():
                text = side.read_text()
        elif path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                tag = tif.pages[0].tags.get("ImageDescription")
                text = tag.value if tag is not None else None
        record = json.loads(text) if text else None
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("stem-refine") != 1:
        return None
    return record


def _numbered(folder: Path) -> dict[int, Path]:
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                   and not p.name.startswith("."))
    if not files:
        raise InputError(f"{folder} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
    if len(files) == 1:
        nums = re.findall(r"\d+", files[0].stem)
        return {int(nums[-1]) if nums else 0: files[0]}
    # Split every name into digit / non-digit runs and find the one digit run that varies.
    split = [re.split(r"(\d+)", p.name) for p in files]
    if len({len(s) for s in split}) != 1:
        raise InputError(f"{folder}: file names do not share one pattern with a varying number")
    varying = [i for i in range(len(split[0])) if len({s[i] for s in split}) > 1]
    if len(varying) != 1 or varying[0] % 2 == 0:
        raise InputError(f"{folder}: file names must differ by exactly one number "
                         f"(e.g. image_0.txt, image_1.txt, ...)")
    out: dict[int, Path] = {}
    for s, p in zip(split, files):
        k = int(s[varying[0]])
        if k in out:
            raise InputError(f"{folder}: number {k} appears twice ({out[k].name}, {p.name})")
        out[k] = p
    return out


def pair_folders(convolution_dir, multislice_dir) -> list[tuple[int, Path, Path]]:
    """Match the files of two folders by their varying number; sorted by that number."""
    conv = _numbered(Path(convolution_dir))
    ms = _numbered(Path(multislice_dir))
    if set(conv) != set(ms):
        only_c = sorted(set(conv) - set(ms))
        only_m = sorted(set(ms) - set(conv))
        raise InputError(f"unpaired images: numbers {only_c} only in {convolution_dir}, "
                         f"{only_m} only in {multislice_dir}")
    return [(k, conv[k], ms[k]) for k in sorted(conv)]


def read_pairs(convolution_dir, multislice_dir, progress: bool = False):
    """Read paired folders; returns ``(numbers, convolution_images, multislice_images)``.

    Raises :class:`InputError` for unpaired numbers or mismatched shapes.
    """
    pairs = pair_folders(convolution_dir, multislice_dir)
    it = pairs
    if progress:
        from tqdm import tqdm

        it = tqdm(pairs, desc="reading images", unit="pair", leave=False)
    nums, conv, ms = [], [], []
    for k, c, m in it:
        ci, mi = read_image(c), read_image(m)
        if ci.shape != mi.shape:
            raise InputError(f"pair {k}: {c.name} has shape {ci.shape} but {m.name} has shape {mi.shape}")
        nums.append(k)
        conv.append(ci)
        ms.append(mi)
    return nums, conv, ms
