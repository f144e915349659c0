"""Content hashes of the data a run reads, for its identity and for checking files against manifests.

* User files (paths given as ``dataset`` or ``test``) are part of a run's identity by their sha256: overwrite a
  file with other data and the run id changes, so old results are never reused for new data.
* Named datasets are pinned by their manifest's sha256 instead (verified on first use, see
  :func:`verify_manifest_file`); their run ids do not include a hash of the files.

Hashes are remembered per process by (path, size, mtime, inode), so a file is read once per process; manifest
checks also persist in a sidecar (``<cache>/verified/``) so that unchanged files are not re-hashed across runs.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ..errors import UserError

_CHUNK = 1 << 20
_MEMO: dict[tuple, str] = {}


def _stat_key(path: Path) -> tuple:
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 (hex) of a file's bytes, memoised per process by (path, size, mtime, inode)."""
    path = Path(path)
    key = _stat_key(path)
    if key not in _MEMO:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(_CHUNK), b""):
                h.update(block)
        _MEMO[key] = h.hexdigest()
    return _MEMO[key]


def user_files(cfg) -> dict[str, Path]:
    """{'dataset': path, 'test': path} for the user files a config reads (named datasets: none)."""
    from .userfile import looks_like_path, split_options

    out = {}
    if looks_like_path(str(cfg.dataset)):
        out["dataset"] = Path(split_options(str(cfg.dataset))[0]).expanduser()
    if cfg.test:
        out["test"] = Path(split_options(str(cfg.test))[0]).expanduser()
    return out


def data_hashes(cfg) -> dict[str, str]:
    """{'dataset'|'test': sha256} of the user files of ``cfg``; {} for a named dataset without --test."""
    out = {}
    for role, path in user_files(cfg).items():
        if not path.is_file():
            what = "is a directory, not a file" if path.is_dir() else "not found"
            flag = "--dataset" if role == "dataset" else "--test"
            raise UserError(f"{flag} file '{path}' {what}; give an existing .xyz/.extxyz/.npz file")
        out[role] = file_sha256(path)
    return out


def changed_files(cfg, recorded: dict[str, str]) -> list[str]:
    """Descriptions of the user files of ``cfg`` whose sha256 differs from ``recorded`` (a run's config.json)."""
    now = data_hashes(cfg)
    paths = user_files(cfg)
    out = []
    for role in sorted(set(now) | set(recorded or {})):
        if (recorded or {}).get(role) != now.get(role):
            out.append(f"'{paths.get(role, role)}' (sha256 {str((recorded or {}).get(role))[:12]} then, "
                       f"{str(now.get(role))[:12]} now)")
    return out


# ---------------------------------------------------------------------------------------------- manifests
_VERIFIED: set[tuple] = set()


def _sidecar(path: Path) -> Path:
    from .locate import cache_dir

    key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:32]
    return cache_dir() / "verified" / f"{key}.json"


def verify_manifest_file(path: str | os.PathLike, expected: str | None, family: str, relpath: str) -> None:
    """Check a dataset file found in the data dir or the cache against its manifest sha256, once per process.

    The result is kept in a sidecar (path, size, mtime_ns, sha256) so that an unchanged file is not hashed again
    by later processes. A mismatch is a one-line UserError naming the file and what to do."""
    if not expected:
        return
    path = Path(path)
    key = _stat_key(path)
    if key in _VERIFIED:
        return
    side = _sidecar(path)
    rec = None
    try:
        rec = json.loads(side.read_text())
    except (OSError, ValueError):
        pass
    if not (isinstance(rec, dict) and rec.get("path") == key[0] and rec.get("size") == key[1]
            and rec.get("mtime_ns") == key[2] and rec.get("sha256")):
        rec = {"path": key[0], "size": key[1], "mtime_ns": key[2], "sha256": file_sha256(path)}
        try:
            from ..atomic import atomic_write_json

            atomic_write_json(side, rec)
        except OSError:  # a read-only or full cache only costs a re-hash next time
            pass
    if rec["sha256"] != expected.lower():
        raise UserError(f"{path}: sha256 {rec['sha256'][:16]}… does not match the {family} manifest's "
                        f"{expected[:16]}… for {relpath}: this is not the file the dataset names (wrong or damaged "
                        "file); delete it and download it again, or restore the original")
    _VERIFIED.add(key)
