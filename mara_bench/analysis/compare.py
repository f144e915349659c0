"""Paired comparisons of MARA variants: run (or reuse) backbone × variant × seed, then tabulate.

The unit of replication is a trained model: runs are paired by (split, seed). For every backbone, dataset, test
set, metric and variant: mean ± std over models, and Δ vs ``off`` (and ``paper`` vs ``scale`` / ``control``, the
reading rule's comparisons) with an interval that holds the between-model and the test-set variability,
P(improvement) and a verdict (rule: :mod:`mara_bench.analysis.stats`). Writes compare.csv, compare.md (verdict first) and a
full report (report.html) into the compare folder. With ``--md`` (:func:`run_md_all`) every model also runs MD
and compare.md / the report gain an "MD stability" table.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from .compare_text import METRIC_LABELS, RULE, compare_markdown, verdict_markdown  # noqa: F401 (re-exported)
from .stats import StructureErrors


def plan(base, backbones: list[str], variants: list[str], seeds: list[int]) -> list:
    """All RunConfigs of the comparison, validated (names, presets, overrides, dataset) before anything runs."""
    from ..config import normalize_mara
    from ..run.pipeline import prepare

    variants = list(dict.fromkeys(normalize_mara(v) for v in variants))
    if not seeds:
        raise UserError("--seeds must be >= 1")
    cfgs = [dataclasses.replace(base, backbone=b, mara=v, seed=s) for b in backbones for v in variants for s in seeds]
    for c in cfgs:
        c.validate()
    for b in backbones:  # resolves backbone, preset, overrides, dataset, output dir; writes nothing
        prepare(next(c for c in cfgs if c.backbone == b))
    return cfgs


BUDGETS = ("auto", "epochs", "flops", "both")
AFFORDABLE = 3.0  # auto: add the equal-compute runs when they cost at most this × the equal-epoch training


def flops_per_epoch(cfg) -> int:
    """Training FLOPs of one epoch of ``cfg`` (its model built as the run would build it; nothing is written)."""
    from ..config import torch_dtype
    from ..run.cost import epoch_flops, train_step_flops
    from ..run.pipeline import build_model, prepare

    p = prepare(cfg)
    dtype = torch_dtype(cfg.dtype)
    model = build_model(p, dtype)
    step = train_step_flops(model, p.train_graphs, int(p.train_opts["batch_size"]), dtype, p.device,
                            p.train_opts.get("energy_loss", "per_atom"))
    return epoch_flops(step, len(p.train_graphs))


@dataclasses.dataclass
class FlopBudget:
    """Equal compute for one backbone: every variant gets ``budget`` training FLOPs, the costliest variant's spend
    in the preset's epochs."""

    backbone: str
    epochs: int  # the preset's (equal-epoch) budget
    flops_per_epoch: dict[str, int]
    budget: float

    def epochs_for(self, variant: str) -> int:
        from ..run.cost import budget_epochs

        return budget_epochs(self.budget, self.flops_per_epoch[variant])

    def cost_ratio(self) -> float:
        """Training FLOPs of the equal-compute runs / those of the equal-epoch runs."""
        return len(self.flops_per_epoch) * self.budget / sum(self.epochs * f for f in self.flops_per_epoch.values())

    def describe(self) -> str:
        parts = ", ".join(f"{v} {self.epochs_for(v)} epochs" for v in self.flops_per_epoch)
        return (f"{self.backbone}: equal compute = {self.budget:.3g} training FLOPs (the costliest variant's "
                f"{self.epochs} epochs): {parts}")


def flop_budget(cfgs: list) -> FlopBudget:
    """The FLOP budget of one backbone's comparison (``cfgs``: that backbone's equal-epoch configs)."""
    from ..run.pipeline import check_config

    first = cfgs[0]
    _, _, train_opts = check_config(first)
    fpe = {}
    for c in cfgs:
        if c.mara not in fpe:
            fpe[c.mara] = flops_per_epoch(c)
    epochs = int(train_opts["max_epochs"])
    return FlopBudget(first.backbone, epochs, fpe, float(max(fpe.values()) * epochs))


