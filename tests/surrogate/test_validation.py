import json

import numpy as np
import pytest

from surrogate.common.errors import InputError
from surrogate.imaging.model import PolynomialSurrogate
from surrogate.training.validation import _splits, cross_validate, pooled_metrics, sweep


def test_pooled_metrics_definitions():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    p = y + np.array([0.1, -0.1, 0.1, -0.1])
    m = pooled_metrics(y, p)
    assert m["one_minus_r2"] == pytest.approx(0.04 / 5.0)
    assert m["frms"] == pytest.approx(0.1 / np.sqrt(1.25))
    assert m["frms"] ** 2 == pytest.approx(m["one_minus_r2"])
    assert pooled_metrics(y, y.mean() * np.ones(4))["frms"] == pytest.approx(1.0)


@pytest.mark.parametrize("scheme", ["image", "block", "pixel"])
def test_folds_partition_the_targets(rng, scheme):
    shapes = [(20, 23), (18, 18), (25, 19), (20, 20)]
    splits = list(_splits(4, shapes, 1, scheme, 2, 3, None, 7, rng))
    assert len(splits) == 6
    for r in range(3):
        tests = [t for (rr, f, t) in splits if rr == r]
        if scheme == "image":
            assert sorted(np.concatenate(tests)) == [0, 1, 2, 3]
        else:
            for k in range(4):  # each pixel held out exactly once per repeat
                assert tests[0][k].shape == (shapes[k][0] - 2, shapes[k][1] - 2)
                assert (tests[0][k].astype(int) + tests[1][k].astype(int) == 1).all()
            if scheme == "block":  # 7x7 blocks are constant
                lab = tests[0][0]
                assert (lab[:7, :7] == lab[0, 0]).all()


def test_cross_validation_is_seeded_and_pools_repeats(pairs):
    conv, ms = pairs
    m = PolynomialSurrogate(size=3, degree=2)
    a = cross_validate(m, conv, ms, scheme="image", folds=2, repeats=2, seed=3)
    b = cross_validate(m, conv, ms, scheme="image", folds=2, repeats=2, seed=3)
    assert a.one_minus_r2 == b.one_minus_r2
    assert a.n_pixels == 2 * sum((c.shape[0] - 2) * (c.shape[1] - 2) for c in conv)
    assert len(a.per_fold) == 4 and a.one_minus_r2 < 0.05
    json.dumps(a.to_dict())


def test_image_cv_scores_each_image_and_singles_out_the_one_the_model_gets_wrong(pairs):
    conv, ms = pairs
    ms = [m.copy() for m in ms]
    # image 2 gets a contrast law the others do not share: a model fitted on the rest cannot predict it
    ms[2] = ms[2] + 0.5 * ms[2] ** 2 / ms[2].max()
    res = cross_validate(PolynomialSurrogate(size=3, degree=2), conv, ms, scheme="image", folds=2, repeats=3, seed=0)
    rows = res.per_image
    assert [r["image"] for r in rows] == list(range(len(conv)))
    assert all(r["held_out"] == 3 for r in rows)
    assert sum(r["n_pixels"] for r in rows) == res.n_pixels
    worst = max(rows, key=lambda r: r["one_minus_r2"])
    assert worst["image"] == 2
    clean = cross_validate(PolynomialSurrogate(size=3, degree=2), conv, pairs[1], scheme="image", folds=2,
                           repeats=3, seed=0).per_image
    assert worst["one_minus_r2"] > 10 * clean[2]["one_minus_r2"]
    # other schemes hold out pixels of every image at once: no per-image rows
    assert cross_validate(PolynomialSurrogate(size=1), conv, ms, scheme="block", repeats=1).per_image == []


def test_block_cv_error_exceeds_training_error(pairs):
    conv, ms = pairs
    m = PolynomialSurrogate(size=3, degree=2)
    cv = cross_validate(m, conv, ms, scheme="block", folds=2, repeats=1, seed=0)
    train = 1 - PolynomialSurrogate(size=3, degree=2).fit(conv, ms).score(conv, ms)
    assert cv.one_minus_r2 >= train


def test_leave_out(pairs):
    conv, ms = pairs
    res = cross_validate(PolynomialSurrogate(size=1, degree=2), conv, ms, leave_out=3, repeats=2, seed=1)
    assert [r["n_train"] for r in res.per_fold] == [1, 1]
    with pytest.raises(InputError, match="leave-out"):
        cross_validate(PolynomialSurrogate(size=1), conv, ms, leave_out=4)


def test_sweep_rows_sorted_by_terms(pairs):
    conv, ms = pairs
    rows = sweep(PolynomialSurrogate(), conv, ms, sizes=(1, 3), degrees=(1, 2), log_terms=(True,),
                 interactions=(False, True), repeats=1)
    terms = [r["n_terms"] for r in rows]
    assert terms == sorted(terms) and terms[0] == 3
    assert rows[-1]["one_minus_r2"] < rows[0]["one_minus_r2"]


def test_bad_cv_settings(pairs):
    conv, ms = pairs
    with pytest.raises(InputError, match="scheme"):
        cross_validate(PolynomialSurrogate(), conv, ms, scheme="nope")
    with pytest.raises(InputError, match="folds"):
        cross_validate(PolynomialSurrogate(size=1), conv, ms, folds=9)


def test_paper_number_on_published_pt_mo5_data(combs_dir):
    """Issue 2, must-show 1: the 378-term model, image-based 2-fold CV x2 (paper: 0.012, ~0.1)."""
    from refine.cli.main import main

    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["cv", "--convolution-dir", str(combs_dir / "convolution"), "--multislice-dir",
                   str(combs_dir / "multislice"), "--size", "5", "--degree", "2", "--log-term", "--interactions",
                   "--scheme", "image", "--folds", "2", "--repeats", "2", "--json"])
    assert rc == 0
    res = json.loads(buf.getvalue())
    assert res["n_terms"] == 378
    assert res["one_minus_r2"] <= 0.0115
    assert res["frms"] <= 0.11
    assert res["n_pixels"] > 2_000_000
    # each image held out once per repeat, labelled by its file number
    assert {r["held_out"] for r in res["per_image"]} == {2}
    assert all(r["label"].startswith("file ") for r in res["per_image"])
    assert sum(r["n_pixels"] for r in res["per_image"]) == res["n_pixels"]
