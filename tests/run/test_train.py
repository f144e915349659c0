"""The training loop with a tiny real backbone on Lennard-Jones-labelled clusters: it learns, logs, stops,
refuses NaN, and the rotated-test evaluation of an exactly invariant model equals the unrotated one."""

import csv
import math

import numpy as np
import pytest
import torch
from tiny_backbone import TinyPairModel, make_lj_frames

from mara_bench.backbone import TRAIN_DEFAULTS
from mara_bench.graph import build_graph
from mara_bench.run.evaluate import evaluate_run, rotated_copy
from mara_bench.run.train import TrainingDiverged, loss_weights, stage_of, train


def graphs(n, seed):
    return [build_graph(a.numbers, a.positions, 4.0, energy=a.info["energy"], forces=a.arrays["forces"], index=k)
            for k, a in enumerate(make_lj_frames(n, seed))]


@pytest.fixture(scope="module")
def data():
    return graphs(24, 0), graphs(8, 1), graphs(10, 2)


def opts(**kw):
    o = {**TRAIN_DEFAULTS, "max_epochs": 4, "batch_size": 4, "lr": 0.005, "ema_decay": 0.9}
    o.update(kw)
    return o


def model(dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    return TinyPairModel({}, r_max=4.0, hidden=8).to(dtype)


def test_training_reduces_loss_and_writes_log(data, tmp_path):
    tr, va, _ = data
    m = model()
    res = train(m, tr, va, opts(max_epochs=6), seed=0, dtype=torch.float64, device="cpu", run_dir=tmp_path,
                progress=False)
    rows = list(csv.DictReader(open(tmp_path / "train_log.csv")))
    assert len(rows) == 6 and res.epochs == 6 and res.stopped == "max_epochs"
    assert set(rows[0]) == {"epoch", "train_loss", "val_loss", "val_energy_mae_mev_per_atom", "val_force_mae_mev_A",
                            "lr", "epoch_time_s", "stage", "train_flops_cum", "epoch_cpu_s"}
    flops = [int(r["train_flops_cum"]) for r in rows]
    assert flops[0] > 0 and flops == [flops[0] * (k + 1) for k in range(6)]  # cumulative, deterministic
    assert res.cost["flops_per_epoch"] == flops[0] and res.cost["train_flops"] == flops[-1]
    assert float(rows[-1]["train_loss"]) < 0.5 * float(rows[0]["train_loss"])
    assert res.best_state is not None and 1 <= res.best_epoch <= 6
    assert (tmp_path / "checkpoint.pt").exists()


def test_stage_two_weights_and_early_stop_and_time_limit(data, tmp_path):
    o = opts(max_epochs=10, stage2_start=0.5, stage2_energy_weight=7.0, stage2_forces_weight=3.0)
    assert loss_weights(o, 4) == (1.0, 1000.0) and loss_weights(o, 5) == (7.0, 3.0)
    tr, va, _ = data
    res = train(model(), tr, va, opts(max_epochs=50, lr=0.0, early_stopping_patience=2), seed=0,
                dtype=torch.float64, device="cpu", run_dir=tmp_path / "a", progress=False)
    assert res.stopped == "early_stopping" and res.epochs < 50
    res = train(model(), tr, va, opts(max_epochs=50, time_limit_s=1e-9), seed=0, dtype=torch.float64,
                device="cpu", run_dir=tmp_path / "b", progress=False)
    assert res.stopped == "time_limit" and res.epochs == 1


def test_stage_two_restarts_model_selection_and_scheduler(data, tmp_path):
    """Stage-two weights 1000x larger make every stage-two validation loss larger than any stage-one loss. The kept
    model must still come from stage two (losses are compared only under equal weights), and the jump in the loss
    must not cut the learning rate (patience 0 would cut it at once if the scheduler remembered stage one)."""
    tr, va, _ = data
    o = opts(max_epochs=8, stage2_start=0.5, stage2_energy_weight=1000.0, stage2_forces_weight=1e6,
             scheduler_patience=0, scheduler_factor=0.5, lr=0.002)
    assert [stage_of(o, e) for e in range(8)] == [1, 1, 1, 1, 2, 2, 2, 2]
    res = train(model(), tr, va, o, seed=0, dtype=torch.float64, device="cpu", run_dir=tmp_path, progress=False)
    rows = list(csv.DictReader(open(tmp_path / "train_log.csv")))
    val = [float(r["val_loss"]) for r in rows]
    assert [int(r["stage"]) for r in rows] == [1, 1, 1, 1, 2, 2, 2, 2]
    assert min(val[4:]) > max(val[:4])  # the scale change the old rule tripped over
    assert res.best_epoch >= 5, f"kept epoch {res.best_epoch} is from stage one"
    assert res.best_val_loss == pytest.approx(min(val[4:]))
    assert float(rows[4]["lr"]) == float(rows[3]["lr"]), "the loss jump at the switch cut the learning rate"
    # killed right after the last stage-one epoch, then resumed: the same kept model
    import mara_bench.run.train as train_mod

    calls, real = [0], train_mod.validate

    def dying_validate(*a, **k):
        calls[0] += 1
        if calls[0] == 5:  # the first stage-two validation: the checkpoint holds epoch 4
            raise KeyboardInterrupt
        return real(*a, **k)

    train_mod.validate = dying_validate
    try:
        with pytest.raises(KeyboardInterrupt):
            train(model(), tr, va, o, seed=0, dtype=torch.float64, device="cpu", run_dir=tmp_path / "r",
                  progress=False)
    finally:
        train_mod.validate = real
    again = train(model(), tr, va, o, seed=0, dtype=torch.float64, device="cpu", run_dir=tmp_path / "r",
                  progress=False)
    assert again.resumed_from_epoch == 4
    assert (again.best_epoch, again.best_val_loss) == (res.best_epoch, res.best_val_loss)


def test_nan_loss_stops_with_diagnostic_and_keeps_checkpoint(data, tmp_path):
    tr, va, _ = data
    train(model(), tr, va, opts(max_epochs=1), seed=0, dtype=torch.float64, device="cpu", run_dir=tmp_path,
          progress=False)
    before = (tmp_path / "checkpoint.pt").read_bytes()
    bad = model()
    with torch.no_grad():
        bad.readout.weight.fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match="became nan at epoch 1, batch 1"):
        train(bad, tr, va, opts(max_epochs=2), seed=0, dtype=torch.float64, device="cpu", run_dir=tmp_path / "x",
              progress=False)
    assert (tmp_path / "checkpoint.pt").read_bytes() == before


