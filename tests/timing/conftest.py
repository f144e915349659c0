"""tests/timing: the test-only pair backbones are registered for every test here."""

import pytest
from pair_backbones import FailingBackbone, PairBackbone

from mara_bench.registry import BACKBONE_GROUP, register, unregister


@pytest.fixture(autouse=True)
def pair_backbones():
    register(BACKBONE_GROUP, "pairtest", PairBackbone)
    register(BACKBONE_GROUP, "pairfail", FailingBackbone)
    yield
    unregister(BACKBONE_GROUP, "pairtest")
    unregister(BACKBONE_GROUP, "pairfail")
