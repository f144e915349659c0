"""Statistics of a comparison between two MARA variants, with the trained model as the unit of replication.

The rule (also written into every compare report; justified in docs/protocol.md, "Statistics"):

* A *paired model* is one (split, seed) trained with both variants. For each pair i the per-model difference
  d_i = m(variant_i) − m(base_i) of a metric m is taken on the full test set.
* Δ = mean_i d_i. Its standard error has two parts. Between models, s_d² / n: the spread of the paired
  differences over seeds and splits, which already holds each model's own test-set noise (every model errs
  differently on each structure). Shared by all models, because they are scored on the same test structures:
  σ²_shared = the mean covariance between the differences of *different* pairs when the test structures are
  resampled with replacement (paired bootstrap: one resample for every model of a split, stratified by split),
  = (n·Var*(Δ) − mean_i Var*(d_i)) / (n − 1), floored at 0. SE = sqrt(s_d² / n + σ²_shared). (Adding the whole
  Var*(Δ) instead would count each model's own test noise twice.)
* 95 % interval Δ ± t_{n−1, 0.975} · SE and a two-sided p-value from the same t statistic with n − 1 degrees of
  freedom (with σ²_test = 0 this is exactly scipy's paired t-test and its interval).
* The family of one comparison (one variant vs one baseline on one test set) is :data:`FAMILY`; its p-values are
  Holm-adjusted, and a verdict ("better" / "worse") needs a Holm-adjusted p < 0.05. Otherwise "no clear
  difference". With fewer than :data:`MIN_MODELS` paired models there is no interval and no verdict.
* P(improvement) = the fraction of paired models in which the variant has the lower (better) value, with an
  exact (Clopper–Pearson) 95 % interval (scipy.stats.binomtest) — the paired form of rliable's probability of
  improvement (Agarwal et al. 2021).
* The maximum error gets no interval (a bootstrap of a sample maximum is not valid): mean ± std only.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..run.metrics import MEV, cvar

# the metrics of one comparison whose p-values are Holm-adjusted together (lower is better for every one)
FAMILY = ("energy_mae_mev_per_atom", "force_mae_mev_A", "force_rmse_mev_A", "force_err_p99_mev_A",
          "force_err_cvar1_mev_A")
DESCRIPTIVE = ("force_err_max_mev_A",)  # reported as mean ± std, never with an interval
BOOTSTRAP_METRICS = FAMILY + DESCRIPTIVE
MIN_MODELS = 3
ALPHA = 0.05
EVENT_PREFIX = "force_events_above_"  # force_events_above_<t>_pct: % of atoms with error > t meV/Å (fixed t)


@dataclass
class StructureErrors:
    """Per-structure sufficient statistics of one run on one test set (for fast resampling)."""

    e_abs_per_atom: np.ndarray | None  # [F] |ΔE|/n meV/atom
    f_abs_sum: np.ndarray | None  # [F] Σ |ΔF component| meV/Å
    f_sq_sum: np.ndarray | None  # [F] Σ ΔF² (meV/Å)²
    atom_err: np.ndarray | None  # [A] per-atom error norm meV/Å
    ptr: np.ndarray  # [F+1]

    @classmethod
    def from_arrays(cls, e_pred, e_ref, f_pred, f_ref, ptr) -> StructureErrors:
        ptr = np.asarray(ptr, np.int64)
        n = np.diff(ptr).astype(np.float64)
        e = None if e_ref is None else np.abs(np.asarray(e_pred) - np.asarray(e_ref)) * MEV / n
        if f_ref is None:
            return cls(e, None, None, None, ptr)
        d = (np.asarray(f_pred, np.float64) - np.asarray(f_ref, np.float64)) * MEV
        starts = ptr[:-1]
        return cls(e, np.add.reduceat(np.abs(d).sum(-1), starts), np.add.reduceat((d**2).sum(-1), starts),
                   np.linalg.norm(d, axis=-1), ptr)

    @classmethod
    def from_predictions(cls, npz, set_name: str) -> StructureErrors:
        def g(k):
            key = f"{set_name}__{k}"
            return npz[key] if key in npz else None

        return cls.from_arrays(g("energy_pred"), g("energy_ref"), g("forces_pred"), g("forces_ref"), g("ptr"))

    @property
    def n_structures(self) -> int:
        return len(self.ptr) - 1

    def _atoms(self, idx: np.ndarray) -> np.ndarray:
        counts = np.diff(self.ptr)[idx]
        starts = self.ptr[:-1][idx]
        offs = np.repeat(starts - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
        return self.atom_err[offs + np.arange(int(counts.sum()))]

    def metrics(self, names: Sequence[str], idx: np.ndarray | None = None) -> dict[str, float]:
        """The named metrics on the structures ``idx`` (all when None); nan where the labels are missing."""
        if idx is None:
            idx = np.arange(self.n_structures)
        out: dict[str, float] = {}
        atoms = None
        n_comp = 3.0 * np.diff(self.ptr)[idx].sum()
        for name in names:
            if name.startswith("energy"):
                out[name] = float("nan") if self.e_abs_per_atom is None else float(self.e_abs_per_atom[idx].mean())
                continue
            if self.atom_err is None:
                out[name] = float("nan")
            elif name == "force_mae_mev_A":
                out[name] = float(self.f_abs_sum[idx].sum() / n_comp)
            elif name == "force_rmse_mev_A":
                out[name] = float(np.sqrt(self.f_sq_sum[idx].sum() / n_comp))
            else:
                atoms = self._atoms(idx) if atoms is None else atoms
                if name == "force_err_p99_mev_A":
                    out[name] = float(np.percentile(atoms, 99))
                elif name == "force_err_max_mev_A":
                    out[name] = float(atoms.max())
                elif name == "force_err_cvar1_mev_A":
                    out[name] = cvar(atoms, 0.01)
                elif name == "force_err_mean_mev_A":
                    out[name] = float(atoms.mean())
                elif name.startswith(EVENT_PREFIX):
                    out[name] = 100.0 * float((atoms > event_threshold(name)).mean())
                else:
                    raise KeyError(f"no bootstrap rule for metric '{name}'")
        return out


def event_metric(threshold_mev_A: float) -> str:
    """The metric name of the % of atoms whose force error exceeds a fixed ``threshold_mev_A``."""
    return f"{EVENT_PREFIX}{float(threshold_mev_A):.6g}_pct"


def event_threshold(name: str) -> float:
    return float(name[len(EVENT_PREFIX):-len("_pct")])


def resample_indices(n_structures: dict[Hashable, int], n_boot: int, seed: int) -> dict[Hashable, list[np.ndarray]]:
    """Bootstrap resamples of the test structures, one list per stratum (split): the same resamples for every
    model of that stratum, so paired differences are resampled together."""
    out = {}
    for k, (stratum, n) in enumerate(sorted(n_structures.items(), key=lambda kv: str(kv[0]))):
        rng = np.random.default_rng([int(seed), k])
        out[stratum] = [rng.integers(0, n, size=n) for _ in range(n_boot)]
    return out


def model_values(errs: StructureErrors, metrics: Sequence[str], resamples: list[np.ndarray]
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(point values [M], bootstrap values [B, M]) of one model."""
    point = errs.metrics(metrics)
    boot = [errs.metrics(metrics, idx) for idx in resamples]
    return (np.array([point[m] for m in metrics]), np.array([[b[m] for m in metrics] for b in boot]).reshape(
        len(resamples), len(metrics)))


