"""Report figures (matplotlib, Agg backend). Each function returns PNG bytes.

``runs`` below are :class:`mara_bench.analysis.report.RunData` objects (metrics dict + lazily loaded predictions/gates).
"""

from __future__ import annotations

import io
from collections import defaultdict

import numpy as np

from ..config import variant_rank
from ..run.layout import TRAIN_LOG

MAX_POINTS = 20_000  # parity plots: seeded subsample


def _order(label: str):
    """Sort groups backbone first, then variants in the ladder order (off, scale, control, paper)."""
    b, _, v = label.partition("/")
    return (b, variant_rank(v), v)


def pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend (the one matplotlib entry of the reports)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png_bytes(fig, tight: bool = True) -> bytes:
    """The figure as PNG bytes (110 dpi; ``bbox_inches="tight"`` unless ``tight=False``); closes it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, **({"bbox_inches": "tight"} if tight else {}))
    pyplot().close(fig)
    return buf.getvalue()


def _atom_err(pred, set_name: str) -> np.ndarray | None:
    k = f"{set_name}__forces_pred"
    if k not in pred:
        return None
    return np.linalg.norm(pred[k] - pred[f"{set_name}__forces_ref"], axis=-1) * 1000.0


def force_error_cdf(runs, set_name: str = "test") -> bytes | None:
    """Complementary CDF of the per-atom force error norm on a log x axis, one curve per group (seeds pooled)."""
    groups: dict[str, list[np.ndarray]] = defaultdict(list)
    for r in runs:
        e = _atom_err(r.predictions, set_name) if r.predictions is not None else None
        if e is not None:
            groups[r.group].append(e)
    if not groups:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for label, parts in sorted(groups.items(), key=lambda kv: _order(kv[0])):
        e = np.sort(np.concatenate(parts))
        frac = np.arange(1, len(e) + 1) / len(e)
        axes[0].plot(np.maximum(e, 1e-3), frac, label=f"{label} (n={len(parts)})")
        axes[1].plot(np.maximum(e, 1e-3), 1 - frac + 1 / len(e), label=label)
    axes[0].set(xscale="log", xlabel="per-atom force error |ΔF| (meV/Å)", ylabel="CDF", title=f"{set_name}: CDF")
    axes[1].set(xscale="log", yscale="log", xlabel="per-atom force error |ΔF| (meV/Å)", ylabel="1 − CDF",
                title=f"{set_name}: tail")
    axes[0].legend(fontsize=7)
    for ax in axes:
        ax.grid(alpha=0.3, which="both")
    return png_bytes(fig)


def _first_per_group(runs, usable) -> dict:
    """{group: the first run of that group for which ``usable(run)``}."""
    chosen = {}
    for r in runs:
        if r.group not in chosen and usable(r):
            chosen[r.group] = r
    return chosen


def parity(runs, set_name: str = "test") -> bytes | None:
    """Force and energy parity, first seed of each group."""
    chosen = _first_per_group(runs, lambda r: r.predictions is not None
                              and f"{set_name}__energy_pred" in r.predictions)
    if not chosen:
        return None
    plt = pyplot()
    n = len(chosen)
    fig, axes = plt.subplots(2, n, figsize=(3.4 * n, 6.4), squeeze=False)
    rng = np.random.default_rng(0)
    for c, (label, r) in enumerate(sorted(chosen.items(), key=lambda kv: _order(kv[0]))):
        p = r.predictions
        ax = axes[0, c]
        if f"{set_name}__forces_pred" in p:
            fr, fp = p[f"{set_name}__forces_ref"].ravel(), p[f"{set_name}__forces_pred"].ravel()
            if len(fr) > MAX_POINTS:
                keep = rng.choice(len(fr), MAX_POINTS, replace=False)
                fr, fp = fr[keep], fp[keep]
            ax.scatter(fr, fp, s=2, alpha=0.4)
            lim = [min(fr.min(), fp.min()), max(fr.max(), fp.max())]
            ax.plot(lim, lim, "k--", lw=0.8)
        ax.set(title=f"{label}\nforces (eV/Å)", xlabel="reference", ylabel="predicted")
        ax = axes[1, c]
        er, ep = p[f"{set_name}__energy_ref"], p[f"{set_name}__energy_pred"]
        ax.scatter(er, ep, s=4, alpha=0.5)
        lim = [min(er.min(), ep.min()), max(er.max(), ep.max())]
        ax.plot(lim, lim, "k--", lw=0.8)
        ax.set(title="energy (eV)", xlabel="reference", ylabel="predicted")
    fig.tight_layout()
    return png_bytes(fig)


def tail_bars(summary, set_name: str = "test") -> bytes | None:
    """P99, max and CVaR-1% of the per-atom force error, mean ± std over seeds per group."""
    cols = ["force_err_p99_mev_A", "force_err_cvar1_mev_A", "force_err_max_mev_A"]
    df = summary[summary["test_set"] == set_name]
    if df.empty or not all(c in df for c in cols):
        return None
    g = df.groupby("group")[cols]
    mean, std = g.mean(), g.std().fillna(0.0)
    keys = sorted(mean.index, key=_order)
    mean, std = mean.loc[keys], std.loc[keys]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(mean)), 3.6))
    x = np.arange(len(cols))
    w = 0.8 / len(mean)
    for k, label in enumerate(mean.index):
        ax.bar(x + k * w, mean.loc[label], w, yerr=std.loc[label], label=label, capsize=2)
    ax.set_xticks(x + 0.4 - w / 2, ["P99", "CVaR 1%", "max"])
    ax.set(ylabel="per-atom force error (meV/Å)", title=f"{set_name}: force-error tail (mean ± std over seeds)")
    ax.legend(fontsize=7)
    return png_bytes(fig)


def gate_histograms(runs) -> bytes | None:
    """MARA gates vs edge length (2-D histogram, all blocks pooled), first seed of each MARA group."""
    chosen = _first_per_group(runs, lambda r: r.gates is not None)
    if not chosen:
        return None
    plt = pyplot()
    n = len(chosen)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.4), squeeze=False)
    for c, (label, r) in enumerate(sorted(chosen.items(), key=lambda kv: _order(kv[0]))):
        blocks = sorted({k.split("_")[0] for k in r.gates.files})
        g = np.concatenate([r.gates[f"{b}_gate"] for b in blocks])
        d = np.concatenate([r.gates[f"{b}_r"] for b in blocks])
        ax = axes[0, c]
        h = ax.hist2d(d, g, bins=[40, 40], cmin=1, cmap="viridis")
        fig.colorbar(h[3], ax=ax, label="edges")
        ax.set(xlabel="edge length r (Å)", ylabel="gate α", title=f"{label} ({len(blocks)} blocks)")
    fig.tight_layout()
    return png_bytes(fig)


def equivariance_bars(summary) -> bytes | None:
    cols = [c for c in ("equiv_energy_max_abs_eV", "equiv_forces_max_abs_eV_A") if c in summary]
    df = summary[summary["test_set"] == "test"].dropna(subset=cols) if cols else None
    if df is None or df.empty:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, len(cols), figsize=(5 * len(cols), 3.4), squeeze=False)
    for ax, col in zip(axes[0], cols, strict=True):
        labels = [f"{g} s{s}" for g, s in zip(df["group"], df["seed"], strict=True)]
        ax.bar(range(len(df)), np.maximum(df[col].to_numpy(dtype=float), 1e-16))
        ax.set_xticks(range(len(df)), labels, rotation=60, ha="right", fontsize=7)
        ax.set(yscale="log", title=col.replace("equiv_", "equivariance error: "))
    fig.tight_layout()
    return png_bytes(fig)


FOREST_PANELS = (("energy", ("energy_mae_mev_per_atom",)),
                 ("forces", ("force_mae_mev_A", "force_rmse_mev_A")),
                 ("force tails", ("force_err_p99_mev_A", "force_err_cvar1_mev_A")))
_CONTRAST_COLORS = {("scale", "off"): "#8c8c8c", ("control", "off"): "#1f77b4", ("paper", "off"): "#d62728",
                    ("paper", "scale"): "#ff9896", ("paper", "control"): "#9467bd"}


def forest(df, backbone: str, dataset: str, budget: str | None = None) -> bytes | None:
    """Forest plot of the compare table: Δ relative to the baseline's mean (%) with its 95 % interval, one panel per
    metric family, a row per test set × metric, a marker per comparison (filled = verdict better/worse)."""
    c = df[(df.backbone == backbone) & (df.dataset == dataset) & (df.baseline != "")]
    if budget is not None and "budget" in c:
        c = c[c.budget == budget]
    if c.empty:
        return None
    plt = pyplot()
    sets = list(dict.fromkeys(c.test_set))
    contrasts = [k for k in _CONTRAST_COLORS if ((c.variant == k[0]) & (c.baseline == k[1])).any()]
    fig, axes = plt.subplots(1, len(FOREST_PANELS), figsize=(4.2 * len(FOREST_PANELS), 0.9 + 0.5 * len(sets) * 2),
                             sharey=False, squeeze=False)
    for ax, (title, metrics) in zip(axes[0], FOREST_PANELS, strict=True):
        labels, y = [], 0.0
        for s in sets:
            for m in metrics:
                for k, (v, b) in enumerate(contrasts):
                    r = c[(c.test_set == s) & (c.metric == m) & (c.variant == v) & (c.baseline == b)]
                    if r.empty:
                        continue
                    r = r.iloc[0]
                    base = r["mean"] - r["diff"]
                    yy = y + 0.12 * (k - (len(contrasts) - 1) / 2)
                    x = 100 * r["diff"] / base if base else np.nan
                    filled = r["verdict"] in ("better", "worse")
                    col = _CONTRAST_COLORS[(v, b)]
                    if np.isfinite(r.get("ci_lo", np.nan)) and base:
                        ax.plot([100 * r["ci_lo"] / base, 100 * r["ci_hi"] / base], [yy, yy], color=col, lw=1.5)
                    ax.plot([x], [yy], "o", color=col, mfc=col if filled else "white", ms=5,
                            label=f"{v} − {b}" if (y == 0 and m == metrics[0]) else None)
                labels.append((y, f"{s}\n{m.replace('_mev_per_atom', '').replace('_mev_A', '')}"))
                y += 1.0
        ax.axvline(0, color="k", lw=0.8)
        ax.set_yticks([t for t, _ in labels])
        ax.set_yticklabels([lbl for _, lbl in labels], fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("Δ relative to baseline (%), 95 % interval")
        ax.set_title(title)
    handles, names = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, names, loc="upper center", ncol=len(handles), fontsize=8, frameon=False,
                   bbox_to_anchor=(0.5, 1.06))
    fig.text(0.5, -0.1, f"{backbone} · {dataset}{'' if budget is None else ' · at ' + budget}: filled = verdict "
             "(Holm), open = no clear difference / too few models", ha="center", fontsize=9)
    return png_bytes(fig)


def _train_log(path) -> dict[str, np.ndarray] | None:
    import csv

    f = path / TRAIN_LOG
    if not f.exists():
        return None
    rows = list(csv.DictReader(open(f)))
    if not rows or not rows[0].get("train_flops_cum"):
        return None
    col = {k: np.array([float(r[k]) if r.get(k) not in (None, "") else np.nan for r in rows])
           for k in ("epoch", "val_force_mae_mev_A", "train_flops_cum", "epoch_time_s")}
    col["wall_cum"] = np.cumsum(col["epoch_time_s"])
    return col



def _label(ax, xlabel: str, ylabel: str, xlog: bool = False, ylog: bool = False) -> None:
    """Axis labels, optional log scales (no minor tick labels on a log x axis) and a light grid."""
    if xlog:
        from matplotlib.ticker import NullFormatter

        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
    if ylog:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, which="both")


def _budget_tag(run) -> str:
    """' · equal FLOPs' for a run trained to a FLOP budget (its curves and points are a group of their own)."""
    return " · equal FLOPs" if (run.metrics.get("train") or {}).get("budget_flops") else ""


def _grouped_figure(groups: dict, shape: tuple[int, int], figsize: tuple[float, float]):
    """None when ``groups`` is empty, else ``(fig, axes, [(label, items, colour), ...])`` in variant order."""
    if not groups:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(*shape, figsize=figsize)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    ordered = sorted(groups.items(), key=lambda kv: _order(kv[0]))
    return fig, axes, [(label, items, colors[k % len(colors)]) for k, (label, items) in enumerate(ordered)]

def learning_curves(runs) -> bytes | None:
    """Validation force MAE vs cumulative training FLOPs (left) and vs cumulative training wall time (right): a line
    per run (thin, seeds), the median over seeds per variant (bold, on the FLOP grid of the epochs they share)."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in runs:
        log = _train_log(r.path)
        if log is not None:  # runs with other epoch budgets (equal compute) are curves of their own
            tr = r.metrics.get("train") or {}
            groups[f"{r.group}{_budget_tag(r)} · {tr.get('max_epochs', tr.get('epochs', '?'))} ep"].append(log)
    drawn = _grouped_figure(groups, (1, 2), (11, 4))
    if drawn is None:
        return None
    fig, axes, styled = drawn
    for label, logs, c in styled:
        for ax, x in zip(axes, ("train_flops_cum", "wall_cum"), strict=True):
            for log in logs:
                ax.plot(log[x], log["val_force_mae_mev_A"], color=c, lw=0.6, alpha=0.5)
            n = min(len(log["epoch"]) for log in logs)
            med_x = np.median([log[x][:n] for log in logs], axis=0)
            med_y = np.median([log["val_force_mae_mev_A"][:n] for log in logs], axis=0)
            ax.plot(med_x, med_y, color=c, lw=2.2, label=f"{label} (n={len(logs)})")
    for ax, xl in zip(axes, ("cumulative training FLOPs", "cumulative training wall time (s)"), strict=True):
        _label(ax, xl, "validation force MAE (meV/Å)", xlog=True, ylog=True)
    axes[0].legend(fontsize=7)
    fig.suptitle("learning curves: thin = one seed, bold = median over seeds (wall time depends on machine load)",
                 fontsize=9)
    return png_bytes(fig)


