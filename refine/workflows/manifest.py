"""A batch's manifest: the refinements to run, read from TOML or CSV and expanded into one :class:`RunSpec` per seed.

Manifest
--------
A TOML file (read with :mod:`tomllib`) or a CSV file listing refinements.
TOML::

    [defaults]                  # optional, for every run below
    model = "pt_model.npz"      # default: the shipped default model
    population = 20
    generations = 100
    time_limit = 600            # s
    alpha = "auto"              # or a number

    [[runs]]
    image = "images/particle_a.tif"
    composition = "Pt309"
    seeds = [1, 2, 3, 4]        # one run per seed (or `seed = 1`)
    pixel_size = 0.1            # Å, when the file has no calibration
    name = "a"                  # optional; default the image's file stem

CSV: a header row naming the same keys (``name``, ``image``,
``composition``, ``model``, ``seeds``/``seed``, and the settings), one
refinement per row; an empty cell takes the default; seeds separated by
spaces or semicolons (``1;2;3;4``); lines starting with ``#`` are comments.
Relative paths are relative to the manifest's folder.

Keys: ``image`` and ``composition`` are required (an element without a
number, ``"Pt"``, takes the number estimated from the image, as
``stem-refine refine -c Pt`` does); ``model``, ``seeds``
(default ``[0]``) and ``name`` are optional; every other key is a setting
of :func:`refine.workflows.refine_image` by its flat keyword
(``population``, ``generations``, ``time_limit``, ``alpha``, ``pixel_size``,
``search``, ``ga_options``, ...: :data:`refine.workflows.settings.KEYWORDS`,
see :func:`setting_names`). A setting not given takes the default that
``stem-refine refine`` has too (:mod:`refine.workflows.defaults`: the
anneal search, α auto, ...). Unknown keys, a
missing image or model file, a bad composition, bad values and duplicate
run names raise :class:`~surrogate.common.errors.InputError` before anything runs.

Each (refinement, seed) pair is one run named ``<name>-seed<seed>``
(:mod:`refine.workflows.batch` runs them).
"""

from __future__ import annotations

import csv
import logging
import math
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from refine.workflows.inputs import START_SOURCES
from refine.workflows.settings import KEYWORDS
from surrogate.common import InputError

__all__ = ["RunSpec", "read_manifest", "parse_manifest", "setting_names"]

log = logging.getLogger(__name__)

#: keys of a manifest entry that are not settings of refine_image
_ENTRY_KEYS = ("name", "image", "composition", "model", "seeds", "seed")
#: settings a manifest cannot give (the batch sets them)
_RESERVED = ("seed", "resume", "progress")
#: settings checked here; the others are checked by refine_image
_CORE_SETTINGS = ("population", "generations", "time_limit", "alpha", "pixel_size")

_NAME_OK = re.compile(r"[^A-Za-z0-9._+-]+")


@dataclass(frozen=True)
class RunSpec:
    """One refinement run of a batch: one image, one seed.

    Attributes
    ----------
    name : str
        Unique run name, also the output sub-folder (``<name>-seed<seed>``).
    image : str
        Absolute path of the image file.
    composition : str
        E.g. ``"Pt309"``.
    seed : int
    model : str or None
        Absolute path of the model file; None: the shipped default model.
    settings : dict
        Further settings by their flat keywords (:func:`setting_names`), for
        :func:`refine.workflows.settings.refinement_settings`.
    """

    name: str
    image: str
    composition: str
    seed: int
    model: str | None = None
    settings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def setting_names() -> tuple[str, ...]:
    """Settings a manifest may give: the flat keywords of :func:`refine.workflows.refine_image`'s settings.

    The core settings (population, generations, time_limit, alpha,
    pixel_size) first, then the others in the order of
    :data:`refine.workflows.settings.KEYWORDS`, less those the batch sets
    itself (seed, resume, progress).
    """
    return (*_CORE_SETTINGS, *(k for k in KEYWORDS if k not in _RESERVED and k not in _CORE_SETTINGS))


# --------------------------------------------------------------------------- values of one entry

def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_setting(key: str, value, where: str):
    """Check the core settings' values; return the normalized value."""
    def number(v):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise InputError(f"{where}: {key} must be a number, got {v!r}")
        return v

    if key == "population":
        if not _is_int(value) or value < 1:
            raise InputError(f"{where}: population must be an integer ≥ 1, got {value!r}")
    elif key == "generations":
        if not _is_int(value) or value < 0:
            raise InputError(f"{where}: generations must be an integer ≥ 0, got {value!r}")
    elif key in ("time_limit", "pixel_size"):
        if number(value) <= 0:
            raise InputError(f"{where}: {key} must be positive, got {value!r}")
    elif key in ("undistort", "lattice_pixel_size"):
        if not isinstance(value, bool):
            raise InputError(f"{where}: {key} must be true or false, got {value!r}")
    elif key == "alpha":
        if value != "auto" and (isinstance(value, bool) or not isinstance(value, (int, float))
                                or not math.isfinite(value) or value < 0):
            raise InputError(f"{where}: alpha must be 'auto' or a number ≥ 0, got {value!r}")
    return value


