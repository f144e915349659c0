"""Helpers the reliability tests share: the tiny backbone registered with a private cache (autouse fixture
``tiny_env``, imported by each test module), LJ extxyz files, the in-process CLI and the one-line error check."""

from pathlib import Path

import pytest
import tiny_backbone

from mara_bench.cli import main

SMOKE = ["--backbone", "tiny", "--preset", "smoke", "--quiet"]


@pytest.fixture(autouse=True)
def tiny_env(monkeypatch, tmp_path):
    tiny_backbone.register()
    monkeypatch.setenv("MARA_BENCH_THREADS", "1")
    monkeypatch.setenv("MARA_BENCH_CACHE", str(tmp_path / "cache"))  # graph caches and manifest sidecars


def lj_file(path, n=24, seed=0, units_factor=1.0, edit=None):
    """LJ-labelled clusters as extxyz; ``edit(frames)`` may change the ASE Atoms before writing."""
    from ase.io import write

    frames = tiny_backbone.make_lj_frames(n, seed)
    for a in frames:
        a.info["energy"] *= units_factor
        a.arrays["forces"] = a.arrays["forces"] * units_factor
    if edit:
        edit(frames)
    write(str(path), frames, format="extxyz")
    return Path(path)


def cli(capsys, *args):
    try:
        rc = main([str(a) for a in args])
    except SystemExit as e:  # argparse errors
        rc = e.code
    out = capsys.readouterr()
    return rc, out.out, out.err


def one_line(rc, err, *needles):
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def nothing_written(out: Path):
    assert not out.exists() or not [p for p in out.iterdir() if not p.name.startswith(".")], list(out.iterdir())
