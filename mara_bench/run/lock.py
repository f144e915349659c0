"""One trainer per run folder: an exclusive lock held for the whole run.

The lock is the file ``<run>/.lock``, taken with :mod:`filelock` (an OS lock, ``flock`` on Linux): the kernel
drops it when its process ends in any way, kill -9 included, so a lock left by a dead process is simply free again
and the next run takes it over (and says so). Who holds it is written to ``<run>/.lock_holder.json`` (pid, host,
start time, command) so that a second process can name the holder: it stops with a one-line
:class:`~mara_bench.errors.RunLocked` (exit 2) before writing anything. Both files are removed when the run ends
(the lock file is unlinked while still held; filelock refuses a lock taken on an unlinked file, so a peer racing
with the release retries on the new file), leaving the run folder with its documented files only.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

from ..errors import RunLocked


def lock_path(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / ".lock"


def holder_path(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / ".lock_holder.json"


def read_holder(run_dir: str | os.PathLike) -> dict | None:
    try:
        rec = json.loads(holder_path(run_dir).read_text())
        return rec if isinstance(rec, dict) else None
    except (OSError, ValueError):
        return None


def describe_holder(rec: dict | None) -> str:
    if not rec:
        return "another process (holder unknown)"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(rec.get("time", 0))))
    return f"PID {rec.get('pid')} on host {rec.get('host')} (since {since})"


class RunLock:
    """``acquire(run_dir)`` creates the folder if needed and locks it, or raises RunLocked naming the holder;
    ``release()`` drops it (safe to call when nothing is held)."""

    def __init__(self):
        self._lock = None
        self.run_dir: Path | None = None
        self.took_over: dict | None = None  # holder record of a dead process whose lock we took over

    @property
    def held(self) -> bool:
        return self._lock is not None

    def acquire(self, run_dir: str | os.PathLike) -> RunLock:
        from filelock import FileLock, Timeout

        run_dir = Path(run_dir)
        if self._lock is not None:
            if run_dir == self.run_dir:
                return self
            self.release()
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(lock_path(run_dir)), timeout=0, thread_local=False)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise RunLocked(f"run folder '{run_dir}' is in use: {describe_holder(read_holder(run_dir))} is training "
                            "into it; wait for it to finish (or stop it: the run resumes when re-run) instead of "
                            "starting a second trainer") from None
        self._lock, self.run_dir = lock, run_dir
        previous = read_holder(run_dir)
        if previous and (previous.get("pid") != os.getpid() or previous.get("host") != socket.gethostname()):
            self.took_over = previous  # its process ended without releasing (killed): the OS freed the lock
            print(f"note: taking over run folder '{run_dir}' from {describe_holder(previous)}, which stopped "
                  "without finishing", file=sys.stderr, flush=True)
        from ..atomic import atomic_write_json

        atomic_write_json(holder_path(run_dir), {"pid": os.getpid(), "host": socket.gethostname(),
                                                  "time": time.time(), "command": " ".join(sys.argv)})
        return self

    def release(self) -> None:
        if self._lock is None:
            return
        try:
            rec = read_holder(self.run_dir)
            if rec and rec.get("pid") == os.getpid() and rec.get("host") == socket.gethostname():
                holder_path(self.run_dir).unlink(missing_ok=True)
            lock_path(self.run_dir).unlink(missing_ok=True)  # still held: a racing peer's flock is refused
        except OSError:
            pass
        finally:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()
