"""Paired comparisons of MARA variants: run (or reuse) backbone × variant × seed, then tabulate.

For every backbone, test set, metric and variant: mean ± std over seeds, the change relative to ``off`` and
a paired bootstrap 95 % interval of the difference (see :mod:`mara_bench.stats` for the rule). Writes
compare.csv and compare.md and a full report (report.html) into the compare folder. With ``--md``
(:func:`run_md_all`) every model also runs MD and compare.md / the report gain an "MD stability" table.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UserError
from .stats import BOOTSTRAP_METRICS, StructureErrors, paired_bootstrap

RULE = ("Rule: Δ = mean over seeds of (variant − off) on the same test structures; 95 % interval from a paired "
        "bootstrap over test structures (same resample for all variants and seeds). A difference is significant "
        "only if its interval excludes zero. ± is the standard deviation over seeds.")


def plan(base, backbones: list[str], variants: list[str], seeds: list[int]) -> list:
    """All RunConfigs of the comparison, validated (names, presets, overrides, dataset) before anything runs."""
    from .config import normalize_mara
    from .pipeline import prepare

    variants = list(dict.fromkeys(normalize_mara(v) for v in variants))
    if not seeds:
        raise UserError("--seeds must be >= 1")
    cfgs = [dataclasses.replace(base, backbone=b, mara=v, seed=s) for b in backbones for v in variants for s in seeds]
    for c in cfgs:
        c.validate()
    for b in backbones:  # resolves backbone, preset, overrides, dataset, output dir; writes nothing
        prepare(next(c for c in cfgs if c.backbone == b))
    return cfgs


def run_all(cfgs: list, progress: bool = True, force: bool = False) -> list[Path]:
    from .pipeline import run_config

    out = []
    for k, c in enumerate(cfgs):
        print(f"[{k + 1}/{len(cfgs)}] {c.run_id()}")
        out.append(run_config(c, force=force, progress=progress))
    return out


def run_md_all(run_dirs: list[Path], settings: list, progress: bool = True, force: bool = False) -> None:
    """MD (``compare --md``) for every run and every :class:`~mara_bench.md_run.MDSettings`; a run whose md.json
    already holds that ensemble with the same settings is reused unless ``force``."""
    from .md_run import finished_section, md_for_run, summary_lines

    for k, d in enumerate(run_dirs):
        for s in settings:
            tag = f"[md {k + 1}/{len(run_dirs)}] {Path(d).name} {s.ensemble}"
            if not force and finished_section(d, s) is not None:
                print(f"{tag}: already done")
                continue
            print(tag)
            sec = md_for_run(d, s, progress=progress)
            print("\n".join(summary_lines(sec)))


def compare_table(run_dirs: list[Path], n_boot: int = 1000, seed: int = 0,
                  metrics: tuple[str, ...] = BOOTSTRAP_METRICS):
    """One row per (backbone, dataset, split, test set, metric, variant)."""
    import pandas as pd

    from .report import load_runs

    runs = load_runs(run_dirs)
    cells: dict[tuple, dict[str, dict[int, Any]]] = {}
    for r in runs:
        m = r.metrics
        key = (m["backbone"], m["dataset"], m["split"])
        cells.setdefault(key, {}).setdefault(m["mara"], {})[m["seed"]] = r
    rows = []
    for (backbone, dataset, split), by_var in sorted(cells.items()):
        base = by_var.get("off")
        first = next(iter(next(iter(by_var.values())).values()))
        sets = list(first.metrics["test_sets"])
        for set_name in sets:
            errs = {v: {s: StructureErrors.from_predictions(r.predictions, set_name) for s, r in runs_.items()
                        if r.predictions is not None and f"{set_name}__ptr" in r.predictions}
                    for v, runs_ in by_var.items()}
            for v in sorted(by_var, key=lambda x: ("off", "paper", "control").index(x)):
                vals = {mname: [by_var[v][s].metrics["test_sets"].get(set_name, {}).get(mname, np.nan)
                                for s in sorted(by_var[v])] for mname in metrics}
                boot = {}
                if base is not None and v != "off":
                    common = sorted(set(errs["off"]) & set(errs[v]))
                    if common:
                        boot = paired_bootstrap([errs["off"][s] for s in common], [errs[v][s] for s in common],
                                                metrics, n_boot=n_boot, seed=seed)
                for mname in metrics:
                    x = np.array(vals[mname], dtype=float)
                    if np.isnan(x).all():
                        continue
                    b = boot.get(mname, {})
                    rows.append({"backbone": backbone, "dataset": dataset, "split": split, "test_set": set_name,
                                 "metric": mname, "variant": v, "n_seeds": int(np.sum(~np.isnan(x))),
                                 "mean": float(np.nanmean(x)),
                                 "std": float(np.nanstd(x, ddof=1)) if np.sum(~np.isnan(x)) > 1 else np.nan,
                                 "rel_vs_off_pct": 100 * b["rel"] if b else np.nan,
                                 "diff_vs_off": b.get("diff", np.nan), "ci_lo": b.get("lo", np.nan),
                                 "ci_hi": b.get("hi", np.nan),
                                 "significant": b.get("significant") if b else None})
    return pd.DataFrame(rows)


def compare_markdown(df) -> str:
    if df.empty:
        return "(no comparable runs)"
    lines = ["| backbone | test set | metric | variant | mean ± std | vs off | Δ [95 % CI] | sig. |",
             "|---|---|---|---|---|---|---|---|"]
    for _, r in df.iterrows():
        ms = f"{r['mean']:.2f}" + ("" if np.isnan(r["std"]) else f" ± {r['std']:.2f}") + f" (n={r['n_seeds']})"
        rel = "" if np.isnan(r["rel_vs_off_pct"]) else f"{r['rel_vs_off_pct']:+.1f} %"
        ci = "" if np.isnan(r["diff_vs_off"]) else f"{r['diff_vs_off']:+.2f} [{r['ci_lo']:+.2f}, {r['ci_hi']:+.2f}]"
        sig = "" if r["significant"] is None else ("yes" if r["significant"] else "no")
        lines.append(f"| {r['backbone']} | {r['test_set']} | {r['metric']} | {r['variant']} | {ms} | {rel} | {ci} "
                     f"| {sig} |")
    return "\n".join(lines) + "\n\n" + RULE


def default_out_dir(base, backbones: list[str]) -> Path:
    ds = re.sub(r"[^A-Za-z0-9]+", "-", str(base.dataset)).strip("-")[:40]
    return Path(base.output_dir) / f"compare-{'-'.join(backbones)}-{ds}-s{base.split}-{base.preset}"


def write_compare(run_dirs: list[Path], out_dir: Path, n_boot: int = 1000, seed: int = 0) -> dict[str, Path]:
    from .atomic import atomic_write_text
    from .report import write_report
    from .results import check_output_dir

    out = check_output_dir(out_dir)
    df = compare_table(run_dirs, n_boot=n_boot, seed=seed)
    md = compare_markdown(df)
    from .md_report import replica_frame, stability_markdown, stability_table

    rep = replica_frame(run_dirs)
    if len(rep):
        md += "\n\n## MD stability\n\n" + stability_markdown(stability_table(rep))
    atomic_write_text(out / "compare.csv", df.to_csv(index=False))
    atomic_write_text(out / "compare.md", md + "\n")
    paths = write_report(run_dirs, out, compare_md=md, compare_df=df, title="mara_bench compare")
    return {"csv": out / "compare.csv", "md": out / "compare.md", **paths}
