"""Deterministic training cost (mara_bench.run.cost): FLOPs of a training step are identical across repeated runs and
scale with the batch as the arithmetic says; a FLOP budget sets the epochs and scales the epoch-based schedules; an
interrupted equal-compute comparison resumes and reuses."""

import subprocess
import sys
from pathlib import Path

import pytest
import tiny_backbone  # noqa: E402
import torch
from tiny_backbone import TinyPairModel, make_lj_frames  # noqa: E402

from mara_bench.backbone import TRAIN_DEFAULTS  # noqa: E402
from mara_bench.errors import UserError  # noqa: E402
from mara_bench.graph import build_graph  # noqa: E402
from mara_bench.run.cost import budget_epochs, budget_options, epoch_flops, inference_flops, train_step_flops  # noqa: E402
from mara_bench.run.train import check_options, train  # noqa: E402

SCRIPT = str(Path(__file__).resolve().parents[1] / "tiny_backbone.py")


def graphs(n, seed=0):
    return [build_graph(a.numbers, a.positions, 4.0, energy=a.info["energy"], forces=a.arrays["forces"], index=k)
            for k, a in enumerate(make_lj_frames(n, seed))]


def tiny(variant="off", seed=0):
    torch.manual_seed(seed)
    return TinyPairModel({}, r_max=4.0, hidden=16, mara=variant)


@pytest.mark.parametrize("variant", ["off", "paper"])
def test_train_step_flops_are_deterministic_and_affine_in_the_batch(variant):
    g = graphs(4)
    counts = [train_step_flops(tiny(variant, seed=s), g, 4, torch.float32, "cpu")["flops_per_step"] for s in (0, 1, 0)]
    assert counts[0] == counts[1] == counts[2] > 0  # weights and repetition do not matter
    one = g[:1]
    f = [train_step_flops(tiny(variant), one * k, k, torch.float32, "cpu")["flops_per_step"] for k in (1, 2, 3, 4)]
    # k copies of one frame: a constant (weight-only products) plus k times the per-frame work
    assert f[1] - f[0] == f[2] - f[1] == f[3] - f[2] > 0
    assert train_step_flops(tiny(variant).double(), g, 4, torch.float64, "cpu")["flops_per_step"] == counts[0]


def test_mace_smoke_step_flops_include_the_double_backward():
    from mara_bench_backbones.mace import MACEBackbone

    from mara_bench.testing import KitStats

    b = MACEBackbone()
    opts = dict(b.presets["smoke"]["model"])
    g = graphs(2)
    torch.manual_seed(0)
    m = b.build(opts, KitStats(), None, torch.float32)
    step = train_step_flops(m, g, 2, torch.float32, "cpu")["flops_per_step"]
    torch.manual_seed(0)
    m2 = b.build(opts, KitStats(), None, torch.float32)
    assert train_step_flops(m2, g, 2, torch.float32, "cpu")["flops_per_step"] == step
    inf = inference_flops(m, g, 2, torch.float32, "cpu")["flops_per_structure"] * 2
    assert step > 1.5 * inf > 0  # forces need one backward; training adds the backward of that backward


def test_budget_sets_epochs_and_scales_schedules():
    o = {**TRAIN_DEFAULTS, "max_epochs": 15, "scheduler_patience": 5, "early_stopping_patience": 4,
         "stage2_start": 0.7}
    assert budget_options(o, 100) is o  # no budget: unchanged
    b = budget_options({**o, "budget_flops": 15 * 100 * 3.2}, 100)
    assert b["max_epochs"] == 48 and b["scheduler_patience"] == 16 and b["early_stopping_patience"] == 13
    assert budget_epochs(149, 100) == 1 and budget_epochs(151, 100) == 2 and budget_epochs(1, 100) == 1
    for bad in (0, -1.0, "lots", float("inf"), True):
        with pytest.raises(UserError, match="budget_flops"):
            check_options({**o, "budget_flops": bad}, "test")


def test_training_under_a_flop_budget(tmp_path):
    tr, va = graphs(12, 0), graphs(4, 1)
    step = train_step_flops(tiny().double(), tr, 4, torch.float64, "cpu")
    fpe = epoch_flops(step, len(tr))
    o = {**TRAIN_DEFAULTS, "max_epochs": 2, "batch_size": 4, "lr": 0.005, "budget_flops": 5.2 * fpe}
    res = train(tiny().double(), tr, va, o, seed=0, dtype=torch.float64, device="cpu", run_dir=tmp_path, progress=False)
    assert res.epochs == 5 and res.cost["train_flops"] == 5 * fpe and res.cost["flops_per_epoch"] == fpe
    assert res.cost["budget_flops"] == pytest.approx(5.2 * fpe) and res.cost["max_epochs"] == 5


def test_interrupted_equal_compute_comparison_resumes_and_reuses(tmp_path):
    data = tiny_backbone.write_lj_extxyz(tmp_path / "lj.xyz", 40, seed=3)
    cmd = [sys.executable, SCRIPT, "compare", "--backbone", "tiny", "--dataset", str(data), "--variants",
           "off,paper", "--seeds", "1", "--preset", "smoke", "--budget", "flops", "--bootstrap", "100",
           "--output-dir", str(tmp_path / "results"), "--quiet"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in p.stdout:  # kill it once the first run (paper, 3 epochs) has finished
        lines.append(line)
        if line.startswith("run tiny-paper"):
            p.kill()
            break
    p.wait(timeout=120)
    assert any("equal compute =" in ln for ln in lines), "".join(lines)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert r.stdout.count("already done") >= 1  # the finished run is reused
    runs = [d for d in (tmp_path / "results").iterdir() if (d / "metrics.json").exists()]
    assert len(runs) == 2 and "at equal FLOPs" in r.stdout
