"""Error metrics on predictions (numpy only). Inputs in eV and eV/Å; every reported number is in meV, meV/atom
or meV/Å (the key names say which).

Definitions (also in docs/protocol.md):

* energy MAE/RMSE per structure (meV) and per atom (|ΔE| / n_atoms, meV/atom);
* force MAE/RMSE over all Cartesian components (meV/Å); note that the component MAE is not rotation invariant
  (the L1 norm of a vector changes under rotation), the RMSE is;
* per-atom force error e_a = ||F_pred,a - F_ref,a||_2 (meV/Å); its mean (rotation invariant), percentiles P50/P90/P95/P99/P99.9 (numpy's
  linear interpolation), its maximum, and CVaR-1 % = the mean of the ceil(1 % · n_atoms) largest e_a;
* high-error event rates: fraction of atoms with e_a > t and fraction of structures with any atom e_a > t, for
  t = k × (this run's own component force MAE), k in {3, 5, 10}, and for absolute thresholds t (meV/Å);
* the 10 worst structures by their largest e_a (index in the split, max e_a, |ΔE|);
* force MAE per element (components of the atoms of that element).
"""

from __future__ import annotations

import math

import numpy as np

PERCENTILES = (50.0, 90.0, 95.0, 99.0, 99.9)
RELATIVE_FACTORS = (3, 5, 10)
ABSOLUTE_THRESHOLDS_MEV_A = (100.0, 300.0, 1000.0)
N_WORST = 10
MEV = 1000.0


def pct_key(p: float) -> str:
    """50 -> 'p50', 99.9 -> 'p99_9'."""
    return "p" + (f"{p:g}".replace(".", "_"))


def cvar(values: np.ndarray, alpha: float = 0.01) -> float:
    """Mean of the ceil(alpha·n) largest values (conditional value at risk of the upper tail)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        return float("nan")
    k = max(1, math.ceil(alpha * v.size - 1e-9))
    return float(np.mean(np.partition(v, v.size - k)[v.size - k :]))


def energy_metrics(e_pred: np.ndarray, e_ref: np.ndarray, n_atoms: np.ndarray) -> dict[str, float]:
    d = (np.asarray(e_pred, np.float64) - np.asarray(e_ref, np.float64)) * MEV
    dpa = d / np.asarray(n_atoms, np.float64)
    return {
        "energy_mae_mev": float(np.mean(np.abs(d))),
        "energy_rmse_mev": float(np.sqrt(np.mean(d**2))),
        "energy_mae_mev_per_atom": float(np.mean(np.abs(dpa))),
        "energy_rmse_mev_per_atom": float(np.sqrt(np.mean(dpa**2))),
    }


def atom_errors(f_pred: np.ndarray, f_ref: np.ndarray) -> np.ndarray:
    """Per-atom force error norms in meV/Å."""
    return np.linalg.norm((np.asarray(f_pred, np.float64) - np.asarray(f_ref, np.float64)) * MEV, axis=-1)


def event_rates(err: np.ndarray, ptr: np.ndarray, threshold: float) -> tuple[float, float]:
    """(fraction of atoms with err > threshold, fraction of structures with any such atom); structures are
    non-empty (ptr strictly increasing)."""
    above = err > threshold
    per_struct = np.add.reduceat(above.astype(np.int64), np.asarray(ptr[:-1], np.int64))
    return float(above.mean()), float((per_struct > 0).mean())


def force_metrics(f_pred: np.ndarray, f_ref: np.ndarray, ptr: np.ndarray, numbers: np.ndarray,
                  abs_thresholds=ABSOLUTE_THRESHOLDS_MEV_A) -> dict:
    ptr = np.asarray(ptr, np.int64)
    d = (np.asarray(f_pred, np.float64) - np.asarray(f_ref, np.float64)) * MEV
    mae = float(np.mean(np.abs(d)))
    err = np.linalg.norm(d, axis=-1)
    out: dict = {"force_mae_mev_A": mae, "force_rmse_mev_A": float(np.sqrt(np.mean(d**2)))}
    for p, v in zip(PERCENTILES, np.percentile(err, PERCENTILES), strict=True):
        out[f"force_err_{pct_key(p)}_mev_A"] = float(v)
    out["force_err_mean_mev_A"] = float(err.mean())
    out["force_err_max_mev_A"] = float(err.max())
    out["force_err_cvar1_mev_A"] = cvar(err, 0.01)
    events = {}
    for k in RELATIVE_FACTORS:
        a, s = event_rates(err, ptr, k * mae)
        events[f"{k}x_mae"] = {"threshold_mev_A": k * mae, "atom_fraction": a, "structure_fraction": s}
    for t in abs_thresholds:
        a, s = event_rates(err, ptr, float(t))
        events[f"{float(t):g}_mev_A"] = {"threshold_mev_A": float(t), "atom_fraction": a, "structure_fraction": s}
    out["events"] = events
    numbers = np.asarray(numbers)
    out["per_element_force_mae_mev_A"] = {
        str(int(z)): float(np.mean(np.abs(d[numbers == z]))) for z in np.unique(numbers)
    }
    return out


def worst_structures(err: np.ndarray, ptr: np.ndarray, e_abs_mev: np.ndarray | None, frame_index: np.ndarray,
                     n: int = N_WORST) -> list[dict]:
    ptr = np.asarray(ptr, np.int64)
    per = np.maximum.reduceat(err, ptr[:-1])
    order = np.argsort(-per, kind="stable")[:n]
    rows = []
    for k in order:
        row = {"index": int(frame_index[k]), "max_force_err_mev_A": float(per[k]),
               "n_atoms": int(ptr[k + 1] - ptr[k])}
        if e_abs_mev is not None:
            row["energy_abs_err_mev"] = float(e_abs_mev[k])
        rows.append(row)
    return rows


def all_metrics(pred: dict, abs_thresholds=ABSOLUTE_THRESHOLDS_MEV_A) -> dict:
    """Every metric for one test set. ``pred``: energy_pred/energy_ref [F] (or None), forces_pred/forces_ref
    [A, 3] (or None), ptr [F+1], numbers [A], frame_index [F]."""
    ptr = np.asarray(pred["ptr"], np.int64)
    n_atoms = np.diff(ptr)
    out: dict = {"n_structures": int(len(n_atoms)), "n_atoms": int(ptr[-1])}
    e_abs = None
    if pred.get("energy_ref") is not None:
        out.update(energy_metrics(pred["energy_pred"], pred["energy_ref"], n_atoms))
        e_abs = np.abs(np.asarray(pred["energy_pred"]) - np.asarray(pred["energy_ref"])) * MEV
    if pred.get("forces_ref") is not None:
        out.update(force_metrics(pred["forces_pred"], pred["forces_ref"], ptr, pred["numbers"], abs_thresholds))
        out["zero_force_mae_mev_A"] = float(np.mean(np.abs(np.asarray(pred["forces_ref"], np.float64))) * MEV)
        err = atom_errors(pred["forces_pred"], pred["forces_ref"])
        out["worst_structures"] = worst_structures(err, ptr, e_abs, np.asarray(pred["frame_index"]))
    else:
        out["energy_only"] = True
    return out
