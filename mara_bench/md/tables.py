"""MD stability in reports: tables (pandas) and figures from the ``<run>/md/md.json`` files of run folders.

* :func:`replica_frame` — one row per MD replica (run, variant, seed, ensemble, temperature, survival, drift, W1,
  rotation jump): written by ``report`` / ``compare`` as ``md_stability.csv``.
* :func:`stability_table` — pooled per backbone × variant × ensemble × temperature × protocol (seeds and
  replicas together): the "MD stability" table of report.md / report.html / compare.md.
* :func:`survival_png` — fraction of replicas still stable vs time, one panel per temperature, one line per
  variant (replicas of all seeds pooled); :func:`nve_energy_png` — E_tot − E_tot(0) per atom for NVE replicas.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..analysis.plots import png_bytes, pyplot
from ..config import MARA_VARIANTS
from ..run import layout as rf

GROUP_KEYS = ("backbone", "mara", "ensemble", "temperature_k", "duration_ps", "timestep_fs")
VARIANT_ORDER = {v: k for k, v in enumerate(MARA_VARIANTS)}


def _run_meta(run_dir: Path) -> dict[str, Any]:
    from ..atomic import read_json

    for name in (rf.METRICS, rf.CONFIG):
        f = run_dir / name
        if f.is_file():
            try:
                m = read_json(f)
            except (OSError, ValueError):
                continue
            return {"run_id": m.get("run_id", run_dir.name), "backbone": m.get("backbone", "?"),
                    "mara": m.get("mara", "?"), "seed": m.get("seed"), "dataset": m.get("dataset")}
    return {"run_id": run_dir.name, "backbone": run_dir.name, "mara": "?", "seed": None, "dataset": None}


def _md_docs(run_dirs) -> list[tuple[Path, dict]]:
    from ..atomic import read_json

    out = []
    for d in map(Path, run_dirs):
        f = rf.md_json(d)
        if f.is_file():
            try:
                out.append((d, read_json(f)))
            except (OSError, ValueError):
                continue  # a damaged md.json is skipped; its run still appears in the accuracy tables
    return out


def replica_frame(run_dirs):
    """One row per replica of every ensemble section of every run's md.json (empty frame when none)."""
    import pandas as pd

    rows = []
    for d, doc in _md_docs(run_dirs):
        meta = _run_meta(d)
        for ens, sec in doc.items():
            st = sec.get("settings", {})
            dt = float(st.get("timestep_fs", math.nan))
            for r in sec.get("replicas", []):
                rot = r.get("rotation") or {}
                rows.append({**meta, "group": f"{meta['backbone']}/{meta['mara']}", "ensemble": ens,
                             "temperature_k": float(r["temperature"]), "replica": r.get("replica"),
                             "start_frame": r.get("start_frame"), "timestep_fs": dt,
                             "steps_requested": r.get("steps_requested", st.get("steps")),
                             "duration_ps": round(float(r.get("steps_requested", st.get("steps", 0))) * dt / 1000, 6),
                             "dtype": st.get("dtype"), "steps_completed": r.get("steps_completed"),
                             "time_ps": r.get("time_ps"), "failed": bool(r.get("failed")),
                             "failure_reason": r.get("failure_reason"),
                             "mean_temperature_k": r.get("mean_temperature_k"),
                             "drift_mev_atom_ps": r.get("drift_mev_atom_ps"),
                             "drift_over_ekin_std": r.get("drift_over_ekin_std"),
                             "etot_std_over_ekin_std": r.get("etot_std_over_ekin_std"),
                             "distance_w1_a": r.get("distance_w1_a"),
                             "rotation_jump_mev_atom": rot.get("energy_jump_mev_atom"),
                             "steps_per_s": r.get("steps_per_s"), "path": str(d)})
    return pd.DataFrame(rows)


def _order(df):
    if df.empty:
        return df
    key = df["mara"].map(lambda v: VARIANT_ORDER.get(v, 9))
    ens = df["ensemble"].map(lambda e: {"nvt": 0, "nve": 1}.get(e, 2))
    return (df.assign(_k=key, _e=ens).sort_values(["backbone", "_e", "temperature_k", "_k"], kind="stable")
            .drop(columns=["_k", "_e"]))


def stability_table(rep):
    """Replicas pooled over seeds per backbone × variant × ensemble × temperature × (duration, time step)."""
    import pandas as pd

    if rep is None or rep.empty:
        return pd.DataFrame()
    rows = []
    for key, g in rep.groupby(list(GROUP_KEYS), sort=False):
        row = dict(zip(GROUP_KEYS, key, strict=True))

        def med(col, g=g):
            v = pd.to_numeric(g[col], errors="coerce").dropna()
            return float(v.median()) if len(v) else math.nan

        jumps = pd.to_numeric(g["rotation_jump_mev_atom"], errors="coerce").abs().dropna()
        n, ok = len(g), int((~g["failed"]).sum())
        row.update({"seeds": int(g["run_id"].nunique()), "stable": f"{ok}/{n}", "survival_fraction": ok / n,
                    "mean_time_ps": float(pd.to_numeric(g["time_ps"]).mean()),
                    "median_drift_mev_atom_ps": med("drift_mev_atom_ps"),
                    "median_drift_over_ekin_std": med("drift_over_ekin_std"),
                    "median_distance_w1_a": med("distance_w1_a"),
                    "max_rotation_jump_mev_atom": float(jumps.max()) if len(jumps) else math.nan,
                    "failures": ", ".join(sorted({r.split(":")[0] for r in g["failure_reason"]
                                                  if isinstance(r, str) and r})) or "-"})
        rows.append(row)
    return _order(pd.DataFrame(rows)).reset_index(drop=True)


