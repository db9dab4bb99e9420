"""Named microscope settings for ``stem-refine model build --preset NAME``.

Each preset is a complete :class:`surrogate.common.microscope.Microscope`;
flags given with it override single fields.

``combs2019-200kv``
    The paper's (Combs et al. 2019, "Dataset"): 200 kV, 24.5 mrad, Cs 1.2 µm
    (probe-corrected), detector 50–150 mrad, source 0.88 Å FWHM (see
    :mod:`surrogate.groundtruth.multislice` for why FWHM), defocus 0. The
    shipped model's microscope.
``probe-corrected-300kv``
    A generic probe-corrected 300 kV instrument (Titan/Spectra class):
    21.4 mrad, residual Cs 1 µm, HAADF 60–200 mrad, source 0.7 Å FWHM,
    defocus 0. These are typical values, not one instrument's: read your
    own from the image (``--from-image``) or the microscope's log and
    override what differs; fit the source size when unknown (``--fit-source``).
"""

from __future__ import annotations

from surrogate.common import InputError
from surrogate.common.microscope import Microscope

__all__ = ["PRESETS", "preset", "DEFAULT_PRESET"]

PRESETS = {
    "combs2019-200kv": Microscope(voltage=200.0, convergence=24.5, detector=(50.0, 150.0), cs=1.2, defocus=0.0,
                                  source_size=0.88),
    "probe-corrected-300kv": Microscope(voltage=300.0, convergence=21.4, detector=(60.0, 200.0), cs=1.0,
                                        defocus=0.0, source_size=0.7),
}
#: what ``model build`` starts from when neither ``--preset`` nor ``--from-image`` is given
DEFAULT_PRESET = "combs2019-200kv"


def preset(name: str) -> Microscope:
    """The :class:`Microscope` of a preset; :class:`InputError` naming the presets for an unknown name."""
    try:
        return PRESETS[name]
    except KeyError:
        raise InputError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}") from None
