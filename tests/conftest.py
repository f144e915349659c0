import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:  # the toy potentials module (tiny_backbone.py) imports as a top-level module
    sys.path.insert(0, str(TESTS))


def run_cli(*args: str, cwd=None, env=None, timeout=600) -> subprocess.CompletedProcess:
    """Run `python -m mara_bench ...` in a subprocess and capture its output."""
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "mara_bench", *args], cwd=cwd or REPO, env=e,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture
def data_dir() -> Path:
    d = os.environ.get("MARA_BENCH_DATA")
    if not d:
        pytest.skip("MARA_BENCH_DATA is not set: real-data test skipped (CI sets it to ../shared/datasets)")
    if not Path(d).is_dir():
        pytest.skip(f"MARA_BENCH_DATA={d} is not a directory")
    return Path(d)
