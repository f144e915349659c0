"""Where data live: manifests (``datasets/<family>.json``), the offline data directory and the download cache.

Resolution of a dataset file (relative path like ``rmd17/rmd17_aspirin_train_01.npz``, the layout of
``shared/datasets``): the explicit ``data_dir`` argument, else ``$MARA_BENCH_DATA``; then the download cache
``<cache>/data``. The cache is ``$MARA_BENCH_CACHE`` if set, else ``$XDG_CACHE_HOME/mara_bench``, else
``~/.cache/mara_bench`` — never inside the installed package or its source tree. Graph caches live in
``<cache>/graphs``.
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

from ..errors import UserError

REPO_ROOT = Path(__file__).resolve().parents[2]
MANIFEST_DIR = REPO_ROOT / "datasets"
DOWNLOAD_ENV = "MARA_BENCH_DOWNLOAD"


def cache_dir() -> Path:
    env = os.environ.get("MARA_BENCH_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg and Path(xdg).expanduser().is_absolute() else Path.home() / ".cache"
    return base / "mara_bench"


def download_dir() -> Path:
    """Downloaded dataset files, laid out like shared/datasets."""
    return cache_dir() / "data"


def data_dir_from(data_dir=None) -> Path | None:
    """The offline data directory: the argument, else $MARA_BENCH_DATA, else None."""
    d = data_dir if data_dir not in (None, "") else os.environ.get("MARA_BENCH_DATA") or None
    if d is None:
        return None
    d = Path(d).expanduser()
    if not d.is_dir():
        raise UserError(f"data directory not found: {d}; pass an existing folder laid out like shared/datasets "
                        "(--data-dir or MARA_BENCH_DATA)")
    return d


def search_dirs(data_dir=None) -> list[Path]:
    dirs = []
    d = data_dir_from(data_dir)
    if d is not None:
        dirs.append(d)
    dirs.append(download_dir())
    return dirs


def find_file(relpath: str, data_dir=None) -> Path | None:
    """First existing copy of ``relpath`` in the data dir or the download cache, else None."""
    for d in search_dirs(data_dir):
        p = d / relpath
        if p.is_file():
            return p
    return None


def where_is(relpath: str, data_dir=None) -> str:
    """'data dir', 'cache' or 'missing' (for listings)."""
    dirs = search_dirs(data_dir)
    for k, d in enumerate(dirs):
        if (d / relpath).is_file():
            return "cache" if k == len(dirs) - 1 else "data dir"
    return "missing"


def download_allowed() -> bool:
    return os.environ.get(DOWNLOAD_ENV, "").strip().lower() in ("1", "true", "yes", "on")


@cache
def load_manifest(family: str) -> dict[str, Any]:
    path = MANIFEST_DIR / f"{family}.json"
    if not path.is_file():
        raise UserError(f"dataset manifest missing: {path}; reinstall mara_bench from a full checkout")
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)
