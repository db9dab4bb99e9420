"""Atomic file writes: results are either complete or absent, never half-written.

Every writer in the project goes through :func:`atomic_path`: the content is
written to a temporary file in the target folder (same file system), flushed,
given the permissions a plain ``open`` would have, and moved onto the target
with :func:`os.replace`. On any error the temporary file is removed and the
previous target, if any, is left untouched.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["atomic_path", "atomic_write_with", "atomic_write_bytes", "atomic_write_text"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path, suffix: str | None = None):
    """Yield a temporary path next to ``path``; move it onto ``path`` if the block succeeds.

    ``suffix`` (default: the target's) matters to writers that pick a format
    from the file name (matplotlib, ``numpy.save``, ``ase.io.write``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                               suffix=suffix if suffix is not None else (path.suffix or ".tmp"))
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp makes the file 0600; results should be as readable as any other file.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_with(path, write) -> Path:
    """Call ``write(tmp_path)`` (a writer that takes a file name), then move it onto ``path``."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (fsync'ed)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    return Path(path)


def atomic_write_text(path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))