def test_float32_training_runs(data, tmp_path):
    tr, va, _ = data
    m = model(torch.float32)
    res = train(m, tr, va, opts(max_epochs=2), seed=0, dtype=torch.float32, device="cpu", run_dir=tmp_path,
                progress=False)
    assert all(v.dtype == torch.float32 for v in res.best_state.values() if v.is_floating_point())
    assert math.isfinite(res.best_val_loss)


def test_rotated_test_of_invariant_model_equals_unrotated(data, tmp_path):
    tr, va, te = data
    m = model()
    train(m, tr, va, opts(max_epochs=2), seed=0, dtype=torch.float64, device="cpu", run_dir=tmp_path,
          progress=False)
    out = evaluate_run(m, {"test": te}, tmp_path, dtype=torch.float64, device="cpu", batch_size=4, seed=3)
    a, b = out["test_sets"]["test"], out["test_sets"]["test_rotated"]
    # every rotation-invariant metric agrees (the component MAE is not rotation invariant, so it may differ)
    for k in ("energy_mae_mev", "energy_rmse_mev", "force_rmse_mev_A", "force_err_mean_mev_A", "force_err_p50_mev_A",
              "force_err_p99_mev_A", "force_err_max_mev_A", "force_err_cvar1_mev_A"):
        assert abs(a[k] - b[k]) <= 1e-6, k
    sym = out["symmetry"]
    assert sym["energy_max_abs"] < 1e-10 and sym["forces_max_abs"] < 1e-10 and sym["reflection"]
    # the rotation really moved the structures
    rot = rotated_copy(te, seed=3 + 7919)
    assert np.abs(rot[0].positions - te[0].positions).max() > 1e-2
    pred = np.load(tmp_path / "predictions.npz")
    assert set(pred["sets"]) == {"test", "test_rotated"} and pred["test__forces_pred"].shape == (
        sum(len(g.numbers) for g in te), 3)