def _seeds(value, where: str) -> list[int]:
    """An entry's seeds: one integer, a list, or a string of integers separated by spaces, ';' or ','."""
    if _is_int(value):
        value = [value]
    if isinstance(value, str):
        parts = [p for p in re.split(r"[\s;,]+", value.strip()) if p]
        try:
            value = [int(p) for p in parts]
        except ValueError:
            raise InputError(f"{where}: seeds must be integers separated by spaces or ';', got {value!r}") from None
    if not isinstance(value, (list, tuple)) or not value or not all(_is_int(s) and s >= 0 for s in value):
        raise InputError(f"{where}: seeds must be a non-empty list of integers ≥ 0, got {value!r}")
    if len(set(value)) != len(value):
        raise InputError(f"{where}: seeds {value!r} repeat a seed")
    return list(value)


def _resolve(path, base: Path, what: str, where: str) -> str:
    """The absolute path of an existing file; relative paths are relative to ``base``."""
    if not isinstance(path, (str, os.PathLike)) or not str(path).strip():
        raise InputError(f"{where}: {what} must be a file path, got {path!r}")
    p = Path(os.path.expanduser(str(path)))
    if not p.is_absolute():
        p = base / p
    if not p.exists():
        raise InputError(f"{where}: {what} file {p} does not exist")
    if p.is_dir():
        raise InputError(f"{where}: {what} {p} is a folder, not a file")
    return str(p.resolve())


def _model_elements(path: str | None, cache: dict):
    """Elements a model file was fitted on (empty when unknown or unreadable here)."""
    if path not in cache:
        elements = ()
        try:
            if path is None:
                from surrogate import default_model

                model = default_model()
            else:
                from surrogate.imaging import load_model

                model = load_model(path)
            elements = tuple(getattr(model, "elements_", ()) or ())
        except Exception as exc:  # the run will report it
            if path is not None:
                raise InputError(f"cannot read model {path}: {exc}") from exc
            log.debug("default model not readable here: %s", exc)
        cache[path] = elements
    return cache[path]


def _composition(value, elements) -> str:
    """A run's composition as text: ``"Pt309"``, or one element without a number (``"Pt"``, estimated from the image).

    refine_image estimates the number once it has read the image
    (:func:`refine.workflows.inputs.composition_from_image`); here only the
    element is checked, so that a bad one is reported before anything runs.
    """
    from refine.search import composition_string, validate_composition
    from refine.workflows.inputs import bare_element

    element = bare_element(value, elements)
    return element if element is not None else composition_string(validate_composition(value, elements))


def _entry_specs(defaults: Mapping, entry: Mapping, k: int, *, base: Path, source: str, allowed: set,
                 allowed_settings: tuple, model_cache: dict, check_models: bool) -> list[RunSpec]:
    """The runs of manifest entry number ``k`` (1-based), its defaults merged in."""
    where = f"{source}, run {k}"
    if not isinstance(entry, Mapping):
        raise InputError(f"{where}: expected a table of keys, got {entry!r}")
    for key in entry:
        if key not in allowed:
            raise InputError(f"{where}: unknown key {key!r}; known: "
                             f"{', '.join((*_ENTRY_KEYS, *allowed_settings))}")
    for table, what in ((defaults, f"{source}, [defaults]"), (entry, where)):
        if "seed" in table and "seeds" in table:
            raise InputError(f"{what}: give either seed or seeds, not both")
    seed_table = entry if ("seed" in entry or "seeds" in entry) else defaults
    merged = {key: v for key, v in {**defaults, **entry}.items() if key not in ("seed", "seeds")}
    for req in ("image", "composition"):
        if req not in merged or merged[req] in (None, ""):
            raise InputError(f"{where}: missing {req!r}")
    image = _resolve(merged["image"], base, "image", where)
    model = merged.get("model")
    model = None if model in (None, "", "default") else _resolve(model, base, "model", where)
    try:
        elements = _model_elements(model, model_cache) if check_models else ()
        comp = _composition(merged["composition"], elements)
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from None
    seeds = _seeds(seed_table.get("seeds", seed_table.get("seed", 0)), where)
    settings = {}
    for key, value in merged.items():
        if key in _ENTRY_KEYS:
            continue
        settings[key] = _check_setting(key, value, where)
    # file settings, relative to the manifest's folder
    if isinstance(settings.get("mask"), str) and settings["mask"] != "zeros":
        settings["mask"] = _resolve(settings["mask"], base, "mask", where)
    if isinstance(settings.get("start"), str) and settings["start"] not in START_SOURCES:
        settings["start"] = _resolve(settings["start"], base, "start structure", where)
    name = merged.get("name") or Path(image).stem
    if not isinstance(name, str):
        raise InputError(f"{where}: name must be a string, got {name!r}")
    name = _NAME_OK.sub("_", name).strip("._") or f"run{k}"
    return [RunSpec(name=f"{name}-seed{s}", image=image, composition=comp, seed=int(s), model=model,
                    settings=dict(settings)) for s in seeds]


