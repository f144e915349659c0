"""The plugin's own test suite: mara_bench's backbone test kit, for every MARA variant."""

from mara_bench.testing import BackboneTestKit


class TestMiniSchNet(BackboneTestKit):
    backbone = "minischnet"  # the name registered in this package's pyproject (entry point)
