import itertools
from math import prod

import numpy as np
import pytest

from surrogate.common.errors import InputError
from surrogate.imaging.features import features, n_terms, term_names, term_powers, term_tuples


@pytest.mark.parametrize("s,d,lg,inter,expected", [
    (1, 1, False, False, 2),
    (1, 2, True, False, 5),
    (3, 2, False, False, 19),
    (3, 2, True, True, 66),
    (5, 1, True, False, 27),
    (5, 2, True, True, 378),
    (5, 3, True, True, 3654),
])
def test_paper_term_counts(s, d, lg, inter, expected):
    assert n_terms(s, d, lg, inter) == expected
    assert len(term_tuples(s, d, lg, inter)) == expected


def reference_features(img, s, d, lg, inter, floor):
    """Slow reference straight from Eq. 5-8: enumerate exponent vectors with itertools."""
    h = (s - 1) // 2
    p = s * s
    nv = p + int(lg)
    monomials = [()]
    for k in range(1, d + 1):
        for combo in itertools.combinations_with_replacement(range(nv), k):
            if inter or len(set(combo)) == 1:
                monomials.append(combo)
    rows = []
    for m in range(h, img.shape[0] - h):
        for n in range(h, img.shape[1] - h):
            x = [img[i, j] for i in range(m - h, m + h + 1) for j in range(n - h, n + h + 1)]
            if lg:
                x.append(np.log(max(img[m, n], floor)))
            rows.append([prod(x[v] for v in mono) for mono in monomials])
    return np.array(rows), monomials


@pytest.mark.parametrize("s,d,lg,inter", [(1, 1, False, False), (3, 2, True, True), (3, 3, False, True),
                                          (5, 2, True, False), (1, 3, True, True)])
def test_features_match_slow_reference(rng, s, d, lg, inter):
    img = rng.uniform(-0.1, 1.0, size=(9, 8))
    fast = features(img, s, d, lg, inter, log_floor=0.05)
    slow, monomials = reference_features(img, s, d, lg, inter, 0.05)
    # same set of terms; compare after matching columns by their index tuples
    tuples = term_tuples(s, d, lg, inter)
    assert sorted(tuples) == sorted(monomials)
    order = [tuples.index(m) for m in monomials]
    np.testing.assert_allclose(fast[:, order], slow, rtol=1e-12, atol=1e-14)


def test_log_floor_applies_to_nonpositive_pixels():
    img = np.zeros((3, 3))
    img[1, 1] = -1e-19
    f = features(img, 1, 1, True, False, log_floor=1e-6)
    assert f[4, -1] == pytest.approx(np.log(1e-6))


def test_powers_and_names_agree():
    P = term_powers(3, 2, True, True)
    names = term_names(3, 2, True, True)
    assert P.shape == (66, 10) and P.sum(axis=1).max() == 2
    assert names[0] == "1" and "x4*log" in names and "log^2" in names


@pytest.mark.parametrize("s", [0, 2, 4, -1, 3.0])
def test_even_or_bad_size_is_refused(s):
    with pytest.raises(InputError, match="odd"):
        n_terms(s, 2)


def test_nan_image_is_refused():
    img = np.ones((5, 5))
    img[2, 2] = np.nan
    with pytest.raises(InputError, match="NaN"):
        features(img, 3, 1)
