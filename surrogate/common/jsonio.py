"""JSON out: one serializer for files (written atomically) and for ``--json`` on stdout."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from surrogate.common.atomic import atomic_write_text

__all__ = ["json_default", "dumps", "write_json", "print_json"]


def json_default(o):
    """JSON form of values ``json`` does not know: NumPy scalars and arrays, paths; ``str`` otherwise."""
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return str(o)


def dumps(obj, *, indent: int | None = 2, **kwargs) -> str:
    """``obj`` as JSON text (NaN and ±inf kept as JSON's usual ``NaN``/``Infinity``)."""
    return json.dumps(obj, indent=indent, default=json_default, **kwargs)


def write_json(path, obj, **kwargs) -> Path:
    """Write ``obj`` as indented JSON plus a newline to ``path``, atomically."""
    return atomic_write_text(path, dumps(obj, **kwargs) + "\n")


def print_json(obj, file=None) -> None:
    """Print ``obj`` as indented JSON (the CLI's ``--json``)."""
    out = sys.stdout if file is None else file
    out.write(dumps(obj) + "\n")
