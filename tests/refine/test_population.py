"""Compositions and starting populations (refine.search.population)."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.cluster import Icosahedron
from ase.io import write
from hypothesis import given, settings
from hypothesis import strategies as st

from surrogate.common.errors import InputError
from refine.search.geometry import composition_of, default_min_distance, min_interatomic_distance
from refine.search.population import (
    SHAPES,
    composition_string,
    make_population,
    parse_composition,
    random_cluster,
    read_structures,
    shape_cluster,
    validate_composition,
)


def test_parse_composition_keeps_order_and_counts():
    comp = parse_composition("Pt557Mo29")
    assert comp == {"Pt": 557, "Mo": 29}
    assert list(comp) == ["Pt", "Mo"]
    assert parse_composition(" Pt309 ") == {"Pt": 309}


@pytest.mark.parametrize("text, fragment", [
    ("pt309", "cannot read"),
    ("Pt", "number of Pt"),
    ("Pt0", "positive"),
    ("Xx5", "unknown element"),
    ("Pt10Pt5", "twice"),
    ("Pt10-Mo3", "cannot read"),
    ("", "empty"),
    ("309", "cannot read"),
])
def test_parse_composition_errors(text, fragment):
    with pytest.raises(InputError, match=fragment) as info:
        parse_composition(text)
    assert isinstance(info.value, ValueError)
    assert "\n" not in str(info.value)


def test_composition_checked_against_model_elements():
    assert parse_composition("Pt309", allowed=("Pt", "Mo")) == {"Pt": 309}
    with pytest.raises(InputError, match="Au.*model"):
        parse_composition("Pt300Au9", allowed=("Pt",))
    # an empty list of model elements means "unknown": no restriction
    assert parse_composition("Au55", allowed=()) == {"Au": 55}


def test_validate_composition_mapping():
    assert validate_composition({"Pt": 13.0}) == {"Pt": 13}
    for bad in ({"Pt": 0}, {"Pt": -3}, {"Pt": 2.5}, {}, {"Qq": 3}):
        with pytest.raises(InputError):
            validate_composition(bad)


@settings(max_examples=30, deadline=None)
@given(st.dictionaries(st.sampled_from(["Pt", "Mo", "Au", "Ni", "Cu", "O"]), st.integers(1, 5000), min_size=1))
def test_composition_string_round_trip(comp):
    assert parse_composition(composition_string(comp)) == comp


@pytest.mark.parametrize("comp", ["Pt147", "Pt100Mo20", "Pt13"])
def test_random_cluster_exact_composition_min_distance_compact(comp, rng):
    want = parse_composition(comp)
    atoms = random_cluster(comp, rng)
    assert composition_of(atoms) == want
    d_min = default_min_distance(want)
    assert min_interatomic_distance(atoms.positions) >= d_min * (1 - 1e-6)
    assert np.allclose(atoms.positions.mean(axis=0), 0.0, atol=1e-9)
    # compact: radius of gyration within 1.35x that of a bulk-density sphere of the same size
    n = len(atoms)
    d = d_min / 0.75
    r_sphere = (3 * n * d ** 3 / np.sqrt(2) / (4 * np.pi)) ** (1 / 3)
    rg = np.sqrt(np.mean(np.sum(atoms.positions ** 2, axis=1)))
    assert rg < 1.35 * np.sqrt(3 / 5) * r_sphere


def test_random_cluster_is_seeded():
    a = random_cluster("Pt50", np.random.default_rng(7))
    b = random_cluster("Pt50", np.random.default_rng(7))
    c = random_cluster("Pt50", np.random.default_rng(8))
    assert np.array_equal(a.positions, b.positions)
    assert not np.allclose(a.positions, c.positions)


@pytest.mark.parametrize("shape", SHAPES)
def test_shape_cluster_exact_count_and_min_distance(shape, rng):
    atoms = shape_cluster("Pt90Mo10", shape, rng)
    assert composition_of(atoms) == {"Pt": 90, "Mo": 10}
    assert min_interatomic_distance(atoms.positions) >= default_min_distance({"Pt": 90, "Mo": 10}) * (1 - 1e-6)


def test_shape_cluster_magic_number_is_the_ideal_shape(rng):
    atoms = shape_cluster("Pt55", "icosahedron", rng)
    ideal = Icosahedron("Pt", 3, latticeconstant=3.92)
    r1 = np.sort(np.linalg.norm(atoms.positions, axis=1))
    r2 = np.sort(np.linalg.norm(ideal.positions - ideal.positions.mean(axis=0), axis=1))
    assert np.allclose(r1, r2, atol=1e-9)


def test_shape_cluster_trims_least_coordinated_atoms(rng):
    # 54 = icosahedron minus one vertex: the removed atom must have been a 6-fold vertex,
    # so all remaining atoms sit at the ideal radii
    atoms = shape_cluster("Pt54", "icosahedron", rng)
    ideal = Icosahedron("Pt", 3, latticeconstant=3.92)
    ideal_r = np.sort(np.linalg.norm(ideal.positions - ideal.positions.mean(axis=0), axis=1))
    r = np.sort(np.linalg.norm(atoms.positions - atoms.positions.mean(axis=0), axis=1))
    assert len(atoms) == 54
    # one outer-shell radius is missing, the rest agree (within the centroid shift)
    assert np.allclose(r[:42], ideal_r[:42], atol=0.2)


def test_unknown_shape(rng):
    with pytest.raises(InputError, match="shape"):
        shape_cluster("Pt55", "cube", rng)


def test_make_population_sizes_sources_and_seed(tmp_path):
    pop = make_population("Pt30Mo8", 6, np.random.default_rng(3), source="mixed")
    again = make_population("Pt30Mo8", 6, np.random.default_rng(3), source="mixed")
    assert len(pop) == 6
    for a, b in zip(pop, again):
        assert composition_of(a) == {"Pt": 30, "Mo": 8}
        assert np.array_equal(a.positions, b.positions) and np.array_equal(a.numbers, b.numbers)
    assert [a.info["origin"] for a in pop][:3] == ["icosahedron", "random", "decahedron"]
    # random orientation: two copies of the same shape differ in pose but not in shape
    shapes = make_population("Pt55", 2, np.random.default_rng(4), source="shapes", shapes=["icosahedron"])
    assert not np.allclose(shapes[0].positions, shapes[1].positions)
    r0, r1 = (np.sort(np.linalg.norm(s.positions, axis=1)) for s in shapes)
    assert np.allclose(r0, r1, atol=1e-9)


def test_population_from_file(tmp_path, rng):
    path = tmp_path / "start.xyz"
    write(path, [random_cluster("Pt20", rng), random_cluster("Pt20", rng)])
    pop = make_population("Pt20", 5, rng, source=str(path))
    assert len(pop) == 5
    assert all(composition_of(a) == {"Pt": 20} for a in pop)
    assert pop[0].info["origin"] == "file:start.xyz[0]" and pop[3].info["origin"] == "file:start.xyz[1]"
    with pytest.raises(InputError, match="composition"):
        make_population("Pt21", 2, rng, source=str(path))
    with pytest.raises(InputError, match="does not exist"):
        read_structures(tmp_path / "missing.xyz")


def test_population_size_checked(rng):
    with pytest.raises(InputError, match="population size"):
        make_population("Pt13", 0, rng)
    with pytest.raises(InputError, match="shape"):
        make_population("Pt13", 2, rng, source="shapes", shapes=["blob"])


def test_read_structures_drops_cell(tmp_path):
    atoms = Atoms("Pt2", positions=[[0, 0, 0], [2.7, 0, 0]], cell=[10, 10, 10], pbc=True)
    write(tmp_path / "a.extxyz", atoms)
    (out,) = read_structures(tmp_path / "a.extxyz", "Pt2")
    assert out.cell.rank == 0 and not out.pbc.any()


def test_image_cluster_follows_the_image(rng):
    from surrogate import ConvolutionParameters, ProbeGrid, convolution_image

    from refine.search.population import image_cluster

    truth = shape_cluster("Pt55", "icosahedron", rng)
    truth.positions += [3.0, -2.0, 0.0]  # off the origin: the start must land on the image
    grid = ProbeGrid.around(truth, pixel_size=0.2, margin=6.0)
    img = convolution_image(truth, grid, ConvolutionParameters(pixel_size=0.2, cross_section=None))
    pop = make_population("Pt55", 3, rng, source="image", image=img, grid=grid)
    for a in pop:
        assert a.info["origin"] == "image"
        assert composition_of(a) == {"Pt": 55}
        assert min_interatomic_distance(a.positions) >= default_min_distance({"Pt": 55}) * (1 - 1e-6)
        assert np.allclose(a.positions[:, :2].mean(axis=0), [3.0, -2.0], atol=1.0)
    with pytest.raises(InputError, match="image"):
        make_population("Pt55", 2, rng, source="image")
    with pytest.raises(InputError, match="above its background"):
        image_cluster("Pt55", rng, np.zeros(grid.shape), grid)
