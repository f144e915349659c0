"""Timing: FLOP counting, the GEMM probe and FLOP floors, the optional FLOP columns, MARA implementation arms."""

from __future__ import annotations

import copy

import pytest
import torch
from pair_backbones import PairModel, small_sweep

from mara_bench.run.cost import count_flops
from mara_bench.timing import measure as timing


def test_count_flops_is_exact_for_a_matmul_and_deterministic_for_a_training_step():
    a, b = torch.randn(30, 40), torch.randn(40, 50)
    assert count_flops(lambda: a @ b) == 2 * 30 * 40 * 50
    from mara_bench.backbone import TRAIN_DEFAULTS
    from mara_bench.run.train import make_optimizer
    from mara_bench.timing.sweep import inference_step, train_step
    from mara_bench.timing.systems import load_molecule, make_batch

    batch, _ = make_batch(load_molecule("ase:C6H6"), 24, 4.0, torch.float32)
    model = PairModel("paper", torch.float32)
    opt = make_optimizer(model, TRAIN_DEFAULTS)
    counts = [count_flops(lambda: train_step(model, batch, opt, TRAIN_DEFAULTS)) for _ in range(2)]
    inf = count_flops(lambda: inference_step(model, batch))
    assert counts[0] == counts[1] > inf > 0  # training adds the double backward and the parameter gradients


def test_gemm_probe_reports_a_positive_rate():
    g = timing.gemm_probe(n=64, repeats=3)
    assert g["gflops"] > 0 and g["best_gflops"] >= g["gflops"] and g["n"] == 64 and g["clock"] == "process_cpu"


def test_sweep_records_flops_floor_and_gemm_rate():
    res = small_sweep(sizes=(12,))
    assert timing.validate_timing(res) == []
    gemm = res["environment"]["gemm"]
    assert gemm["gflops"] > 0
    rows = {(r["variant"], r["mode"]): r for r in res["rows"]}
    for (_v, m), r in rows.items():
        assert r["flops"] > 0 and r["gflops_per_s"] > 0
        assert r["floor_ms"] == pytest.approx(r["flops"] / (gemm["gflops"] * 1e6))
        assert r["flops_vs_off"] == pytest.approx(r["flops"] / rows[("off", m)]["flops"])
    assert rows[("paper", "train")]["flops"] > rows[("off", "train")]["flops"]  # the test gate has a Linear
    assert rows[("paper", "train")]["flops"] > rows[("paper", "inference")]["flops"]
    assert small_sweep(sizes=(12,), flops=False)["rows"][0]["flops"] is None


def test_validator_checks_optional_columns_only_when_present():
    res = small_sweep(sizes=(12,), variants=("off",), modes=("inference",))
    old = copy.deepcopy(res)
    for k in timing.OPTIONAL_ROW_KEYS:
        old["rows"][0].pop(k)
    assert timing.validate_timing(old) == []  # results written before the FLOP columns stay valid
    res["rows"][0]["flops"] = "many"
    assert any("flops" in e for e in timing.validate_timing(res))


def test_arms_time_paper_once_per_implementation():
    from mara_bench.timing.sweep import arms

    assert arms(("off", "paper", "control"), ("folded", "reference")) == [
        ("off", "off", None), ("paper", "paper", "folded"), ("paper/reference", "paper", "reference"),
        ("control", "control", None)]
