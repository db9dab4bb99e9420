"""``stem-refine fit``: fit a surrogate model to paired images and save it."""

from __future__ import annotations

from surrogate.cli._common import add_model_args, add_training_data_args, emit_json, git_free_command_line, load_training_data, model_from_args

help = "fit a polynomial surrogate to convolution/multislice image pairs and save the model file"


def add_arguments(parser):
    add_training_data_args(parser)
    add_model_args(parser)
    parser.add_argument("--out", "-o", required=True, metavar="MODEL.npz", help="model file to write")
    parser.add_argument("--json", action="store_true", help="print a JSON summary")


def run(args) -> int:
    import time

    from surrogate.imaging import save_model

    conv, ms, info = load_training_data(args)
    model = model_from_args(args, convolution=info["convolution"])
    t0 = time.perf_counter()
    model.fit(conv, ms, elements=info["elements"],
              provenance={"command": git_free_command_line(), **info["source"]})
    seconds = time.perf_counter() - t0
    r2 = model.score(conv, ms)
    path = save_model(model, args.out)
    summary = {"model": str(path), "n_terms": model.n_terms, "n_images": model.n_images_,
               "n_pixels": model.n_pixels_, "fit_seconds": seconds, "training_one_minus_r2": 1 - r2,
               "elements": list(model.elements_)}
    if args.json:
        emit_json(summary)
    else:
        print(f"fitted {model.n_terms} terms on {model.n_pixels_} pixels of {model.n_images_} images "
              f"in {seconds:.2f} s; training 1-R2 = {1 - r2:.4g}; wrote {path}")
    return 0
