"""``progress.xyz``: the best structure of every generation of a run.

A search's answer is one structure, but how it got there matters too: when
the right arrangement first appeared (the independent-image benchmark reports
the time at which a run first reaches 98 % of the atoms within 0.5 Å), and
what a user watches in a viewer (``ase gui progress.xyz``) to see the particle
crystallise. :class:`ProgressFile` appends the generation's best to an extxyz
file, rewritten atomically (its frames kept in memory, not read back each
generation), with ``generation``, ``elapsed_s`` (wall time of
the run so far, s), ``cost``, ``chi2`` and ``energy`` (eV) in each frame's
info. Frames after the checkpoint a run resumes from are dropped, so a
resumed run (which repeats the generations after its checkpoint) leaves
one frame per generation. Reading it back (``ase.io.read(path, ":")``)
executes no code.
"""

from __future__ import annotations

from pathlib import Path

from ase import Atoms

from surrogate.common.atomic import atomic_path

__all__ = ["PROGRESS_NAME", "ProgressFile", "read_progress"]

#: file name in a run's output folder
PROGRESS_NAME = "progress.xyz"
_KEYS = ("cost", "chi2", "energy")


def read_progress(path) -> list[Atoms]:
    """The frames of ``path`` (empty when it does not exist)."""
    from ase.io import read

    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return []
    frames = list(read(str(path), index=":", format="extxyz"))
    for f in frames:  # ase.io reads an "energy" entry as a calculator result: put it back in info
        if f.calc is not None and "energy" in f.calc.results:
            f.info["energy"] = float(f.calc.results["energy"])
        f.calc = None
    return frames


class ProgressFile:
    """``progress.xyz`` of a run: the frames kept in memory, the file rewritten atomically per generation.

    Opened at generation ``generation`` (0 for a new run, the checkpoint's for
    a resumed one), it keeps the file's frames up to that generation (read
    once) and drops the later ones a killed run may have left.
    """

    def __init__(self, path, generation: int):
        self.path = Path(path)
        self.frames = [f for f in read_progress(self.path) if int(f.info.get("generation", -1)) <= generation] \
            if generation > 0 else []

    def record(self, best: Atoms, generation: int, elapsed: float) -> Path:
        """Append ``best`` as generation ``generation`` (``elapsed`` s into the run) and rewrite the file."""
        from ase.io import write

        self.frames = [f for f in self.frames if int(f.info["generation"]) < generation]
        frame = Atoms(best.get_chemical_symbols(), positions=best.get_positions())
        frame.info = {"generation": int(generation), "elapsed_s": round(float(elapsed), 3)}
        for key in _KEYS:
            if key in best.info:
                frame.info[key] = float(best.info[key])
        self.frames.append(frame)
        with atomic_path(self.path, suffix=".xyz") as tmp:
            write(tmp, self.frames, format="extxyz")
        return self.path
