"""Kill a training run with SIGKILL mid-epoch, re-run: it resumes from the last checkpoint and ends with the same
metrics as an uninterrupted run with the same seed; a run folder whose saved config differs is refused."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tiny_backbone  # noqa: E402
import torch

SCRIPT = str(Path(__file__).resolve().parents[1] / "tiny_backbone.py")
ARGS = ["--backbone", "tiny", "--preset", "smoke", "--set", "train.max_epochs=6", "--quiet"]


def _cmd(data, out):
    return [sys.executable, SCRIPT, "run", "--dataset", str(data), "--output-dir", str(out), *ARGS]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return tiny_backbone.write_lj_extxyz(tmp_path_factory.mktemp("d") / "lj.xyz", 300, seed=5)


def _run_dir(out: Path) -> Path:
    (d,) = [p for p in out.iterdir() if p.is_dir()]
    return d


def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(data, tmp_path):
    ref = subprocess.run(_cmd(data, tmp_path / "ref"), capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr
    m_ref = json.loads((_run_dir(tmp_path / "ref") / "metrics.json").read_text())

    out = tmp_path / "killed"
    proc = subprocess.Popen(_cmd(data, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    t0, killed_after = time.time(), None
    while time.time() - t0 < 240 and proc.poll() is None:
        logs = list(out.glob("*/train_log.csv"))
        if logs and len(logs[0].read_text().splitlines()) >= 3:  # header + 2 finished epochs: now in epoch 3
            time.sleep(0.05)
            os.kill(proc.pid, signal.SIGKILL)
            killed_after = len(logs[0].read_text().splitlines()) - 1
            break
        time.sleep(0.01)
    proc.wait(timeout=30)
    assert killed_after is not None, "the run finished before it could be killed; make it longer"
    rd = _run_dir(out)
    assert not (rd / "metrics.json").exists()
    ck = torch.load(rd / "checkpoint.pt", weights_only=True)
    assert 2 <= ck["epoch"] < 6

    again = subprocess.run(_cmd(data, out), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert f"resuming from {rd / 'checkpoint.pt'} after epoch {ck['epoch']}" in again.stdout + again.stderr
    m = json.loads((rd / "metrics.json").read_text())
    assert m["train"]["resumed_from_epoch"] == ck["epoch"] and m["train"]["epochs"] == 6
    # tolerance: identical to 1e-9 relative (CPU, same ops in the same order; observed bit-identical)
    for name, t in m_ref["test_sets"].items():
        for k in ("energy_mae_mev", "force_mae_mev_A", "force_rmse_mev_A", "force_err_p99_mev_A",
                  "force_err_max_mev_A"):
            assert m["test_sets"][name][k] == pytest.approx(t[k], rel=1e-9, abs=1e-12), (name, k)
    log = (rd / "train_log.csv").read_text().splitlines()
    ref_log = (_run_dir(tmp_path / "ref") / "train_log.csv").read_text().splitlines()
    assert [r.split(",")[:6] for r in log] == [r.split(",")[:6] for r in ref_log]  # all but epoch time

    # a finished run is reused, not re-run
    third = subprocess.run(_cmd(data, out), capture_output=True, text=True, timeout=300)
    assert third.returncode == 0 and "already done" in third.stdout


def test_changed_config_is_refused(data, tmp_path):
    out = tmp_path / "res"
    proc = subprocess.Popen(_cmd(data, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    t0 = time.time()
    while time.time() - t0 < 240 and proc.poll() is None and not list(out.glob("*/checkpoint.pt")):
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    rd = _run_dir(out)
    saved = json.loads((rd / "config.json").read_text())
    saved["overrides"]["train.lr"] = 0.1  # someone edited the folder's config
    (rd / "config.json").write_text(json.dumps(saved))
    r = subprocess.run(_cmd(data, out), capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and "different config (keys: overrides)" in err[0]
