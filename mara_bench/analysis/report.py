"""Reports: summary.csv (pandas), report.md and a self-contained report.html (figures embedded as base64 PNG).

Input: run folders, or folders that contain run folders (searched up to three levels deep). Figures: per-atom
force-error CDFs on a log axis (variants overlaid), parity plots, tail bars (P99, CVaR-1 %, max), MARA gate
histograms vs edge length, equivariance errors. A compare table (from :mod:`mara_bench.analysis.compare`) is included
when given. Runs with MD results (``<run>/md/md.json``, from ``mara_bench md`` or ``compare --md``) add an "MD
stability" table, ``md_stability.csv`` (one row per replica) and survival / NVE-energy figures
(:mod:`mara_bench.md.tables`).
"""

from __future__ import annotations

import base64
import html
import math
import os
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_bytes, atomic_write_text
from ..errors import UserError
from ..run.layout import RunData, _read_metrics, find_runs, load_runs  # noqa: F401  (re-exported)

SUMMARY_METRICS = ("energy_mae_mev", "energy_rmse_mev", "energy_mae_mev_per_atom", "force_mae_mev_A",
                   "force_rmse_mev_A", "force_err_mean_mev_A", "force_err_p50_mev_A", "force_err_p90_mev_A",
                   "force_err_p95_mev_A", "force_err_p99_mev_A", "force_err_p99_9_mev_A", "force_err_max_mev_A",
                   "force_err_cvar1_mev_A", "zero_force_mae_mev_A")
SHOWN = ("group", "seed", "test_set", "energy_mae_mev", "force_mae_mev_A", "force_rmse_mev_A",
         "force_err_p99_mev_A", "force_err_max_mev_A", "force_err_cvar1_mev_A", "events_5x_atom_fraction",
         "equiv_forces_max_abs_eV_A")


def summary_frame(runs: list[RunData]):
    import pandas as pd

    rows = []
    for r in runs:
        m = r.metrics
        sym = m.get("symmetry") or {}
        for name, t in m.get("test_sets", {}).items():
            row = {"run_id": m.get("run_id"), "backbone": m.get("backbone"), "mara": m.get("mara"),
                   "group": r.group, "dataset": m.get("dataset"), "split": m.get("split"), "preset": m.get("preset"),
                   "seed": m.get("seed"), "test_set": name, "n_structures": t.get("n_structures")}
            row.update({k: t.get(k, math.nan) for k in SUMMARY_METRICS})
            for key, ev in (t.get("events") or {}).items():
                row[f"events_{key}_atom_fraction"] = ev["atom_fraction"]
                row[f"events_{key}_structure_fraction"] = ev["structure_fraction"]
            for k, unit in (("energy_max_abs", "eV"), ("energy_mean_abs", "eV"), ("forces_max_abs", "eV_A"),
                            ("forces_mean_abs", "eV_A"), ("rotation_forces_max_abs", "eV_A"),
                            ("reflection_forces_max_abs", "eV_A")):
                row[f"equiv_{k}_{unit}"] = sym.get(k, math.nan)
            row["parameters"] = (m.get("parameters") or {}).get("total")
            row["mara_parameters"] = (m.get("parameters") or {}).get("mara")
            row["train_time_s"] = (m.get("train") or {}).get("train_time_s")
            row["epochs"] = (m.get("train") or {}).get("epochs")
            row["path"] = str(r.path)
            rows.append(row)
    return pd.DataFrame(rows)


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        return f"{v:.3g}" if abs(v) < 0.01 or abs(v) >= 1e5 else f"{v:.2f}"
    return str(v)


def markdown_table(df) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, row in df.iterrows():
        lines.append("| " + " | ".join(_fmt(row[c]) for c in cols) + " |")
    return "\n".join(lines)


def html_table(df) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(row[c]))}</td>" for c in df.columns) + "</tr>"
                   for _, row in df.iterrows())
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


CSS = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
       "table{border-collapse:collapse;font-size:12px;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 6px;"
       "text-align:right}th{background:#f3f3f3}img{max-width:100%;border:1px solid #eee;margin:.5em 0}"
       ".note{background:#f8f8e8;padding:.6em;border-left:4px solid #cc9}"
       "table.verdict td{text-align:left}table.verdict td:first-child{font-weight:bold}")


def figures(runs: list[RunData], summary) -> dict[str, bytes]:
    from . import plots as rp

    sets = sorted(set(summary["test_set"]), key=lambda s: (s != "test", s)) if len(summary) else []
    figs: dict[str, bytes | None] = {}
    for s in sets:
        figs[f"force_error_cdf_{s}"] = rp.force_error_cdf(runs, s)
    figs["parity_test"] = rp.parity(runs, "test")
    figs["tail_bars_test"] = rp.tail_bars(summary, "test")
    figs["tail_bars_test_rotated"] = rp.tail_bars(summary, "test_rotated")
    figs["gate_histograms"] = rp.gate_histograms(runs)
    figs["equivariance"] = rp.equivariance_bars(summary)
    figs["learning_curves"] = rp.learning_curves(runs)
    figs["pareto_test"] = rp.pareto(runs, "test")
    return {k: v for k, v in figs.items() if v is not None}


