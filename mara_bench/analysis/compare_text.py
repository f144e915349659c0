"""Text of a comparison: the verdict table (the answer first: Δ, interval, P(improvement), verdict per variant,
paper vs scale / control, cost) and the long table of every metric. Reads the frames :mod:`mara_bench.analysis.compare`
builds; computes nothing statistical itself."""

from __future__ import annotations

import numpy as np

METRIC_LABELS = {"energy_mae_mev_per_atom": "energy MAE (meV/atom)", "force_mae_mev_A": "force MAE (meV/Å)",
                 "force_rmse_mev_A": "force RMSE (meV/Å)", "force_err_p99_mev_A": "P99 atom force error (meV/Å)",
                 "force_err_cvar1_mev_A": "CVaR-1 % atom force error (meV/Å)",
                 "force_err_max_mev_A": "max atom force error (meV/Å)"}
RULE = ("Rule: the unit of replication is a trained model; runs are paired by (split, seed). Δ = mean over paired "
        "models of (variant − baseline), each on the full test set. 95 % interval: Δ ± t(n−1) · SE with SE² = "
        "s_d²/n (spread of the paired differences over models) + the test-set variance that all models share "
        "(paired bootstrap over test structures). Verdict 'better'/'worse' only if the Holm-adjusted p < 0.05 within "
        "the family {energy MAE, force MAE, force RMSE, force P99, force CVaR-1 %} of one comparison on one test set "
        "(so a 95 % interval may exclude zero without a verdict); event rates (fixed thresholds: absolute, and k × "
        "the off models' mean force MAE, one number for every variant) are outside the family and judged on their "
        "own p. No interval or verdict with fewer than 3 paired models. The maximum error is descriptive (no valid "
        "interval). P↑ = fraction of paired models in which the variant is better, exact 95 % interval. Reading "
        "rule: the spherical attention is credited only when paper beats both scale and control.")


def _num(v: float) -> str:
    return "–" if v is None or not np.isfinite(v) else (f"{v:+.3g}" if abs(v) < 10 else f"{v:+.1f}")


def _cell(r) -> str:
    """Δ [lo, hi] · P↑ · verdict of one comparison row."""
    if r["verdict"] == "descriptive only":
        return f"Δ {_num(r['diff'])} (descriptive)"
    if not np.isfinite(r.get("ci_lo", np.nan)):
        return f"Δ {_num(r['diff'])} · {r['verdict']}"
    mark = {"better": "✓ better", "worse": "✗ worse"}.get(r["verdict"], "≈ no clear difference")
    return (f"Δ {_num(r['diff'])} [{_num(r['ci_lo'])}, {_num(r['ci_hi'])}] · P↑ {r['p_improve']:.2f} · {mark}")


