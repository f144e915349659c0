"""Atomic writes (atomic.py)."""

import json

import pytest

from mara_bench.atomic import atomic_write_json


def test_atomic_write_leaves_no_partial_file(tmp_path):
    p = tmp_path / "x.json"
    atomic_write_json(p, {"a": 1})
    with pytest.raises(TypeError):
        atomic_write_json(p, {"a": object()})
    assert json.loads(p.read_text()) == {"a": 1}
    assert sorted(f.name for f in tmp_path.iterdir()) == ["x.json"]