def budget_configs(cfgs: list, budget: FlopBudget) -> list:
    """The equal-compute configs: ``train.budget_flops`` for every variant that needs more epochs; a variant whose
    budget buys exactly the preset's epochs reuses its equal-epoch run."""
    out = []
    for c in cfgs:
        if budget.epochs_for(c.mara) == budget.epochs:
            out.append(c)
        else:
            out.append(dataclasses.replace(c, overrides={**c.overrides, "train.budget_flops": budget.budget}))
    return out


def run_all(cfgs: list, progress: bool = True, force: bool = False) -> list[Path]:
    from ..run.pipeline import run_config

    out = []
    for k, c in enumerate(cfgs):
        print(f"[{k + 1}/{len(cfgs)}] {c.run_id()}")
        out.append(run_config(c, force=force, progress=progress))
    return out


def run_md_all(run_dirs: list[Path], settings: list, progress: bool = True, force: bool = False) -> None:
    """MD (``compare --md``) for every run and every :class:`~mara_bench.md.run.MDSettings`; a run whose md.json
    already holds that ensemble with the same settings is reused unless ``force``."""
    from ..md.run import finished_section, md_for_run, summary_lines

    for k, d in enumerate(run_dirs):
        for s in settings:
            tag = f"[md {k + 1}/{len(run_dirs)}] {Path(d).name} {s.ensemble}"
            if not force and finished_section(d, s) is not None:
                print(f"{tag}: already done")
                continue
            print(tag)
            sec = md_for_run(d, s, progress=progress)
            print("\n".join(summary_lines(sec)))


# (variant, baseline) pairs of a comparison: every gated rung vs off, then the reading rule's paper vs scale / control
CONTRASTS = (("scale", "off"), ("control", "off"), ("paper", "off"), ("paper", "scale"), ("paper", "control"))
def _pair_key(m: dict) -> tuple:
    return (int(m.get("split") or 1), int(m["seed"]))


def event_thresholds(off_errs: list, abs_thresholds=None, factors=(5,)) -> list[tuple[str, str, float]]:
    """Fixed event thresholds for one comparison (one test set): absolute ones and k × the off models' mean force
    MAE — the same number for every variant. (key, label, threshold meV/Å)."""
    from ..run.metrics import ABSOLUTE_THRESHOLDS_MEV_A

    out = [(f"force_events_above_{t:g}_mev_A_pct", f"% atoms with force error > {t:g} meV/Å", float(t))
           for t in (abs_thresholds or ABSOLUTE_THRESHOLDS_MEV_A)]
    if off_errs:
        mae = float(np.mean([e.metrics(["force_mae_mev_A"])["force_mae_mev_A"] for e in off_errs]))
        if np.isfinite(mae):
            out += [(f"force_events_above_{k}x_off_mae_pct",
                     f"% atoms with force error > {k}× off MAE = {k * mae:.3g} meV/Å", k * mae) for k in factors]
    return out


