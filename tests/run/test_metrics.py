"""Metric functions against hand-computed values on small arrays."""

import math

import numpy as np
import pytest

from mara_bench.run import metrics as M


def test_energy_metrics_by_hand():
    m = M.energy_metrics(np.array([1.0, 2.0]), np.array([1.001, 1.996]), np.array([1, 2]))
    # errors -1 meV and +4 meV; per atom -1 and +2 meV/atom
    assert m["energy_mae_mev"] == pytest.approx(2.5)
    assert m["energy_rmse_mev"] == pytest.approx(math.sqrt((1 + 16) / 2))
    assert m["energy_mae_mev_per_atom"] == pytest.approx(1.5)
    assert m["energy_rmse_mev_per_atom"] == pytest.approx(math.sqrt(2.5))


def _forces_case():
    # 2 structures: atoms 0-2 and 3-4. Errors (eV/Å) chosen so that norms are 0.003, 0.004 (3-4-5), ...
    ref = np.zeros((5, 3))
    pred = np.array([[0.003, 0, 0], [0, 0.004, 0], [0.003, 0.004, 0], [0, 0, 0.001], [0, 0, -0.1]])
    return pred, ref, np.array([0, 3, 5]), np.array([1, 6, 1, 8, 1])


def test_force_metrics_by_hand():
    pred, ref, ptr, z = _forces_case()
    m = M.force_metrics(pred, ref, ptr, z, abs_thresholds=(4.5,))
    comp = np.abs(pred * 1000).ravel()
    assert m["force_mae_mev_A"] == pytest.approx(comp.mean())  # (3+4+3+4+1+100)/15 = 7.666...
    assert m["force_mae_mev_A"] == pytest.approx(115 / 15)
    assert m["force_rmse_mev_A"] == pytest.approx(math.sqrt((9 + 16 + 9 + 16 + 1 + 10000) / 15))
    norms = np.array([3.0, 4.0, 5.0, 1.0, 100.0])  # meV/Å
    # numpy linear percentile of sorted [1,3,4,5,100]: P50 = 4, P90 = 5 + 0.6*95 = 62
    assert m["force_err_p50_mev_A"] == pytest.approx(4.0)
    assert m["force_err_p90_mev_A"] == pytest.approx(62.0)
    assert m["force_err_p99_9_mev_A"] == pytest.approx(np.percentile(norms, 99.9))
    assert m["force_err_max_mev_A"] == pytest.approx(100.0)
    assert m["force_err_cvar1_mev_A"] == pytest.approx(100.0)  # ceil(0.05) = 1 largest
    ev = m["events"]
    # 3x MAE = 23 meV/Å: only the 100 meV/Å atom (structure 2) is above
    assert ev["3x_mae"]["atom_fraction"] == pytest.approx(1 / 5)
    assert ev["3x_mae"]["structure_fraction"] == pytest.approx(1 / 2)
    # absolute 4.5 meV/Å: atoms with 5 and 100 -> 2/5 atoms, both structures
    assert ev["4.5_mev_A"]["atom_fraction"] == pytest.approx(2 / 5)
    assert ev["4.5_mev_A"]["structure_fraction"] == pytest.approx(1.0)
    pe = m["per_element_force_mae_mev_A"]
    assert pe["6"] == pytest.approx(4 / 3) and pe["8"] == pytest.approx(1 / 3)
    assert pe["1"] == pytest.approx((3 + 3 + 4 + 100) / 9)


def test_cvar_takes_mean_of_top_share():
    v = np.arange(1, 201, dtype=float)  # 200 values: ceil(2) top values = 199, 200
    assert M.cvar(v, 0.01) == pytest.approx(199.5)
    assert M.cvar(np.array([5.0]), 0.01) == 5.0


def test_worst_structures_and_energy_only():
    pred, ref, ptr, z = _forces_case()
    full = M.all_metrics({"energy_pred": np.array([1.0, 2.0]), "energy_ref": np.array([1.0, 2.01]),
                          "forces_pred": pred, "forces_ref": ref, "ptr": ptr, "numbers": z,
                          "frame_index": np.array([17, 42])})
    w = full["worst_structures"]
    assert [r["index"] for r in w] == [42, 17]
    assert w[0]["max_force_err_mev_A"] == pytest.approx(100.0)
    assert w[0]["energy_abs_err_mev"] == pytest.approx(10.0)
    assert full["zero_force_mae_mev_A"] == pytest.approx(0.0)
    e_only = M.all_metrics({"energy_pred": np.array([1.0]), "energy_ref": np.array([1.002]), "forces_pred": None,
                            "forces_ref": None, "ptr": np.array([0, 2]), "numbers": np.array([1, 1]),
                            "frame_index": np.array([0])})
    assert e_only["energy_only"] and "force_mae_mev_A" not in e_only
    assert e_only["energy_mae_mev_per_atom"] == pytest.approx(1.0)
