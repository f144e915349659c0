"""PaiNN backbone: the backbone test kit (all MARA variants) plus PaiNN-specific checks."""

from __future__ import annotations

from mara_bench.testing import BackboneTestKit


class TestPaiNNKit(BackboneTestKit):
    backbone = "painn"