def compare_table(run_dirs: list[Path] | dict[str, list[Path]], n_boot: int = 1000, seed: int = 0,
                  budget: str = "equal epochs"):
    """One row per (budget, backbone, dataset, test set, metric, variant, baseline); baseline '' holds the variant's
    own mean ± std over models. ``run_dirs`` may map budget names ("equal epochs", "equal FLOPs") to run folders."""
    if isinstance(run_dirs, dict):
        import pandas as pd

        parts = [compare_table(d, n_boot, seed, b) for b, d in run_dirs.items() if d]
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    import pandas as pd

    from ..config import variant_rank
    from ..run.layout import load_runs
    from .stats import BOOTSTRAP_METRICS, FAMILY, compare_models, event_metric, model_values, resample_indices

    runs = load_runs(run_dirs)
    cells: dict[tuple, dict[str, dict[tuple, Any]]] = {}
    for r in runs:
        m = r.metrics
        cells.setdefault((m["backbone"], m["dataset"]), {}).setdefault(m["mara"], {})[_pair_key(m)] = r
    rows = []
    for (backbone, dataset), by_var in sorted(cells.items()):
        variants = sorted(by_var, key=variant_rank)
        first = next(iter(by_var[variants[0]].values()))
        for set_name in first.metrics["test_sets"]:
            errs = {v: {k: StructureErrors.from_predictions(r.predictions, set_name) for k, r in rs.items()
                        if r.predictions is not None and f"{set_name}__ptr" in r.predictions}
                    for v, rs in by_var.items()}
            sizes = {k[0]: e.n_structures for rs in errs.values() for k, e in rs.items()}
            events = event_thresholds(list(errs.get("off", {}).values()))
            names = {event_metric(t): label for _, label, t in events}
            keys = {event_metric(t): key for key, _, t in events}
            metrics = [m for m in BOOTSTRAP_METRICS] + list(names)
            resamples = resample_indices(sizes, n_boot, seed)
            vals = {v: {k: model_values(e, metrics, resamples[k[0]]) for k, e in rs.items()} for v, rs in errs.items()}
            base_row = {"budget": budget, "backbone": backbone, "dataset": dataset, "test_set": set_name}
            for v in variants:
                point = np.array([vals[v][k][0] for k in sorted(vals[v])]) if vals[v] else np.empty((0, len(metrics)))
                for j, mname in enumerate(metrics):
                    x = point[:, j] if len(point) else np.array([])
                    x = x[~np.isnan(x)]
                    if not len(x):
                        continue
                    rows.append({**base_row, "metric": keys.get(mname, mname),
                                 "label": names.get(mname, METRIC_LABELS.get(mname, mname)),
                                 "variant": v, "baseline": "", "n_models": len(x), "mean": float(x.mean()),
                                 "std": float(x.std(ddof=1)) if len(x) > 1 else np.nan,
                                 "in_family": mname in FAMILY})
            for v, b in CONTRASTS:
                if v not in vals or b not in vals:
                    continue
                common = sorted(set(vals[v]) & set(vals[b]))
                if not common:
                    continue
                res = compare_models([vals[b][k] for k in common], [vals[v][k] for k in common], metrics)
                for mname, d in res.items():
                    rows.append({**base_row, "metric": keys.get(mname, mname),
                                 "label": names.get(mname, METRIC_LABELS.get(mname, mname)),
                                 "variant": v, "baseline": b, "n_models": d.n_models,
                                 "mean": float(np.mean([vals[v][k][0][metrics.index(mname)] for k in common])),
                                 "std": np.nan, "diff": d.diff, "rel_pct": 100 * d.rel, "ci_lo": d.lo, "ci_hi": d.hi,
                                 "se_models": d.se_models, "se_shared_test": d.se_test, "p": d.p,
                                 "p_holm": d.p_holm, "p_improve": d.p_improve, "p_improve_lo": d.p_improve_lo,
                                 "p_improve_hi": d.p_improve_hi, "verdict": d.verdict, "in_family": d.in_family,
                                 "pairs": ";".join(f"s{k[0]}:{k[1]}" for k in common)})
    return pd.DataFrame(rows)


