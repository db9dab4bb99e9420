"""``stem-refine fit``: fit a surrogate model to paired images and save it.

::

    stem-refine fit (--convolution-dir DIR --multislice-dir DIR [--pixel-size Å --elements LIST] | --dataset FILE)
                    [--size S --degree D ...] -o MODEL.npz [--json] [--no-progress]

Writes the model file (``-o``, one file) with the command line and the
training data in its provenance; prints the number of terms and the
training 1 - R².
"""

from __future__ import annotations

from surrogate.cli.options import add_json, add_no_progress, add_out, command_line
from surrogate.cli.training_options import add_model_args, add_training_data_args, load_training_data, model_from_args

help = "fit a polynomial surrogate to convolution/multislice image pairs and save the model file"
description = __doc__


def add_arguments(parser):
    add_training_data_args(parser)
    add_model_args(parser)
    add_out(parser, folder=False, metavar="MODEL.npz", help="the model file to write (.npz)")
    add_json(parser, "a summary (terms, pixels, training 1-R2)")
    add_no_progress(parser)


def run(args) -> int:
    import time

    from surrogate.common import print_json
    from surrogate.imaging import save_model

    conv, ms, info = load_training_data(args, progress=args.progress)
    model = model_from_args(args, convolution=info["convolution"])
    t0 = time.perf_counter()
    model.fit(conv, ms, elements=info["elements"],
              provenance={"command": command_line(), **info["source"]})
    seconds = time.perf_counter() - t0
    r2 = model.score(conv, ms)
    path = save_model(model, args.out)
    summary = {"model": str(path), "n_terms": model.n_terms, "n_images": model.n_images_,
               "n_pixels": model.n_pixels_, "fit_seconds": seconds, "training_one_minus_r2": 1 - r2,
               "elements": list(model.elements_)}
    if args.json:
        print_json(summary)
    else:
        print(f"fitted {model.n_terms} terms on {model.n_pixels_} pixels of {model.n_images_} images "
              f"in {seconds:.2f} s; training 1-R2 = {1 - r2:.4g}; wrote {path}")
    return 0