def md_to_html(md: str) -> str:
    """The small Markdown subset the verdict uses: '### ' headings, pipe tables, paragraphs."""
    out, table = [], []

    def flush():
        if table:
            rows = [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in table if not set(ln) <= set("|-: ")]
            head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
            body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
            out.append(f"<table class='verdict'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            table.clear()

    for ln in md.splitlines():
        if ln.startswith("|"):
            table.append(ln)
            continue
        flush()
        if ln.startswith("### "):
            out.append(f"<h3>{html.escape(ln[4:])}</h3>")
        elif ln.strip():
            out.append(f"<p class='note'>{html.escape(ln)}</p>")
    flush()
    return "".join(out)


def write_report(run_dirs: list[Path], out_dir: str | os.PathLike, compare_md: str | None = None,
                 compare_df=None, title: str = "mara_bench report", unfinished: list[Path] | None = None,
                 verdict_md: str | None = None, lead_figures: dict[str, bytes] | None = None) -> dict[str, Path]:
    """Write summary.csv, report.md, report.html and figures/*.png into ``out_dir``. A compare report opens with
    ``verdict_md`` and ``lead_figures`` (forest plots), then the long comparison table and the rule."""
    from ..run.results import check_output_dir

    out = check_output_dir(out_dir)
    runs = load_runs(run_dirs)
    if not runs:
        raise UserError("no finished runs (folders with metrics.json) found; run 'mara_bench run' or 'compare' first")
    summary = summary_frame(runs)
    atomic_write_text(out / "summary.csv", summary.to_csv(index=False))
    figs = figures(runs, summary)
    lead = dict(lead_figures or {})
    for name, png in {**lead, **figs}.items():
        atomic_write_bytes(out / "figures" / f"{name}.png", png)
    from ..md.tables import md_figures, replica_frame, stability_markdown, stability_table

    rep = replica_frame(run_dirs)
    md_st = stability_table(rep) if len(rep) else None
    md_table = stability_markdown(md_st) if md_st is not None else None
    if md_table:
        atomic_write_text(out / "md_stability.csv", rep.to_csv(index=False))
        md_figs = md_figures(run_dirs, rep)
        for name, png in md_figs.items():
            atomic_write_bytes(out / "figures" / f"{name}.png", png)
        figs.update(md_figs)
    shown = summary[[c for c in SHOWN if c in summary]]
    notes = [f"{len(runs)} finished runs; units: meV, meV/Å (equivariance: eV/Å, float64 copy of the model).",
             "Per-atom force error = |F_pred − F_ref| (norm); CVaR 1 % = mean of the largest 1 % of those; "
             "events_5x = fraction of atoms whose error exceeds 5 × the run's own component force MAE.",
             "test_rotated = the test set, every structure randomly rotated; the component force MAE is not "
             "rotation invariant, compare RMSE / percentiles / max for symmetry effects."]
    if unfinished:
        notes.append(f"{len(unfinished)} unfinished run folder(s) skipped: " + ", ".join(p.name for p in unfinished))
    md = [f"# {title}", ""]
    if verdict_md:
        md += ["## Verdict", "", verdict_md, ""] + [f"![{k}](figures/{k}.png)" for k in lead] + [""]
    md += [*[f"- {n}" for n in notes], ""]
    if compare_md:
        md += ["## Comparison", "", compare_md, ""]
    md += ["## Runs", "", markdown_table(shown), ""]
    if md_table:
        md += ["## MD stability", "", md_table, ""]
    md += ["## Figures", ""] + [f"![{k}](figures/{k}.png)" for k in figs]
    atomic_write_text(out / "report.md", "\n".join(md) + "\n")
    body = [f"<h1>{html.escape(title)}</h1>"]
    if verdict_md:
        body += ["<h2>Verdict</h2>", md_to_html(verdict_md)]
        body += [f"<h3>{html.escape(k)}</h3><img alt='{k}' src='data:image/png;base64,"
                 f"{base64.b64encode(png).decode()}'>" for k, png in lead.items()]
    body += ["<div class='note'><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul></div>"]
    if compare_df is not None:
        shown_cmp = compare_df[[c for c in compare_df.columns if c not in ("in_family", "pairs", "se_models",
                                                                           "se_shared_test")]]
        body += ["<h2>Comparison (all metrics)</h2>", html_table(shown_cmp)]
        if compare_md:
            rule = [ln for ln in compare_md.splitlines() if ln.startswith("Rule")]
            body += [f"<p class='note'>{html.escape(r)}</p>" for r in rule]
    body += ["<h2>Runs</h2>", html_table(shown)]
    if md_table:
        body += ["<h2>MD stability</h2>", html_table(md_st),
                 f"<p class='note'>{html.escape(md_table.split(chr(10) * 2)[-1])}</p>"]
    body += ["<h2>Figures</h2>"]
    for k, png in figs.items():
        body.append(f"<h3>{html.escape(k)}</h3><img alt='{k}' src='data:image/png;base64,"
                    f"{base64.b64encode(png).decode()}'>")
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body>{''.join(body)}</body></html>")
    atomic_write_text(out / "report.html", page)
    paths = {"summary": out / "summary.csv", "markdown": out / "report.md", "html": out / "report.html"}
    return {**paths, "md_stability": out / "md_stability.csv"} if md_table else paths