def cost_table(run_dirs: list[Path] | dict[str, list[Path]], budget: str = "equal epochs"):
    """Cost of each budget × backbone × dataset × variant from the runs' own records (medians over models)."""
    import pandas as pd

    from ..config import variant_rank
    from ..run.layout import load_runs

    if isinstance(run_dirs, dict):
        parts = [cost_table(d, b) for b, d in run_dirs.items() if d]
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    rows = []
    for r in load_runs(run_dirs):
        m = r.metrics
        tr, inf = m.get("train") or {}, m.get("inference") or {}
        epochs = tr.get("epochs") or 0
        rows.append({"budget": budget, "backbone": m.get("backbone"), "dataset": m.get("dataset"),
                     "variant": m.get("mara"), "epochs": epochs,
                     "train_flops": tr.get("train_flops", np.nan),
                     "parameters": (m.get("parameters") or {}).get("total"),
                     "mara_parameters": (m.get("parameters") or {}).get("mara"),
                     "train_s_per_epoch": tr["train_time_s"] / epochs if epochs and "train_time_s" in tr else np.nan,
                     "inference_ms_per_structure": inf.get("ms_per_structure", np.nan),
                     "inference_cpu_ms_per_structure": inf.get("cpu_ms_per_structure", np.nan),
                     "inference_flops_per_structure": inf.get("flops_per_structure", np.nan)})
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    g = df.groupby(["budget", "backbone", "dataset", "variant"], sort=False)
    out = g.median(numeric_only=True).reset_index()
    out["n_models"] = g.size().values
    out["_r"] = out["variant"].map(variant_rank)
    return out.sort_values(["budget", "backbone", "dataset", "_r"]).drop(columns="_r").reset_index(drop=True)


def default_out_dir(base, backbones: list[str]) -> Path:
    ds = re.sub(r"[^A-Za-z0-9]+", "-", str(base.dataset)).strip("-")[:40]
    return Path(base.output_dir) / f"compare-{'-'.join(backbones)}-{ds}-s{base.split}-{base.preset}"


def write_compare(run_dirs: list[Path] | dict[str, list[Path]], out_dir: Path, n_boot: int = 1000, seed: int = 0,
                  notes: list[str] | None = None) -> dict[str, Path]:
    """compare.csv, cost.csv, compare.md and the report. ``run_dirs``: run folders, or budget name -> run folders
    ("equal epochs", "equal FLOPs"); each budget gets its own verdict block."""
    from ..atomic import atomic_write_text
    from ..run.results import check_output_dir
    from .plots import forest
    from .report import write_report

    out = check_output_dir(out_dir)
    groups = run_dirs if isinstance(run_dirs, dict) else {"equal epochs": list(run_dirs)}
    all_dirs = list(dict.fromkeys(Path(d) for ds in groups.values() for d in ds))
    df = compare_table(groups, n_boot=n_boot, seed=seed)
    cost = cost_table(groups)
    verdict = verdict_markdown(df, cost)
    if notes:
        verdict = "\n".join(f"Note: {n}" for n in notes) + "\n\n" + verdict
    md = compare_markdown(df)
    from ..md.tables import replica_frame, stability_markdown, stability_table

    rep = replica_frame(all_dirs)
    if len(rep):
        md += "\n\n## MD stability\n\n" + stability_markdown(stability_table(rep))
    lead = {}
    if not df.empty:
        for budget, backbone, dataset in dict.fromkeys(zip(df.budget, df.backbone, df.dataset, strict=True)):
            png = forest(df, backbone, dataset, budget)
            if png is not None:
                name = f"forest_{backbone}_{dataset}" + ("" if budget == "equal epochs" else "_equal_flops")
                lead[re.sub(r"[^A-Za-z0-9_.-]+", "-", name)] = png
    atomic_write_text(out / "compare.csv", df.to_csv(index=False))
    atomic_write_text(out / "cost.csv", cost.to_csv(index=False))
    atomic_write_text(out / "compare.md", "# Verdict\n\n" + verdict + "\n\n## All metrics\n\n" + md + "\n")
    paths = write_report(all_dirs, out, compare_md=md, compare_df=df, title="mara_bench compare",
                         verdict_md=verdict, lead_figures=lead)
    return {"csv": out / "compare.csv", "md": out / "compare.md", "cost": out / "cost.csv", "verdict": verdict,
            **paths}
