"""What :func:`refine.workflows.refine_image` is told, besides the image and the composition.

Five settings objects, each with its defaults from
:mod:`refine.workflows.defaults`:

* ``search`` — a :class:`refine.search.GASettings` (a recipe and its
  changes, :func:`refine.workflows.defaults.search_settings`);
* ``cost`` — :class:`CostSettings`: α rule, noise model, energy;
* ``image_settings`` — :class:`ImageSettings`: calibration, mask, resampling, preparation
  (background, detector normalisation, crop);
* ``start`` — :class:`StartSettings`: the starting population;
* ``run`` — :class:`RunSettings`: seed, processes, resume, checkpoints, progress, log file.

The CLI and batch manifests name each setting by one flat keyword
(:data:`KEYWORDS`: ``population``, ``alpha``, ``start_relax_steps``, ...,
plus ``search`` for the recipe and ``ga_options`` for any other
:class:`~refine.search.GASettings` setting by its flat name);
:func:`refinement_settings` turns those keywords into the five objects.

Lengths in Å, doses in e/Å², times in s.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from refine.io.preparation import MARGIN as PARTICLE_MARGIN
from refine.workflows import defaults
from surrogate.common import InputError

__all__ = ["CostSettings", "ImageSettings", "StartSettings", "RunSettings", "KEYWORDS", "refinement_settings"]


@dataclass
class CostSettings:
    """The cost E + α·χ²: α, the noise model of χ², the energy term.

    Parameters
    ----------
    alpha : "auto", "thermal" or float
        Weight of χ² in eV per unit χ² (see :mod:`refine.cost.fitness`):
        ``"auto"`` balances E and χ² over the starting population,
        ``"thermal"`` is k_B·300 K/2. The GA's own ``alpha`` follows it.
    alpha_scale : float
        With ``alpha="auto"``: multiply the automatic α by this (> 1 favours the image).
    noise : "estimate", "poisson", float, array, path or None
        Noise model of χ²; None: :data:`refine.workflows.defaults.NOISE`,
        or Poisson noise with a ``dose``. A float is a uniform σ in image
        units; an array or file a σ per pixel (resampled with the image).
    dose : float, optional
        Electron dose in e/Å² (the image in units of the incident beam), for Poisson noise.
    model_error : bool
        Add the surrogate's own error (its model file's calibration) to the
        noise of χ² (:mod:`refine.cost.noise`): without it, at high dose the
        refinement fits the surrogate's error.
    calculator : str, ASE calculator or None
        Energy term (:func:`refine.cost.energy.make_calculator`); None drops it.
    fitness_options : dict
        Further :class:`refine.cost.fitness.Fitness` keywords.
    """

    alpha: object = defaults.ALPHA
    alpha_scale: float = defaults.ALPHA_SCALE
    noise: object = None
    dose: float | None = None
    model_error: bool = defaults.MODEL_ERROR
    calculator: object = "auto"
    fitness_options: dict = field(default_factory=dict)


@dataclass
class ImageSettings:
    """How the experimental image is read and prepared (:func:`refine.io.prepare_image`).

    The defaults leave an image as it is (already in beam units, or left to
    the fitness's fitted scale a·I_sim + b).

    Parameters
    ----------
    pixel_size : float, optional
        Å per pixel of an image file or array without (or with a wrong) calibration.
    mask : array_like, path, "zeros" or "auto", optional
        Pixels used (True), see :func:`refine.io.read_image`; ``"auto"``: the
        chosen particle grown by ``particle_margin`` (:mod:`refine.io.preparation`).
    resample : bool
        Resample an image whose pixel size differs from the model's (False: an error instead).
    background : None, "none", "vacuum" or float
        Subtracted first: the median of the vacuum pixels, or a number in file units.
    detector : None, float, "VAC,BEAM" or (VAC, BEAM)
        Normalisation to a fraction of the incident beam: a scale (image units
        per beam fraction) or the vacuum and beam levels of a detector scan.
    crop : None, "i0:i1,j0:j1", (i0, i1, j0, j1), "auto" or "particle:K"
        File pixels, or the (K-th) largest particle wholly in view plus ``particle_margin``.
    particle_margin : float
        Å of vacuum around the particle kept by ``mask="auto"`` and ``crop="auto"``.
    undistort : bool
        Measure the linear scan distortion on the image's zone-axis column
        lattice and undo it, last (:mod:`refine.io.distortion`).
    lattice_pixel_size : bool
        Set the pixel size from the image's zone-axis column lattice (an
        isotropic scale; :func:`refine.io.calibration.calibrate_pixel_size`),
        ``pixel_size`` or the file's being the start. Not with ``undistort``,
        which corrects the scale with the shear.
    """

    pixel_size: float | None = None
    mask: object = None
    resample: bool = True
    background: object = None
    detector: object = None
    crop: object = None
    particle_margin: float = PARTICLE_MARGIN
    undistort: bool = False
    lattice_pixel_size: bool = False

    def __post_init__(self):
        from refine.io.preparation import parse_background, parse_crop, parse_detector, parse_margin

        parse_background(self.background)
        parse_detector(self.detector)
        parse_crop(self.crop)
        parse_margin(self.particle_margin)
        for name in ("undistort", "lattice_pixel_size"):
            if not isinstance(getattr(self, name), bool):
                raise InputError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.undistort and self.lattice_pixel_size:
            raise InputError("undistort and lattice_pixel_size both set the scale from the lattice: choose one "
                             "(undistort also corrects shear)")

    def preparation(self) -> dict:
        """The preparation keywords of :func:`refine.io.prepare_image` (besides ``mask``)."""
        return {"background": self.background, "detector": self.detector, "crop": self.crop,
                "particle_margin": self.particle_margin}


@dataclass
class StartSettings:
    """The starting population of a new run.

    Parameters
    ----------
    source : {"random", "shapes", "mixed", "image"} or path
        Random compact clusters, :mod:`ase.cluster` shapes, half of each,
        clusters following the image, or the frames of a structure file.
    relax_steps : int
        FIRE steps on each starting cluster (0: none).
    count_weight : float or None
        The counted start (``source="counts"``): the weight of the image's count evidence against the
        energy when its columns are settled (:func:`refine.search.column_stacks.settle_columns`); ``inf``
        keeps every count and settles the depths only, None leaves the columns as counted.
    """

    source: str = defaults.START
    relax_steps: int = 0
    count_weight: float | None = defaults.COUNT_WEIGHT


@dataclass
class RunSettings:
    """How the run is carried out; none of these changes the cost.

    Parameters
    ----------
    seed : int
        Seeds the one :class:`numpy.random.Generator` of the run.
    workers : int
        Processes for the image-restrained annealings (results do not depend on it).
    resume : bool
        Continue from the checkpoint in the output folder (same image, composition and cost inputs required).
    checkpoint_every : int
        Checkpoint period in generations (the checkpoint is also written at the end).
    progress : bool
        Show a progress bar on stderr.
    log_file : bool
        Also log INFO and above to ``out_dir/refine.log``, appended over resumed runs
        (:mod:`refine.workflows.runlog`).
    """

    seed: int = 0
    workers: int = defaults.WORKERS
    resume: bool = False
    checkpoint_every: int = 1
    progress: bool = True
    log_file: bool = False


#: flat keyword (a manifest key, an option of ``stem-refine refine``) → (argument of refine_image, field); the
#: fields of ``search`` are GASettings flat names (refine.search.settings.FLAT_NAMES). ``search`` names the recipe,
#: ``ga_options`` holds further GASettings flat names. In the order refine_image took them as keywords.
KEYWORDS = {
    "population": ("search", "population_size"),
    "generations": ("search", "generations"),
    "seed": ("run", "seed"),
    "alpha": ("cost", "alpha"),
    "time_limit": ("search", "time_limit"),
    "pixel_size": ("image_settings", "pixel_size"),
    "resume": ("run", "resume"),
    "mask": ("image_settings", "mask"),
    "start": ("start", "source"),
    "noise": ("cost", "noise"),
    "dose": ("cost", "dose"),
    "model_error": ("cost", "model_error"),
    "multi_objective": ("search", "multi_objective"),
    "calculator": ("cost", "calculator"),
    "stagnation": ("search", "stagnation"),
    "relax_steps": ("search", "relax_steps"),
    "start_relax_steps": ("start", "relax_steps"),
    "count_weight": ("start", "count_weight"),
    "resample": ("image_settings", "resample"),
    "checkpoint_every": ("run", "checkpoint_every"),
    "progress": ("run", "progress"),
    "alpha_scale": ("cost", "alpha_scale"),
    "ga_options": ("search", None),
    "fitness_options": ("cost", "fitness_options"),
    "workers": ("run", "workers"),
    "search": ("search", None),
    "log_file": ("run", "log_file"),
    "background": ("image_settings", "background"),
    "detector": ("image_settings", "detector"),
    "crop": ("image_settings", "crop"),
    "particle_margin": ("image_settings", "particle_margin"),
    "undistort": ("image_settings", "undistort"),
    "lattice_pixel_size": ("image_settings", "lattice_pixel_size"),
}

#: GASettings that refine_image sets from ``cost`` and ``run`` (alpha, checkpoint_every, progress) or that have
#: a keyword of their own: not in ``ga_options``
_OWN_KEYWORDS = {"alpha": "alpha", "checkpoint_every": "checkpoint_every", "progress": "progress",
                 **{attr: key for key, (arg, attr) in KEYWORDS.items() if arg == "search" and attr}}


def refinement_settings(**keywords) -> dict:
    """The settings objects of :func:`refine.workflows.refine_image` from flat keywords (:data:`KEYWORDS`).

    Keywords not given take the defaults (:mod:`refine.workflows.defaults`).
    The search is the recipe ``search`` with the settings of ``ga_options``
    and then the search keywords (``population``, ``generations``,
    ``time_limit``, ``stagnation``, ``multi_objective``, ``relax_steps``)
    applied (:func:`refine.search.recipes.search_settings`: ``relax_steps``
    None means the recipe's rule).

    Returns
    -------
    dict
        ``search`` (GASettings), ``cost``, ``image_settings``, ``start``,
        ``run``: the keyword arguments of ``refine_image`` besides the image,
        composition, model and output folder.

    Raises
    ------
    InputError
        An unknown keyword, or a ``ga_options`` entry that has a keyword of
        its own (e.g. ``population_size``: give ``population``).

    Examples
    --------
    >>> s = refinement_settings(population=16, alpha="thermal", ga_options={"polish_atoms": 40})
    >>> s["search"].population_size, s["search"].polish.atoms, s["cost"].alpha
    (16, 40, 'thermal')
    """
    unknown = [key for key in keywords if key not in KEYWORDS]
    if unknown:
        raise InputError(f"unknown setting(s) {', '.join(map(repr, unknown))}; known: {', '.join(KEYWORDS)}")
    recipe = keywords.pop("search", None)
    ga_options = dict(keywords.pop("ga_options", None) or {})
    clash = [name for name in ga_options if name in _OWN_KEYWORDS]
    if clash:
        raise InputError("ga_options: " + "; ".join(
            f"{name} is set by {_OWN_KEYWORDS[name]!r}, not in ga_options" for name in clash))
    objects = {"search": dict(ga_options), "cost": {}, "image_settings": {}, "start": {}, "run": {}}
    for key, value in keywords.items():
        arg, attr = KEYWORDS[key]
        objects[arg][attr] = value
    return {"search": defaults.search_settings(recipe, **objects["search"]),
            "cost": CostSettings(**objects["cost"]), "image_settings": ImageSettings(**objects["image_settings"]),
            "start": StartSettings(**objects["start"]), "run": RunSettings(**objects["run"])}
