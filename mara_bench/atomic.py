"""Atomic file writes (temp file in the same folder + os.replace): a reader never sees a half-written file."""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


def disk_full_error(path: str | os.PathLike, exc: OSError):
    """The one-line :class:`~mara_bench.errors.DiskFull` for a write to ``path`` that failed with ENOSPC/EDQUOT."""
    from .errors import DiskFull, human_bytes

    path = Path(path)
    try:
        free = human_bytes(shutil.disk_usage(path.parent if path.parent.exists() else ".").free) + " free"
    except OSError:
        free = "free space unknown"
    why = "disk quota exceeded" if exc.errno != errno.ENOSPC else "no space left on device"
    return DiskFull(f"{why} while writing '{path}' ({free} there); free some space or choose another folder, "
                    "then re-run (the file was not changed; an interrupted run resumes from its last checkpoint)")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        if exc.errno in _FULL:
            raise disk_full_error(path, exc) from None
        raise
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno in _FULL:  # one line naming the file and the free space
            raise disk_full_error(path, exc) from None
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def _default(o: Any):
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def nonfinite_to_null(obj: Any, where: str = "") -> tuple[Any, dict[str, str]]:
    """A copy of ``obj`` with every NaN/inf float replaced by None, and {dotted path: 'nan'|'inf'|'-inf'} of them."""
    found: dict[str, str] = {}

    def walk(o, at):
        if isinstance(o, dict):
            return {k: walk(v, f"{at}.{k}" if at else str(k)) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [walk(v, f"{at}[{i}]") for i, v in enumerate(o)]
        if hasattr(o, "tolist") and not isinstance(o, (str, bytes)):
            return walk(o.tolist(), at)
        if isinstance(o, float) and not math.isfinite(o):
            found[at] = str(o)
            return None
        return o

    return walk(obj, where), found


def atomic_write_json(path: str | os.PathLike, obj: Any, strict: bool = False) -> Path:
    """Write ``obj`` as JSON. ``strict``: the file is strict JSON (RFC 8259): NaN/inf become null (callers that
    need to say why record the paths from :func:`nonfinite_to_null` themselves)."""
    if strict:
        obj, _ = nonfinite_to_null(obj)
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_default,
                                              allow_nan=not strict) + "\n")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """torch.save through a temp file + rename (checkpoints)."""
    import io

    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)
