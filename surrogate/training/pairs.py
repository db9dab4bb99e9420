"""Paired convolution / multislice image folders (the published layout of Combs et al.'s data).

Within each folder the file names differ only by one integer, e.g.
``Pt_Mo5_convolution_7.txt`` and ``pt_mo5_7_cl160mm_ss.tif``. The varying
number is found per folder, and file *k* of one folder pairs with file *k*
of the other. Folders whose numbers do not match one to one are refused.

Image files (:data:`surrogate.common.IMAGE_SUFFIXES`: whitespace-separated
text ``.txt``/``.dat``, ``.csv`` with commas, TIFF, NumPy ``.npy``; one 2-D
array each) are read by :func:`surrogate.common.read_image_array`.
"""

from __future__ import annotations

import re
from pathlib import Path

from surrogate.common import IMAGE_SUFFIXES, InputError, read_image_array

__all__ = ["pair_folders", "read_pairs"]


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
        ci, mi = read_image_array(c), read_image_array(m)
        if ci.shape != mi.shape:
            raise InputError(f"pair {k}: {c.name} has shape {ci.shape} but {m.name} has shape {mi.shape}")
        nums.append(k)
        conv.append(ci)
        ms.append(mi)
    return nums, conv, ms
