"""benchmarks/mara_floor.py (the floor of MARA's work on the message tensors) runs and reports every part."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "mara_floor.py"


def test_floor_script_reports_every_part_per_layer_and_in_total():
    p = subprocess.run([sys.executable, str(SCRIPT), "--edges", "16", "--dims", "64", "32", "--hidden", "8",
                        "--repeats", "1"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert out.startswith("allocator: ") and "D=64 " in out and "D=32 " in out and "all layers:" in out
    total = out.split("all layers:")[1]
    for part in ("W_h forward [E, D] x [D, C]", "W_h backward [E, C] x [C, D], into a buffer", "gating m + a*m"):
        assert out.count(part) == 3 and part in total, part  # once per layer and once in the total
    for line in total.strip().splitlines():
        assert float(line.rsplit(None, 2)[-2]) >= 0.0  # "<part>  <ms> ms"