# --------------------------------------------------------------------------- the manifest

def parse_manifest(data: Mapping, base_dir=".", *, source: str = "manifest", check_models: bool = True
                   ) -> list[RunSpec]:
    """Validate a manifest given as a mapping (the parsed TOML) and expand it into runs.

    Parameters
    ----------
    data : mapping
        ``{"defaults": {...}, "runs": [{...}, ...]}``.
    base_dir : path
        Folder that relative paths are relative to.
    source : str
        Name used in error messages.
    check_models : bool
        Read each model file once to check that it loads and that the
        compositions use only its elements.

    Returns
    -------
    list of RunSpec
        One per (entry, seed), in manifest order.

    Raises
    ------
    InputError
        See the module docstring.
    """
    base = Path(base_dir).resolve()
    if not isinstance(data, Mapping):
        raise InputError(f"{source}: expected a table with a [[runs]] list, got {type(data).__name__}")
    unknown = set(data) - {"defaults", "runs"}
    if unknown:
        raise InputError(f"{source}: unknown top-level key(s) {', '.join(sorted(unknown))}; "
                         "expected [defaults] and [[runs]]")
    defaults = data.get("defaults", {})
    if not isinstance(defaults, Mapping):
        raise InputError(f"{source}: [defaults] must be a table")
    entries = data.get("runs")
    if not isinstance(entries, list) or not entries:
        raise InputError(f"{source}: no runs; list them as [[runs]] tables (TOML) or rows (CSV)")
    allowed_settings = setting_names()
    allowed = set(_ENTRY_KEYS) | set(allowed_settings)
    for key in defaults:
        if key not in allowed or key == "name":
            raise InputError(f"{source}: unknown key {key!r} in [defaults]; known: "
                             f"{', '.join(k for k in (*_ENTRY_KEYS, *allowed_settings) if k != 'name')}")
    specs: list[RunSpec] = []
    model_cache: dict = {}
    for k, entry in enumerate(entries, 1):
        specs += _entry_specs(defaults, entry, k, base=base, source=source, allowed=allowed,
                              allowed_settings=allowed_settings, model_cache=model_cache, check_models=check_models)
    seen: dict[str, int] = {}
    for spec in specs:
        if spec.name in seen:
            raise InputError(f"{source}: two runs are named {spec.name!r}; give the refinements distinct "
                             "'name' keys (or distinct seeds)")
        seen[spec.name] = 1
    return specs


def _csv_value(key: str, text: str):
    """A CSV cell as the TOML value it stands for (numbers become numbers)."""
    text = text.strip()
    if key in ("image", "composition", "model", "name", "seeds"):
        return text
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text


def _read_csv(path: Path) -> dict:
    """A CSV manifest as the mapping a TOML one parses to (``{"runs": [...]}``)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"manifest {path} is not a text file") from None
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise InputError(f"manifest {path} is empty")
    reader = csv.reader(lines)
    header = [h.strip() for h in next(reader)]
    if len(set(header)) != len(header) or any(not h for h in header):
        raise InputError(f"manifest {path}: the header row needs distinct, non-empty column names, got {header}")
    runs = []
    for lineno, row in enumerate(reader, 2):
        if len(row) > len(header):
            raise InputError(f"manifest {path}, row {lineno}: {len(row)} cells for {len(header)} columns")
        entry = {h: _csv_value(h, v) for h, v in zip(header, row) if v.strip()}
        runs.append(entry)
    return {"runs": runs}


def read_manifest(path, *, check_models: bool = True) -> list[RunSpec]:
    """Read a TOML (``.toml``) or CSV (any other suffix) manifest and expand it into runs.

    See the module docstring for the format; relative paths are relative to
    the manifest's folder. Raises :class:`InputError` for a missing or bad
    manifest.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"manifest {path} does not exist" if not path.exists() else f"manifest {path} is not a file")
    if path.suffix.lower() == ".toml":
        import tomllib

        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise InputError(f"manifest {path} is not valid TOML: {exc}") from None
        except UnicodeDecodeError:
            raise InputError(f"manifest {path} is not a text file") from None
    else:
        data = _read_csv(path)
    return parse_manifest(data, path.parent, source=f"manifest {path.name}", check_models=check_models)
