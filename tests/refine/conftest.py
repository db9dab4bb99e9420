"""Fixtures of the refinement's tests."""

import pytest


@pytest.fixture(scope="session")
def model():
    """The shipped default model (tests that need another define their own ``model``)."""
    from surrogate import default_model

    return default_model()
