"""``stem-refine cost`` on the shipped independent abTEM image (tests/data/small): the truth beats wrong structures."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from ase.io import read, write

from refine.analysis.perturbations import column_shift, hollow_moves, patch_flip
from refine.cli.main import main

sys.path.insert(0, str(Path(__file__).resolve().parent))
from small_case import HIGH_DOSE, SMALL, noisy_small_image  # noqa: E402


@pytest.fixture(scope="module")
def high_dose_image(tmp_path_factory):
    """The small Pt70 decahedron's abTEM image with Poisson noise at 2e7 e/Å² (0.1 Å pixels)."""
    path = tmp_path_factory.mktemp("cost") / "image.npy"
    np.save(path, noisy_small_image(HIGH_DOSE))
    return path


def _cost(capsys, *args):
    assert main(["cost", *map(str, args), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_truth_has_a_lower_cost_than_each_wrong_structure_at_high_dose(tmp_path, capsys, high_dose_image):
    truth = read(SMALL / "truth.xyz")
    frames = [truth, patch_flip(truth, 3), hollow_moves(truth, 1, seed=0), column_shift(truth, 0.15, direction=2)]
    path = tmp_path / "structures.extxyz"
    write(path, frames)
    # relaxed on the cost as the refinement's offspring are, so that no wrong structure loses on strain alone
    rows = _cost(capsys, path, high_dose_image, "--pixel-size", 0.1, "--dose", 2e7, "--relax", 60)
    assert [r["frame"] for r in rows] == [0, 1, 2, 3]
    for r in rows[1:]:
        assert r["cost"] > rows[0]["cost"], r["frame"]
    # the surrogate's own error is in the noise: χ²/px of the truth is of order 1, not ≫ 1
    assert 0.1 < rows[0]["chi2_per_pixel"] < 3.0
    assert rows[0]["noise"]["model_error"]["correlation_area"] > 1


def test_without_the_model_error_the_truth_looks_far_off_at_high_dose(capsys, high_dose_image):
    with_error = _cost(capsys, SMALL / "truth.xyz", high_dose_image, "--pixel-size", 0.1, "--dose", 2e7)[0]
    without = _cost(capsys, SMALL / "truth.xyz", high_dose_image, "--pixel-size", 0.1, "--dose", 2e7,
                    "--no-model-error")[0]
    assert without["chi2_per_pixel"] > 5 * with_error["chi2_per_pixel"]
    assert without["energy"] == pytest.approx(with_error["energy"])
    assert "model_error" not in without["noise"]


def test_image_without_dose_uses_the_signal_dependent_estimate(capsys, high_dose_image):
    row = _cost(capsys, SMALL / "truth.xyz", high_dose_image, "--pixel-size", 0.1, "--alpha", "0.5")[0]
    assert row["noise"]["model"] == "signal-dependent" and row["alpha"] == 0.5
    assert row["noise"]["model_error"]["beam_scale"] == pytest.approx(1.0, rel=0.3)


@pytest.mark.parametrize("args, message", [
    (["missing.xyz", "IMAGE"], "does not exist"),
    (["TRUTH", "IMAGE", "--relax", "-1"], "--relax"),
    (["TRUTH", "IMAGE", "--dose", "-5"], "dose"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, high_dose_image, args, message):
    args = [str(high_dose_image) if a == "IMAGE" else str(SMALL / "truth.xyz") if a == "TRUTH" else
            str(tmp_path / a) if a.endswith(".xyz") else a for a in args]
    assert main(["cost", *args, "--pixel-size", "0.1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_a_run_cannot_resume_with_the_model_error_switched(tmp_path, high_dose_image):
    from refine.workflows import refine_image, refinement_settings
    from surrogate.common import InputError

    def run(**kw):
        opts = {"population": 2, "generations": 0, "pixel_size": 0.1, "dose": 2e7, "progress": False,
                "search": "plain", "relax_steps": 0, **kw}
        return refine_image(high_dose_image, "Pt70", out_dir=tmp_path / "run", **refinement_settings(**opts))

    first = run()
    assert first.summary["noise"]["model_error"]["correlation_area"] > 1
    with pytest.raises(InputError, match="model error"):
        run(resume=True, generations=1, model_error=False)
