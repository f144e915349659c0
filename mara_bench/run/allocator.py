"""The C library's memory allocator, set up for tensors of many megabytes (``MARA_BENCH_MALLOC``).

PyTorch's CPU tensors come from the C library's ``malloc``. glibc serves every request above its mmap threshold
(which it raises by itself, but never beyond 32 MiB) with a fresh ``mmap`` and unmaps it again on ``free``. A
model whose per-edge tensors are that large therefore pays one page fault per 4 KiB page for every new tensor, in
every step: at MACE paper size (1,498 edges × 10,240 channels, 61 MB per [E, D] tensor) ~15,000 faults and 10–20 ms
of kernel time each. MARA's gated messages add a few such tensors, so this cost weighed on MARA's overhead more
than on the backbone itself.

:func:`configure` (called once by ``run``, ``time`` and ``md``) tells glibc to serve large requests from its heap
(``M_MMAP_MAX = 0``) and to keep up to 1 GiB of freed memory at the top of the heap (``M_TRIM_THRESHOLD``): a new
tensor then reuses pages that are already mapped. This is what the PyTorch CPU tuning guides get by preloading
jemalloc or tcmalloc, without a library to install. Measured with ``python -m mara_bench time --backbone mace
--preset paper`` (rMD17 aspirin × 5, one thread, docs/timing.md): an inference step of ``off`` ~20 % faster and the
time MARA adds about halved. The price is a higher resident high-water mark, because freed memory is kept: +0–10 %
for steps of one size, +15 % for training steps on batches of four sizes (2,665 against 2,326 MiB over 32 steps,
resident memory not growing from step to step; 0.83x the CPU time).

``MARA_BENCH_MALLOC``: ``tuned`` (the default) or ``system`` (leave the C library's defaults). Nothing is changed
when the C library is not glibc, when another allocator is preloaded (``LD_PRELOAD``), or when the user set glibc's
own variables (``MALLOC_MMAP_MAX_``, ``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TOP_PAD_``,
``GLIBC_TUNABLES`` with ``glibc.malloc``). :func:`configure` returns what applies, and ``time`` records it.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys

from ..errors import UserError

ENV = "MARA_BENCH_MALLOC"
CHOICES = ("tuned", "system")
TRIM_THRESHOLD = 1 << 30  # bytes of free memory at the top of the heap kept mapped

# mallopt parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_GLIBC_VARS = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_")
_OTHER_ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc")

_state: str | None = None


def requested() -> str:
    """``$MARA_BENCH_MALLOC`` (default ``tuned``); a :class:`UserError` naming the variable for any other value."""
    value = os.environ.get(ENV, "tuned").strip().lower() or "tuned"
    if value not in CHOICES:
        raise UserError(f"{ENV}='{os.environ[ENV]}' is not one of {', '.join(CHOICES)}; unset it (tuned, the "
                        "default) or set it to 'system' to keep the C library's allocator settings")
    return value


def _reason_to_leave() -> str | None:
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return "system (not glibc)"
    preload = os.environ.get("LD_PRELOAD", "")
    other = next((name for name in _OTHER_ALLOCATORS if name in preload), None)
    if other:
        return f"system ({other} preloaded)"
    if any(v in os.environ for v in _GLIBC_VARS) or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return "system (glibc malloc variables set in the environment)"
    return None


def configure() -> str:
    """Apply ``$MARA_BENCH_MALLOC`` to this process (once; later calls return the first answer). Returns a short
    description: ``tuned (glibc: ...)`` or ``system (why)``."""
    global _state
    choice = requested()  # checked on every call: a bad value is an error even after the first call
    if _state is not None:
        return _state
    if choice == "system":
        _state = f"system ({ENV}=system)"
        return _state
    reason = _reason_to_leave()
    if reason:
        _state = reason
        return _state
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    except (OSError, AttributeError):
        ok = False
    _state = (f"tuned (glibc: no mmap for large blocks, {TRIM_THRESHOLD >> 30} GiB of freed heap kept)" if ok
              else "system (mallopt failed)")
    return _state


def state() -> str | None:
    """What :func:`configure` applied in this process, or None before it was called (run_info records it)."""
    return _state
