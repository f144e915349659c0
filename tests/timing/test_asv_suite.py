"""The asv suite in benchmarks/ is discoverable and well-formed (`asv check --python=same`, as CI runs it)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "benchmarks"

pytestmark = pytest.mark.skipif(importlib.util.find_spec("asv") is None,
                                reason="asv is not installed in this environment (pip install asv)")


def _asv(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "asv", *args], cwd=BENCH, capture_output=True, text=True,
                          timeout=timeout)


def test_asv_check_passes():
    p = _asv("check", "--python=same")
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    assert "No problems found" in out, out


def test_asv_discovers_the_expected_benchmarks(tmp_path):
    from asv import benchmark  # noqa: F401  (the runner script asv itself uses)

    runner = Path(importlib.util.find_spec("asv").origin).parent / "benchmark.py"
    out = tmp_path / "bench.json"
    p = subprocess.run([sys.executable, str(runner), "discover", str(BENCH / "benchmarks"), str(out)], cwd=BENCH,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    names = {json.loads(line)["name"] if line.startswith("{") else None for line in out.read_text().splitlines()}
    if None in names:  # asv writes one JSON list in some versions
        names = {b["name"] for b in json.loads(out.read_text())}
    expected = {"model_step.ForwardForces.time_forward_forces", "model_step.TrainStep.time_train_step",
                "model_step.ForwardForces.peakmem_forward_forces", "model_step.TrainStep.peakmem_train_step",
                "accuracy.SmokeAccuracy.track_force_mae", "accuracy.SmokeAccuracy.track_force_p99",
                "mara_kernel_bench.MaraKernel.time_fwd_bwd",
                "mara_kernel_bench.MaraKernelRatio.track_speedup_vs_attention_s2",
                "mara_overhead.MaraEndToEnd.track_train_paper_over_off",
                "mara_overhead.MaraEndToEnd.track_train_reference_over_paper",
                "mara_overhead.MaraEndToEnd.track_infer_paper_over_off"}
    assert expected <= names, sorted(names)


def test_asv_config_uses_the_existing_environment():
    text = (BENCH / "asv.conf.json").read_text()
    body = "\n".join(line for line in text.splitlines() if not line.strip().startswith("//"))
    conf = json.loads(body)
    assert conf["environment_type"] == "existing" and conf["repo"] == ".."
    assert (BENCH / conf["benchmark_dir"] / "__init__.py").is_file()


def test_end_to_end_ratio_benchmark_measures_paired_ratios(monkeypatch):
    """The tracked numbers come from a real interleaved sweep (MACE smoke here, to keep the test short)."""
    pytest.importorskip("mace", reason="mace-torch is not installed")
    pytest.importorskip("torch_harmonics", reason="torch-harmonics is not installed")
    sys.path.insert(0, str(BENCH))
    try:
        from benchmarks import mara_overhead
    finally:
        sys.path.remove(str(BENCH))
    monkeypatch.setattr(mara_overhead, "RATIO_PRESET", "smoke")
    monkeypatch.setattr(mara_overhead, "ATOMS", 20)
    monkeypatch.setattr(mara_overhead, "REPEATS", 2)
    monkeypatch.setattr(mara_overhead, "RATIO_BACKBONES", ["mace"])
    cache = mara_overhead._sweep_all()
    bench = mara_overhead.MaraEndToEnd()
    bench.setup(cache, "mace")
    for name in ("track_train_paper_over_off", "track_train_reference_over_paper", "track_infer_paper_over_off"):
        value = getattr(bench, name)(cache, "mace")
        assert isinstance(value, float) and value > 0, (name, value)
    assert bench.track_train_paper_over_off(cache, "mace") > 1.0  # the gate costs something


def test_accuracy_benchmark_reads_the_run_folders_metrics_file(monkeypatch, tmp_path):
    """SmokeAccuracy reads what run_config wrote under the name run.layout owns (METRICS), not a literal."""
    from mara_bench.atomic import atomic_write_json
    from mara_bench.run import layout, pipeline

    sys.path.insert(0, str(BENCH))
    try:
        from benchmarks import accuracy
    finally:
        sys.path.remove(str(BENCH))
    monkeypatch.setattr(layout, "METRICS", "renamed_metrics.json")

    def fake_run_config(cfg, force=False, progress=True):
        rd = tmp_path / f"{cfg.backbone}-{cfg.mara}"
        atomic_write_json(rd / layout.METRICS, {"test_sets": {"test": {"force_mae_mev_A": 1.5,
                                                                       "force_err_p99_mev_A": 7.0}}})
        return rd

    monkeypatch.setattr(pipeline, "run_config", fake_run_config)
    monkeypatch.setattr(accuracy, "ACC_BACKBONES", ["mace"])
    cache = accuracy._train_all()
    bench = accuracy.SmokeAccuracy()
    for v in accuracy.VARIANTS:
        bench.setup(cache, "mace", v)
        assert bench.track_force_mae(cache, "mace", v) == 1.5 and bench.track_force_p99(cache, "mace", v) == 7.0
