"""Timing primitives and timing results: clocks, summary statistics, peak memory, FLOPs, schema.

Files, the printed table and the plot are in :mod:`mara_bench.timing.tables`; the sweep itself (systems, models,
interleaved variants) is in :mod:`mara_bench.timing.sweep`; the CLI is
``python -m mara_bench time`` (:mod:`mara_bench.cli.time_cmd`). See docs/timing.md.

Clocks
------
* CPU: :func:`time.perf_counter` around the call.
* CUDA: ``torch.cuda.synchronize()`` before, a pair of CUDA events around the call, synchronise after and read
  ``start.elapsed_time(end)``; warm-up calls are never timed.

Peak memory
-----------
* CUDA: ``torch.cuda.reset_peak_memory_stats`` then ``torch.cuda.max_memory_allocated`` (MiB).
* CPU: peak resident set size of the process (``VmHWM``), reset before the measured call by writing ``5`` to
  ``/proc/self/clear_refs`` (Linux). Where the reset is impossible the value is the process-lifetime peak and
  ``peak_mem_kind`` says ``cpu_rss_lifetime``.
* ``peak_mem_delta_mb``: the peak minus what was in use just before the call (allocated CUDA memory, or RSS),
  i.e. what the step itself needs on top of models, data and the Python process. On the CPU freed memory is
  handed back first (``malloc_trim``), but memory the allocators keep can still be reused unseen, so the CPU
  delta is a lower bound.

FLOPs and the floor
-------------------
* ``flops``: floating-point operations of one call, counted by :class:`torch.utils.flop_counter.FlopCounterMode`
  on the same batch (one extra, untimed call; a training step's double backward included). That counter knows
  matrix products (mm, addmm, bmm, baddbmm, convolutions, attention kernels) and counts a multiply-add as 2;
  element-wise work (softmax, LayerNorm, activations) is not in it.
* :func:`gemm_probe`: the machine's dense float matmul rate (GFLOP/s, median of a few square products) measured
  in the timing process with the same threads; ``floor_ms = flops / rate`` is the time the counted arithmetic
  needs at that rate, so ``median_ms / floor_ms`` says how far a step is from its matmul floor.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

SCHEMA = "mara_bench.timing/1"
FS_PER_STEP = 0.5  # MD time step used for ns/day
MODES = ("inference", "train")

# ------------------------------------------------------------------------------------------------ clocks


def is_cuda(device) -> bool:
    return str(device).startswith("cuda")


def time_call_ms(fn: Callable[[], Any], device="cpu") -> float:
    """Wall time of one call of ``fn`` in milliseconds (CUDA events + synchronise on CUDA devices)."""
    if is_cuda(device):
        import torch

        dev = torch.device(device)
        torch.cuda.synchronize(dev)
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize(dev)
        return float(start.elapsed_time(end))
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def time_call_cpu_ms(fn: Callable[[], Any], device="cpu") -> tuple[float, float]:
    """(wall ms, process CPU ms) of one call. CPU time (all threads of this process) is far less sensitive to
    other processes competing for the cores than wall time; on CUDA the wall time comes from CUDA events."""
    c0 = time.process_time()
    wall = time_call_ms(fn, device)
    return wall, (time.process_time() - c0) * 1e3


def measure(fn: Callable[[], Any], repeats: int = 10, warmup: int = 2, device="cpu") -> list[float]:
    """Run ``fn`` ``warmup`` times untimed, then ``repeats`` timed calls; return the times in ms."""
    for _ in range(warmup):
        fn()
    if is_cuda(device):
        import torch

        torch.cuda.synchronize(torch.device(device))
    return [time_call_ms(fn, device) for _ in range(repeats)]


def gemm_probe(device="cpu", dtype: str = "float32", n: int = 512, repeats: int = 7) -> dict[str, Any]:
    """Dense matmul rate with the current threads: GFLOP/s of ``repeats`` n x n x n products (median and best).

    On the CPU the rate is per second of process CPU time (``gflops``; wall-clock in ``wall_gflops``), the same
    clock as ``cpu_median_ms``, so a loaded machine shifts both alike; on CUDA it is per second of GPU time."""
    import torch

    dt = getattr(torch, dtype)
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device=device, dtype=dt)
    b = torch.randn(n, n, generator=g).to(device=device, dtype=dt)
    for _ in range(2):
        torch.mm(a, b)
    pairs = [time_call_cpu_ms(lambda: torch.mm(a, b), device) for _ in range(repeats)]
    wall = [w for w, _ in pairs]
    clock = wall if is_cuda(device) else [max(c, 1e-6) for _, c in pairs]
    flop = 2.0 * n**3
    return {"n": n, "dtype": dtype, "repeats": repeats, "clock": "cuda_events" if is_cuda(device) else "process_cpu",
            "median_ms": quantile(clock, 0.5), "gflops": flop / (quantile(clock, 0.5) * 1e6),
            "best_gflops": flop / (min(clock) * 1e6), "wall_gflops": flop / (quantile(wall, 0.5) * 1e6),
            "threads": torch.get_num_threads()}


def quantile(values: list[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default method), without numpy."""
    xs = sorted(values)
    if not xs:
        return float("nan")
    pos = (len(xs) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summarize(ms: list[float]) -> dict[str, float]:
    """Median, quartiles, IQR, min, mean of a list of times (ms)."""
    q25, med, q75 = quantile(ms, 0.25), quantile(ms, 0.5), quantile(ms, 0.75)
    return {"median_ms": med, "q25_ms": q25, "q75_ms": q75, "iqr_ms": q75 - q25,
            "min_ms": min(ms) if ms else float("nan"), "mean_ms": sum(ms) / len(ms) if ms else float("nan"),
            "n": len(ms)}


def throughput(median_ms: float, n_atoms: int) -> dict[str, float]:
    """atoms·steps/s and ns/day (one step per call, ``FS_PER_STEP`` fs per MD step)."""
    steps_per_s = 1e3 / median_ms if median_ms > 0 else float("nan")
    return {"atoms_steps_per_s": n_atoms * steps_per_s, "ns_per_day": steps_per_s * FS_PER_STEP * 86400 / 1e6}


# ------------------------------------------------------------------------------------------------ memory


def _proc_status_mb(key: str) -> float | None:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024.0  # kB -> MiB
    except OSError:
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset the process's peak RSS (VmHWM) on Linux; False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    v = _proc_status_mb("VmHWM")
    if v is not None:
        return v
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mb() -> float | None:
    return _proc_status_mb("VmRSS")


def release_memory(device="cpu") -> None:
    """Collect garbage and hand freed memory back (CUDA cache; glibc ``malloc_trim``) before a memory reading."""
    import gc

    gc.collect()
    if is_cuda(device):
        import torch

        torch.cuda.empty_cache()
        return
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def peak_memory_of(fn: Callable[[], Any], device="cpu") -> tuple[float, float | None, str]:
    """Run ``fn`` once; return (peak MiB during the call, peak minus the memory in use before it, kind)."""
    if is_cuda(device):
        import torch

        dev = torch.device(device)
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        before = torch.cuda.memory_allocated(dev)
        fn()
        torch.cuda.synchronize(dev)
        peak = torch.cuda.max_memory_allocated(dev)
        return peak / 2**20, (peak - before) / 2**20, "cuda_max_allocated"
    ok = reset_peak_rss()
    before = current_rss_mb()
    fn()
    peak = peak_rss_mb()
    delta = peak - before if ok and before is not None else None
    return peak, delta, "cpu_rss_peak" if ok else "cpu_rss_lifetime"


def is_oom(exc: BaseException) -> bool:
    """True for out-of-memory errors (CUDA OOM, CPU allocator failures, MemoryError)."""
    import torch

    if isinstance(exc, (MemoryError, torch.cuda.OutOfMemoryError)):  # the class exists without CUDA too
        return True
    msg = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in msg or "can't allocate memory" in msg
                                              or "not enough memory" in msg)