def stability_markdown(table) -> str:
    if table is None or table.empty:
        return "(no MD results)"
    lines = ["| backbone | variant | ensemble | T (K) | duration (ps) | seeds | stable replicas | mean time (ps) "
             "| median drift (meV/atom/ps) | median drift·t/σ(E_kin) | median W1 (Å) | max rotation jump (meV/atom) "
             "| failures |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def f(v, fmt):
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)

    for _, r in table.iterrows():
        lines.append(f"| {r['backbone']} | {r['mara']} | {r['ensemble']} | {r['temperature_k']:g} "
                     f"| {r['duration_ps']:g} (dt {r['timestep_fs']:g} fs) | {r['seeds']} | {r['stable']} "
                     f"| {r['mean_time_ps']:.3f} | {f(r['median_drift_mev_atom_ps'], '+.2g')} "
                     f"| {f(r['median_drift_over_ekin_std'], '.2g')} | {f(r['median_distance_w1_a'], '.4f')} "
                     f"| {f(r['max_rotation_jump_mev_atom'], '.3g')} | {r['failures']} |")
    return "\n".join(lines) + (
        "\n\nStable = no failure (bond of the starting graph stretched > 1.5×, pair < 0.5 Å, atoms flying apart, "
        "non-finite energy; see docs/md.md) within the duration; replicas of all seeds pooled. Drift: NVE only. "
        "Rotation jump: potential-energy change when the whole system is rotated mid-trajectory (0 for an "
        "invariant model).")


# ------------------------------------------------------------------------------------------------ figures
def _label(g: dict) -> str:
    return f"{g['backbone']}/{g['mara']} {g['ensemble']} ({g['duration_ps']:g} ps)"


def survival_png(rep) -> bytes | None:
    """Fraction of replicas stable vs time: a panel per temperature, a line per variant (seeds pooled)."""
    if rep is None or rep.empty:
        return None
    plt = pyplot()
    temps = sorted(rep["temperature_k"].unique())
    fig, axes = plt.subplots(1, len(temps), figsize=(4.6 * len(temps), 3.6), squeeze=False)
    for ax, T in zip(axes[0], temps, strict=True):
        sub = _order(rep[rep["temperature_k"] == T])
        groups = list(sub.groupby(["backbone", "mara", "ensemble", "duration_ps"], sort=False))
        for i, (key, g) in enumerate(groups):
            lab = dict(zip(("backbone", "mara", "ensemble", "duration_ps"), key, strict=True))
            fail_t = np.sort(g.loc[g["failed"], "time_ps"].to_numpy(dtype=float))
            t_end = float(lab["duration_ps"])
            ts = np.concatenate([[0.0], fail_t, [t_end]])
            alive = 1.0 - np.concatenate([[0], np.arange(1, len(fail_t) + 1), [len(fail_t)]]) / len(g)
            off = 0.012 * (i - (len(groups) - 1) / 2)  # equal curves would hide each other
            ax.step(ts, alive + off, where="post", lw=1.4, ls=("-", "--", ":", "-.")[i % 4],
                    label=f"{_label(lab)}, n={len(g)}")
        ax.set(title=f"{T:g} K", xlabel="time (ps)", ylabel="fraction of replicas stable", ylim=(-0.05, 1.08))
        ax.legend(fontsize=6, loc="lower left")
    fig.suptitle("MD stability: fraction of replicas stable (seeds pooled; lines offset slightly so equal "
                 "curves stay visible)", fontsize=9)
    fig.tight_layout()
    return png_bytes(fig, tight=False)


def nve_energy_png(run_dirs) -> bytes | None:
    """E_tot − E_tot(0) per atom vs time for every NVE replica; one colour per variant."""
    traces = []
    for d, doc in _md_docs(run_dirs):
        meta = _run_meta(d)
        for r in doc.get("nve", {}).get("replicas", []):
            traces.append((meta, r))
    if not traces:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    colours: dict[str, Any] = {}
    for meta, r in sorted(traces, key=lambda x: (x[0]["backbone"], VARIANT_ORDER.get(x[0]["mara"], 9))):
        tr = r["trace"]
        etot = np.asarray(tr["epot_ev"]) + np.asarray(tr["ekin_ev"])
        if not len(etot):
            continue
        name = f"{meta['backbone']}/{meta['mara']}" if meta["mara"] != "?" else meta["run_id"][:30]
        first = name not in colours
        colours.setdefault(name, f"C{len(colours) % 10}")
        ax.plot(tr["time_ps"], 1000.0 * (etot - etot[0]) / r["n_atoms"], lw=0.8, color=colours[name],
                label=name if first else None)
    ax.set(xlabel="time (ps)", ylabel="E_tot − E_tot(0) (meV/atom)", title="NVE energy conservation")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return png_bytes(fig, tight=False)


def md_figures(run_dirs, rep=None) -> dict[str, bytes]:
    rep = replica_frame(run_dirs) if rep is None else rep
    figs = {"md_survival": survival_png(rep), "md_nve_energy": nve_energy_png(run_dirs)}
    return {k: v for k, v in figs.items() if v is not None}


def write_md_figures(run_dirs, out_dir: str | os.PathLike) -> list[Path]:
    from ..atomic import atomic_write_bytes

    out = []
    for name, png in md_figures(run_dirs).items():
        out.append(Path(out_dir) / f"{name}.png")
        atomic_write_bytes(out[-1], png)
    return out
