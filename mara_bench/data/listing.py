"""``mara_bench list datasets``: every dataset with frames, elements, units and availability.

Fast: reads only the manifests and stats files (no dataset is loaded).
"""

from __future__ import annotations

from ..errors import UserError


def dataset_lines(data_dir=None) -> list[str]:
    from ..registry import dataset_entries
    from .locate import data_dir_from, download_allowed, download_dir

    try:
        d = data_dir_from(data_dir)
    except UserError as exc:
        return [f"Datasets: {exc}"]
    lines = [f"Datasets (entry-point group mara_bench.datasets; data dir: {d or 'not set (MARA_BENCH_DATA)'}; "
             f"download cache: {download_dir()}; auto-download {'on' if download_allowed() else 'off'}):",
             "  units inside mara_bench: eV, Å, eV/Å (converted when read); "
             "user files: a path to .xyz/.extxyz/.npz, options '?energy_key=..&forces_key=..&units=..'"]
    for name, entry in dataset_entries().items():
        try:
            fam = entry.load()()
            listing = getattr(fam, "listing", None)
            block = listing(data_dir) if listing else [f"{name}: (plugin family; no listing)"]
        except Exception as exc:  # a broken plugin must not break 'list'
            block = [f"{name}: (failed to load: {type(exc).__name__}: {exc})"]
        if not entry.builtin:
            block[0] += f"  [plugin from '{entry.dist}']"
        lines += ["  " + block[0]] + ["  " + b for b in block[1:]]
    return lines