@dataclass
class Difference:
    """Δ = mean_i (other_i − base_i) over paired models, with its interval, p-value and P(improvement)."""

    metric: str
    n_models: int
    diff: float
    rel: float  # Δ / mean(base)
    se_models: float = math.nan
    se_test: float = math.nan
    se: float = math.nan
    lo: float = math.nan
    hi: float = math.nan
    p: float = math.nan
    p_holm: float = math.nan
    p_improve: float = math.nan
    p_improve_lo: float = math.nan
    p_improve_hi: float = math.nan
    in_family: bool = True
    verdict: str = ""
    per_model: list[float] = field(default_factory=list)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def t_interval(d: np.ndarray, var_test: float = 0.0, level: float = 0.95) -> tuple[float, float, float, float]:
    """(se, lo, hi, p) of mean(d) with SE² = var(d)/n + var_test and n − 1 degrees of freedom."""
    from scipy import stats

    n = len(d)
    mean = float(np.mean(d))
    se = math.sqrt(float(np.var(d, ddof=1)) / n + max(float(var_test), 0.0))
    q = float(stats.t.ppf(0.5 + level / 2, n - 1))
    if se == 0.0:
        return 0.0, mean, mean, (1.0 if mean == 0.0 else 0.0)
    p = float(2 * stats.t.sf(abs(mean) / se, n - 1))
    return se, mean - q * se, mean + q * se, p


