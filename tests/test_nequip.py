"""NequIP backbone: the backbone test kit (all MARA variants) plus NequIP-specific checks."""

from __future__ import annotations

import pytest

pytest.importorskip("nequip")

from mara_bench.testing import BackboneTestKit  # noqa: E402


class TestNequIPKit(BackboneTestKit):
    backbone = "nequip"
