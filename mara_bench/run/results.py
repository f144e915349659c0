"""Results layout: ``<output_dir>/<run_id>/`` with config.json, run_info.json, metrics.json and later files.

Every write is atomic. A run folder is created only when its run starts for real (after all validation), and
``metrics.json`` is written last, so a folder without it is an unfinished (resumable) run.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_json, read_json
from ..errors import UserError
from . import allocator
from .layout import CONFIG
from .layout import is_complete as is_complete  # re-exported

PACKAGES = ("mara_bench", "torch", "e3nn", "mace-torch", "nequip", "schnetpack", "torch-harmonics", "ase", "numpy")


def check_output_dir(output_dir: str | os.PathLike) -> Path:
    """Make sure ``output_dir`` exists (or can be created) and is writable, else a UserError naming it."""
    p = Path(output_dir)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create output directory '{p}': {e.strerror}; pass a writable --output-dir") from None
    if not os.access(p, os.W_OK | os.X_OK):
        raise UserError(f"output directory '{p}' is not writable; pass a writable --output-dir")
    return p


def run_dir(cfg) -> Path:
    return Path(cfg.output_dir) / cfg.run_id()


def git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if out.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def package_versions() -> dict[str, str | None]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def peak_memory_mb() -> float:
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
    except (ImportError, OSError):
        return float("nan")


def run_info(device: str, wall_time_s: float | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    import torch

    dev_name = platform.processor() or platform.machine()
    cuda_peak = None
    if str(device).startswith("cuda") and torch.cuda.is_available():
        dev_name = torch.cuda.get_device_name(torch.device(device))
        cuda_peak = torch.cuda.max_memory_allocated(torch.device(device)) / 2**20
    info = {
        "git_commit": git_commit(),
        "packages": package_versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "device": str(device),
        "device_name": dev_name,
        "threads": torch.get_num_threads(),
        "malloc": allocator.state(),  # the C library's allocator settings (run.allocator), None if never set
        "wall_time_s": wall_time_s,
        "peak_memory_mb": peak_memory_mb(),
        "peak_cuda_memory_mb": cuda_peak,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join(sys.argv),
    }
    if extra:
        info.update(extra)
    return info


def write_config(path: Path, cfg) -> None:
    d = cfg.resolved()
    d["run_id"] = cfg.run_id()
    d["config_hash"] = cfg.config_hash()
    hashes = cfg.identity().get("data_sha256")
    if hashes:  # user files: the content the run was made from (a changed file must not resume this run)
        d["data_sha256"] = hashes
    atomic_write_json(path / CONFIG, d)


def check_same_config(path: Path, cfg) -> None:
    """Refuse to resume a run folder whose saved config differs (same id but e.g. a hash collision or edit), or
    whose user data files changed since it was made (naming the files)."""
    f = path / CONFIG
    if not f.exists():
        return
    try:
        saved = read_json(f)
    except ValueError:
        raise UserError(f"run folder '{path}': config.json is not valid JSON (damaged); delete the folder or use "
                        "--force to restart the run") from None
    from ..config import RunConfig
    from ..data.hashes import changed_files

    saved_cfg = RunConfig.from_dict(saved)
    now = cfg.identity()
    before = saved_cfg.identity(data_sha256=saved.get("data_sha256") or {})
    if before != now:
        diff = sorted(k for k in set(now) | set(before) if before.get(k) != now.get(k))
        if diff == ["data_sha256"]:
            raise UserError(f"run folder '{path}' was made from other data: {'; '.join(changed_files(cfg, saved.get('data_sha256') or {}))} "
                            "changed since; its checkpoint and results do not belong to this file; restore the "
                            "file, or delete the folder (or use --force) to train on the new data")
        raise UserError(f"run folder '{path}' holds a run with a different config (keys: {', '.join(diff)}); "
                        "delete the folder or use another --output-dir")
