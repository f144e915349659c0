"""Paired bootstrap confidence intervals for differences between MARA variants.

Rule (also written into every compare report): for a metric m and a variant v, the difference is
Δ = mean over seeds of [m(v, seed) − m(off, seed)]. Its 95 % interval comes from a paired bootstrap: the test
structures are resampled with replacement (the same resample for every variant and every seed, because all runs
of one split see the same test structures), Δ is recomputed on each resample, and the 2.5 / 97.5 percentiles
are the interval. A difference is called significant only if the interval excludes zero. Seed-to-seed spread is
reported separately as mean ± std over seeds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .metrics import MEV, cvar

BOOTSTRAP_METRICS = ("energy_mae_mev_per_atom", "force_mae_mev_A", "force_rmse_mev_A", "force_err_p99_mev_A",
                     "force_err_max_mev_A", "force_err_cvar1_mev_A")


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
                else:
                    raise KeyError(f"no bootstrap rule for metric '{name}'")
        return out


def paired_bootstrap(base: Sequence[StructureErrors], other: Sequence[StructureErrors],
                     metrics: Sequence[str] = BOOTSTRAP_METRICS, n_boot: int = 1000, seed: int = 0,
                     level: float = 0.95) -> dict[str, dict[str, float]]:
    """Δ = mean_seeds(m(other) − m(base)) with a paired bootstrap CI over test structures (seeds paired by
    position in the two lists). Returns per metric: diff, rel (Δ / mean base), lo, hi, significant."""
    if len(base) != len(other) or not base:
        raise ValueError("paired_bootstrap needs the same (non-zero) number of runs on both sides")
    n = base[0].n_structures
    if any(r.n_structures != n for r in (*base, *other)):
        raise ValueError("paired runs must have the same test structures")
    rng = np.random.default_rng(seed)
    samples = [rng.integers(0, n, size=n) for _ in range(n_boot)]
    metrics = list(metrics)
    b0 = [r.metrics(metrics) for r in base]
    o0 = [r.metrics(metrics) for r in other]
    boots = {m: np.empty(n_boot) for m in metrics}
    for k, s in enumerate(samples):
        bs = [r.metrics(metrics, s) for r in base]
        os_ = [r.metrics(metrics, s) for r in other]
        for m in metrics:
            boots[m][k] = np.mean([o[m] - b[m] for b, o in zip(bs, os_, strict=True)])
    out = {}
    for m in metrics:
        bm = np.array([d[m] for d in b0])
        om = np.array([d[m] for d in o0])
        if np.isnan(bm).any() or np.isnan(om).any():
            continue
        diff = float(np.mean(om - bm))
        lo, hi = np.percentile(boots[m], [100 * (1 - level) / 2, 100 * (1 + level) / 2])
        out[m] = {"diff": diff, "rel": diff / float(np.mean(bm)) if np.mean(bm) else float("nan"),
                  "lo": float(lo), "hi": float(hi), "significant": bool(lo > 0 or hi < 0)}
    return out