# ------------------------------------------------------------------------------------------------ schema

_NUM = (int, float)
_OPT_NUM = (int, float, type(None))
_OPT_STR = (str, type(None))
TOP_KEYS: dict[str, tuple] = {"schema": (str,), "created": (str,), "command": (str,), "settings": (dict,),
                              "environment": (dict,), "rows": (list,)}
ROW_KEYS: dict[str, tuple] = {
    "backbone": (str,), "preset": (str,), "variant": (str,), "mode": (str,), "device": (str,), "dtype": (str,),
    "compiled": (bool,), "size_requested": (int,), "n_atoms": (int,), "n_edges": (int,), "n_graphs": (int,),
    "status": (str,), "note": (str,), "repeats": (int,), "warmup": (int,), "threads": (int,),
    "median_ms": _OPT_NUM, "q25_ms": _OPT_NUM, "q75_ms": _OPT_NUM, "iqr_ms": _OPT_NUM, "min_ms": _OPT_NUM,
    "mean_ms": _OPT_NUM, "atoms_steps_per_s": _OPT_NUM, "ns_per_day": _OPT_NUM, "peak_mem_mb": _OPT_NUM, "peak_mem_delta_mb": _OPT_NUM,
    "peak_mem_kind": _OPT_STR, "overhead_vs_off": _OPT_NUM, "overhead_q25": _OPT_NUM, "overhead_q75": _OPT_NUM,
    "compile_s": _OPT_NUM, "cpu_median_ms": _OPT_NUM, "cpu_overhead_vs_off": _OPT_NUM, "times_ms": (list,),
    "cpu_times_ms": (list,),
}
# checked when present (results written before these columns existed stay valid)
OPTIONAL_ROW_KEYS: dict[str, tuple] = {
    "mara_impl": _OPT_STR, "flops": _OPT_NUM, "gflops_per_s": _OPT_NUM, "floor_ms": _OPT_NUM,
    "flops_vs_off": _OPT_NUM, "speedup_vs_reference": _OPT_NUM, "cpu_speedup_vs_reference": _OPT_NUM,
}
ROW_ORDER = list(ROW_KEYS)[:4] + ["mara_impl"] + list(ROW_KEYS)[4:] + [k for k in OPTIONAL_ROW_KEYS if k != "mara_impl"]