def pareto(runs, set_name: str = "test") -> bytes | None:
    """Accuracy vs inference cost: test force MAE and P99 per-atom force error vs inference ms and FLOPs per
    structure; small dots = seeds, large = median per group; the lower-left front is the best trade-off."""
    pts: dict[str, list[tuple[float, float, float, float]]] = defaultdict(list)
    for r in runs:
        t = (r.metrics.get("test_sets") or {}).get(set_name) or {}
        inf = r.metrics.get("inference") or {}
        if "force_mae_mev_A" in t and inf.get("flops_per_structure"):
            pts[r.group + _budget_tag(r)].append((float(inf.get("ms_per_structure", np.nan)), float(inf["flops_per_structure"]),
                                 float(t["force_mae_mev_A"]), float(t.get("force_err_p99_mev_A", np.nan))))
    drawn = _grouped_figure(pts, (2, 2), (10, 7))
    if drawn is None:
        return None
    fig, axes, styled = drawn
    for label, p, c in styled:
        a = np.array(p)
        for i, xi in enumerate((0, 1)):
            for j, yi in enumerate((2, 3)):
                ax = axes[j][i]
                ax.plot(a[:, xi], a[:, yi], "o", color=c, ms=3, alpha=0.5)
                ax.plot(np.nanmedian(a[:, xi]), np.nanmedian(a[:, yi]), "o", color=c, ms=9, label=label)
    allx = np.array([q[:2] for p in pts.values() for q in p], dtype=float)
    for i, xl in enumerate(("inference ms / structure (E+F, measured)", "inference FLOPs / structure (counted)")):
        x = allx[:, i][np.isfinite(allx[:, i]) & (allx[:, i] > 0)]
        for j, yl in enumerate((f"{set_name} force MAE (meV/Å)", f"{set_name} P99 atom force error (meV/Å)")):
            _label(axes[j][i], xl, yl, xlog=bool(len(x)) and x.max() > 10 * x.min())  # log where costs span a decade
    axes[0][0].legend(fontsize=7)
    fig.suptitle("accuracy vs inference cost (lower left is better)", fontsize=9)
    return png_bytes(fig)
