"""Timing results out: CSV and JSON files (validated by :func:`mara_bench.timing.measure.check_timing`), the printed
table, the FLOP-floor summary and the time-vs-atoms plot. See docs/timing.md.
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Any

from .measure import MODES, ROW_ORDER, check_timing

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
    from ..atomic import atomic_write_json, atomic_write_text

    check_timing(result)
    out = Path(out_dir)
    j = atomic_write_json(out / f"{stamp}.json", result)
    c = atomic_write_text(out / f"{stamp}.csv", rows_to_csv(result["rows"]))
    return j, c


def _fmt(v, spec: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-".rjust(int(spec.split(".")[0] or 0))
    return format(v, spec)


def _variant_label(r: dict[str, Any]) -> str:
    impl = r.get("mara_impl")
    return f"{r['variant']}/{impl}" if impl and impl != "folded" else str(r["variant"])


def format_table(rows: list[dict[str, Any]]) -> str:
    """Plain-text table of timing rows (one line per size × mode × variant [/ implementation])."""
    head = (f"{'atoms':>6} {'edges':>7} {'mode':<9} {'variant':<15} {'median ms':>10} {'IQR ms':>8} "
            f"{'atoms*steps/s':>13} {'ns/day':>8} {'peak MiB':>9} {'+MiB':>7} {'x off':>6} {'cpu x off':>9} "
            f"{'MFLOP':>9} {'GFLOP/s':>7} {'flop x off':>10} {'x ref':>6}  note")
    lines = [head, "-" * len(head)]
    for r in rows:
        flops = r.get("flops")
        lines.append(
            f"{r['n_atoms']:>6} {r['n_edges']:>7} {r['mode']:<9} {_variant_label(r):<15} {_fmt(r['median_ms'], '10.2f')} "
            f"{_fmt(r['iqr_ms'], '8.2f')} {_fmt(r['atoms_steps_per_s'], '13.0f')} {_fmt(r['ns_per_day'], '8.3f')} "
            f"{_fmt(r['peak_mem_mb'], '9.0f')} {_fmt(r.get('peak_mem_delta_mb'), '7.0f')} {_fmt(r['overhead_vs_off'], '6.3f')} "
            f"{_fmt(r.get('cpu_overhead_vs_off'), '9.3f')} {_fmt(None if flops is None else flops / 1e6, '9.1f')} "
            f"{_fmt(r.get('gflops_per_s'), '7.2f')} {_fmt(r.get('flops_vs_off'), '10.3f')} "
            f"{_fmt(r.get('cpu_speedup_vs_reference'), '6.2f')}  {r['note']}")
    return "\n".join(lines)


def floor_summary(rows: list[dict[str, Any]], gemm_gflops: float | None) -> list[str]:
    """Per gated row: the time it adds over ``off`` per edge, against its added FLOPs at the GEMM rate."""
    if not gemm_gflops:
        return []
    off = {(r["n_atoms"], r["mode"]): r for r in rows if r["variant"] == "off" and r["status"] == "ok"}
    out = []
    for r in rows:
        base = off.get((r["n_atoms"], r["mode"]))
        if r["variant"] == "off" or base is None or r["status"] != "ok" or r.get("flops") is None:
            continue
        if base.get("flops") is None or not r.get("cpu_median_ms") or not base.get("cpu_median_ms"):
            continue
        added_ms = r["cpu_median_ms"] - base["cpu_median_ms"]
        added_flops = r["flops"] - base["flops"]
        floor_ms = added_flops / (gemm_gflops * 1e6)
        per_edge = 1e6 / max(1, r["n_edges"])  # ms -> ns per edge
        ratio = added_ms / floor_ms if floor_ms > 0 else float("nan")
        out.append(f"{r['n_atoms']} atoms {r['mode']:<9} {_variant_label(r):<15} adds {added_ms:8.2f} ms CPU "
                   f"({added_ms * per_edge:8.0f} ns/edge) for {added_flops / 1e6:9.2f} MFLOP "
                   f"({added_flops / max(1, r['n_edges']) / 1e3:7.1f} kFLOP/edge = {floor_ms * per_edge:6.0f} ns/edge "
                   f"at {gemm_gflops:.1f} GFLOP/s): {ratio:6.1f}x its FLOP floor")
    return out


# ------------------------------------------------------------------------------------------------ plot


def _load_rows(csv_or_df):
    import pandas as pd

    if isinstance(csv_or_df, pd.DataFrame):
        return csv_or_df
    p = Path(csv_or_df)
    if p.suffix == ".json":
        from ..atomic import read_json

        return pd.DataFrame(read_json(p)["rows"])
    return pd.read_csv(p)


def plot_timing(csv_or_df, out_png: str | os.PathLike) -> Path:
    """Log–log plot of median ms/step vs atoms, one line per (backbone, variant), one panel per mode.

    ``csv_or_df``: a timing CSV/JSON path written by ``mara_bench time`` or a DataFrame of its rows.
    Error bars are the inter-quartile range. Skipped rows are left out. Returns the PNG path (atomic write).
    """
    from ..analysis.plots import png_bytes, pyplot
    from ..atomic import atomic_write_bytes

    plt = pyplot()
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
    return atomic_write_bytes(out_png, png_bytes(fig))