def validate_timing(obj: Any) -> list[str]:
    """Problems found in a timing-results object (empty list = valid). No external schema library needed."""
    errs: list[str] = []
    if not isinstance(obj, dict):
        return ["top level must be an object"]
    for k, types in TOP_KEYS.items():
        if k not in obj:
            errs.append(f"missing top-level key '{k}'")
        elif not isinstance(obj[k], types):
            errs.append(f"top-level key '{k}' has type {type(obj[k]).__name__}")
    if obj.get("schema") not in (None, SCHEMA) and isinstance(obj.get("schema"), str):
        errs.append(f"schema is '{obj['schema']}', expected '{SCHEMA}'")
    for i, row in enumerate(obj.get("rows") or []):
        if not isinstance(row, dict):
            errs.append(f"rows[{i}] is not an object")
            continue
        for k, types in ROW_KEYS.items():
            if k not in row:
                errs.append(f"rows[{i}] missing '{k}'")
            elif not isinstance(row[k], types) or (bool not in types and isinstance(row[k], bool)):
                errs.append(f"rows[{i}].{k} has type {type(row[k]).__name__}")
        for k, types in OPTIONAL_ROW_KEYS.items():
            if k in row and (not isinstance(row[k], types) or isinstance(row[k], bool)):
                errs.append(f"rows[{i}].{k} has type {type(row[k]).__name__}")
        if row.get("mode") not in MODES:
            errs.append(f"rows[{i}].mode must be one of {MODES}")
        if row.get("status") not in ("ok", "skipped"):
            errs.append(f"rows[{i}].status must be 'ok' or 'skipped'")
        if row.get("status") == "ok":
            if not isinstance(row.get("median_ms"), _NUM) or not row["median_ms"] > 0:
                errs.append(f"rows[{i}].median_ms must be > 0 for an ok row")
            t = row.get("times_ms")
            if isinstance(t, list) and (len(t) != row.get("repeats") or not all(isinstance(x, _NUM) for x in t)):
                errs.append(f"rows[{i}].times_ms must hold 'repeats' numbers")
    return errs


def check_timing(obj: Any) -> None:
    errs = validate_timing(obj)
    if errs:
        raise ValueError("invalid timing results: " + "; ".join(errs[:5]) + (" ..." if len(errs) > 5 else ""))
