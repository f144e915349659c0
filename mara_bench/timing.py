"""Timing primitives and timing results: clocks, summary statistics, peak memory, schema, files, table, plot.

The sweep itself (systems, models, interleaved variants) is in :mod:`mara_bench.timing_sweep`; the CLI is
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
"""

from __future__ import annotations

import csv
import io
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
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
    if isinstance(exc, MemoryError):
        return True
    try:
        import torch

        if isinstance(exc, torch.cuda.OutOfMemoryError):
            return True
    except (ImportError, AttributeError):
        pass
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
ROW_ORDER = list(ROW_KEYS)


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


# ------------------------------------------------------------------------------------------------ files


def rows_to_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=[k for k in ROW_ORDER if k not in ("times_ms", "cpu_times_ms")], extrasaction="ignore",
                       lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in w.fieldnames})
    return buf.getvalue()


def write_results(result: dict[str, Any], out_dir: str | os.PathLike, stamp: str) -> tuple[Path, Path]:
    """Validate, then write ``<out_dir>/<stamp>.json`` and ``.csv`` atomically."""
    from .atomic import atomic_write_json, atomic_write_text

    check_timing(result)
    out = Path(out_dir)
    j = atomic_write_json(out / f"{stamp}.json", result)
    c = atomic_write_text(out / f"{stamp}.csv", rows_to_csv(result["rows"]))
    return j, c


def _fmt(v, spec: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-".rjust(int(spec.split(".")[0] or 0))
    return format(v, spec)


def format_table(rows: list[dict[str, Any]]) -> str:
    """Plain-text table of timing rows (one line per size × mode × variant)."""
    head = (f"{'atoms':>6} {'edges':>7} {'mode':<9} {'variant':<8} {'median ms':>10} {'IQR ms':>8} "
            f"{'atoms*steps/s':>13} {'ns/day':>8} {'peak MiB':>9} {'+MiB':>7} {'x off':>6} {'cpu x off':>9}  note")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['n_atoms']:>6} {r['n_edges']:>7} {r['mode']:<9} {r['variant']:<8} {_fmt(r['median_ms'], '10.2f')} "
            f"{_fmt(r['iqr_ms'], '8.2f')} {_fmt(r['atoms_steps_per_s'], '13.0f')} {_fmt(r['ns_per_day'], '8.3f')} "
            f"{_fmt(r['peak_mem_mb'], '9.0f')} {_fmt(r.get('peak_mem_delta_mb'), '7.0f')} {_fmt(r['overhead_vs_off'], '6.3f')} "
            f"{_fmt(r.get('cpu_overhead_vs_off'), '9.3f')}  {r['note']}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ plot


def _load_rows(csv_or_df):
    import pandas as pd

    if isinstance(csv_or_df, pd.DataFrame):
        return csv_or_df
    p = Path(csv_or_df)
    if p.suffix == ".json":
        from .atomic import read_json

        return pd.DataFrame(read_json(p)["rows"])
    return pd.read_csv(p)


def plot_timing(csv_or_df, out_png: str | os.PathLike) -> Path:
    """Log–log plot of median ms/step vs atoms, one line per (backbone, variant), one panel per mode.

    ``csv_or_df``: a timing CSV/JSON path written by ``mara_bench time`` or a DataFrame of its rows.
    Error bars are the inter-quartile range. Skipped rows are left out. Returns the PNG path (atomic write).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .atomic import atomic_write_bytes

    df = _load_rows(csv_or_df)
    df = df[df["status"] == "ok"]
    modes = [m for m in MODES if m in set(df["mode"])] or list(MODES)
    fig, axes = plt.subplots(1, len(modes), figsize=(5.5 * len(modes), 4.2), squeeze=False)
    for ax, mode in zip(axes[0], modes, strict=True):
        sub = df[df["mode"] == mode]
        for (bb, var), g in sub.groupby(["backbone", "variant"], sort=True):
            g = g.sort_values("n_atoms")
            med = g["median_ms"].astype(float)
            yerr = [med - g["q25_ms"].astype(float), g["q75_ms"].astype(float) - med]
            ax.errorbar(g["n_atoms"], med, yerr=yerr, marker="o", capsize=3, label=f"{bb} / {var}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("atoms")
        ax.set_ylabel("ms per step (median, IQR bars)")
        ax.set_title("energy + forces" if mode == "inference" else "training step")
        ax.grid(True, which="both", alpha=0.3)
        if len(sub):
            ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    return atomic_write_bytes(out_png, buf.getvalue())