def shared_test_variance(d_boot: np.ndarray) -> float:
    """The part of the test-set variance of Δ = mean_i d_i that all paired models share: the mean covariance
    between different models' d under the same structure resamples, (n·Var*(Δ) − mean_i Var*(d_i)) / (n − 1),
    floored at 0. ``d_boot`` [n models, B resamples]."""
    n, b = d_boot.shape
    if n < 2 or b < 2:
        return 0.0
    var_mean = float(np.var(d_boot.mean(axis=0), ddof=1))
    mean_var = float(np.mean(np.var(d_boot, axis=1, ddof=1)))
    return max(0.0, (n * var_mean - mean_var) / (n - 1))


def probability_of_improvement(d: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """(fraction of paired models with d < 0, ties counted half; exact binomial interval, with ties spanning the
    intervals of counting them all as losses and all as wins) — lower metric values are better."""
    from scipy import stats

    k, ties, n = int(np.sum(d < 0)), int(np.sum(d == 0)), len(d)
    lo = stats.binomtest(k, n).proportion_ci(confidence_level=level, method="exact").low
    hi = stats.binomtest(k + ties, n).proportion_ci(confidence_level=level, method="exact").high
    return (k + 0.5 * ties) / n, float(lo), float(hi)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (step-down; monotone; capped at 1); NaN entries stay NaN."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = len(ok)
    running = 0.0
    for rank, j in enumerate(ok[np.argsort(p[ok], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[j]))
        out[j] = running
    return out.tolist()


def compare_models(base: Sequence[tuple[np.ndarray, np.ndarray]], other: Sequence[tuple[np.ndarray, np.ndarray]],
                   metrics: Sequence[str], level: float = 0.95, alpha: float = ALPHA,
                   family: Sequence[str] = FAMILY) -> dict[str, Difference]:
    """Paired comparison from :func:`model_values` of each model (base[i] and other[i] are one pair; pairs of one
    split must share their bootstrap resamples). Metrics outside ``family`` and :data:`DESCRIPTIVE` get intervals
    but no Holm adjustment (verdict from their own p); descriptive ones get neither."""
    if len(base) != len(other) or not base:
        raise ValueError("compare_models needs the same (non-zero) number of paired models on both sides")
    n = len(base)
    bp = np.stack([b[0] for b in base])  # [n, M]
    op = np.stack([o[0] for o in other])
    d_boot = np.stack([o[1] - b[1] for b, o in zip(base, other, strict=True)])  # [n, B, M]: d_i per resample
    out: dict[str, Difference] = {}
    for j, m in enumerate(metrics):
        d = op[:, j] - bp[:, j]
        if np.isnan(d).any():
            continue
        base_mean = float(np.mean(bp[:, j]))
        r = Difference(m, n, float(np.mean(d)), float(np.mean(d)) / base_mean if base_mean else math.nan,
                       in_family=m in family, per_model=d.tolist())
        if m in DESCRIPTIVE:
            r.in_family, r.verdict = False, "descriptive only"
        elif n < MIN_MODELS:
            r.verdict = f"need ≥ {MIN_MODELS} paired models"
        else:
            var_test = shared_test_variance(d_boot[:, :, j])
            r.se, r.lo, r.hi, r.p = t_interval(d, var_test, level)
            r.se_models, r.se_test = float(np.std(d, ddof=1) / math.sqrt(n)), math.sqrt(var_test)
            r.p_improve, r.p_improve_lo, r.p_improve_hi = probability_of_improvement(d, level)
        out[m] = r
    fam = [m for m in out if out[m].in_family and not math.isnan(out[m].p)]
    for m, ph in zip(fam, holm([out[m].p for m in fam]), strict=True):
        out[m].p_holm = ph
    for r in out.values():
        if r.verdict:
            continue
        p = r.p_holm if r.in_family else r.p
        r.verdict = ("better" if r.diff < 0 else "worse") if p < alpha else "no clear difference"
    return out