def verdict_markdown(df, cost=None, test_sets: list[str] | None = None) -> str:
    """The answer first: per backbone × dataset × test set, Δ vs off per variant (columns) for the family metrics,
    then paper vs scale / control and whether the attention is credited, then the cost of each variant."""
    if df.empty:
        return "(no comparable runs)"
    from .stats import FAMILY

    out = []
    cmp_ = df[df.baseline != ""]
    for (budget, backbone, dataset, set_name), g in df.groupby(["budget", "backbone", "dataset", "test_set"],
                                                               sort=False):
        if test_sets is not None and set_name not in test_sets:
            continue
        c = cmp_[(cmp_.budget == budget) & (cmp_.backbone == backbone) & (cmp_.dataset == dataset)
                 & (cmp_.test_set == set_name)]
        own = g[g.baseline == ""]
        variants = [v for v in dict.fromkeys(own.variant) if v != "off"]
        n = int(c.n_models.max()) if len(c) else 0
        out.append(f"### {backbone} · {dataset} · {set_name} · at {budget} — {n} paired models")
        out.append("")
        vs_off = c[c.baseline == "off"]
        if vs_off.empty:
            out += ["(no variant with paired off runs)", ""]
            continue
        metric_order = [m for m in dict.fromkeys(vs_off.metric) if m in FAMILY or m.startswith("force_err_max")]
        metric_order += [m for m in dict.fromkeys(vs_off.metric) if m not in metric_order]
        out.append("| metric | off (mean ± std) | " + " | ".join(f"{v} − off" for v in variants) + " |")
        out.append("|---|---|" + "---|" * len(variants))
        for m in metric_order:
            o = own[(own.metric == m) & (own.variant == "off")]
            off_s = "" if o.empty else f"{o.iloc[0]['mean']:.3g}" + (
                "" if not np.isfinite(o.iloc[0]["std"]) else f" ± {o.iloc[0]['std']:.2g}")
            cells = []
            for v in variants:
                r = vs_off[(vs_off.metric == m) & (vs_off.variant == v)]
                cells.append("" if r.empty else _cell(r.iloc[0]))
            label = vs_off[vs_off.metric == m].iloc[0]["label"] + ("" if m in FAMILY else " †")
            out.append(f"| {label} | {off_s} | " + " | ".join(cells) + " |")
        out.append("")
        att = c[(c.variant == "paper") & c.baseline.isin(["scale", "control"])]
        if not att.empty:
            out.append("| attention (paper vs …) | paper − scale | paper − control | attention credited? |")
            out.append("|---|---|---|---|")
            for m in [m for m in metric_order if m in FAMILY]:
                rs = {b: att[(att.metric == m) & (att.baseline == b)] for b in ("scale", "control")}
                cells = [("" if rs[b].empty else _cell(rs[b].iloc[0])) for b in ("scale", "control")]
                verdicts = [None if rs[b].empty else rs[b].iloc[0]["verdict"] for b in ("scale", "control")]
                if any(v is None for v in verdicts):
                    credit = "needs scale and control runs"
                elif any(str(v).startswith("need") for v in verdicts):
                    credit = "undecided (need ≥ 3 paired models)"
                else:
                    credit = "yes" if all(v == "better" for v in verdicts) else "no"
                out.append(f"| {METRIC_LABELS.get(m, m)} | {cells[0]} | {cells[1]} | {credit} |")
            out.append("")
        if cost is not None and len(cost):
            cs = cost[(cost.budget == budget) & (cost.backbone == backbone) & (cost.dataset == dataset)]
            if len(cs):
                out.append("| cost | " + " | ".join(cs.variant) + " |")
                out.append("|---|" + "---|" * len(cs))
                out.append("| parameters (MARA) | " + " | ".join(
                    f"{int(r.parameters):,} ({int(r.mara_parameters or 0):,})" for r in cs.itertuples()) + " |")
                out.append("| epochs · training FLOPs | " + " | ".join(
                    f"{int(r.epochs)} · {_plain(r.train_flops)}" for r in cs.itertuples()) + " |")
                out.append("| training s/epoch (median) | " + " | ".join(
                    _plain(r.train_s_per_epoch) for r in cs.itertuples()) + " |")
                out.append("| inference ms/structure (E+F) | " + " | ".join(
                    _plain(r.inference_ms_per_structure) for r in cs.itertuples()) + " |")
                out.append("| inference FLOPs/structure | " + " | ".join(
                    _plain(r.inference_flops_per_structure) for r in cs.itertuples()) + " |")
                out.append("")
    out.append("Δ = variant − baseline (lower is better for every metric); [95 % interval]; P↑ = P(improvement) over "
               "paired models; † = outside the Holm family. Wall times come from each run's own record and depend "
               "on the machine's load; read them as rough costs. " + RULE)
    return "\n".join(out)


def _plain(v) -> str:
    return "–" if v is None or not np.isfinite(v) else f"{v:.3g}"


def compare_markdown(df) -> str:
    """The long table: every metric, variant and baseline."""
    if df.empty:
        return "(no comparable runs)"
    lines = ["| budget | backbone | dataset | test set | metric | variant | vs | n | mean ± std | Δ [95 % interval] | "
             "rel. | p (Holm) | P↑ [95 %] | verdict |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for _, r in df.iterrows():
        ms = f"{r['mean']:.3g}" + ("" if not np.isfinite(r["std"]) else f" ± {r['std']:.2g}")
        if r["baseline"] == "":
            lines.append(f"| {r['budget']} | {r['backbone']} | {r['dataset']} | {r['test_set']} | {r['label']} | "
                         f"{r['variant']} | | "
                         f"{r['n_models']} | {ms} | | | | | |")
            continue
        ci = "" if not np.isfinite(r["ci_lo"]) else f" [{_num(r['ci_lo'])}, {_num(r['ci_hi'])}]"
        p = "" if not np.isfinite(r["p"]) else (f"{r['p']:.3g}" + (f" ({r['p_holm']:.3g})" if np.isfinite(
            r["p_holm"]) else ""))
        pi = "" if not np.isfinite(r["p_improve"]) else (
            f"{r['p_improve']:.2f} [{r['p_improve_lo']:.2f}, {r['p_improve_hi']:.2f}]")
        lines.append(f"| {r['budget']} | {r['backbone']} | {r['dataset']} | {r['test_set']} | {r['label']} | "
                     f"{r['variant']} | {r['baseline']} | {r['n_models']} | {ms} | {_num(r['diff'])}{ci} | {_num(r['rel_pct'])} % | "
                     f"{p} | {pi} | {r['verdict']} |")
    return "\n".join(lines) + "\n\n" + RULE
