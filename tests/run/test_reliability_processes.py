"""Issue 15, the parts about processes, each with real subprocesses of the CLI:

* one trainer per run folder (a second identical command exits 2 naming the holder; a lock left by a process
  killed with SIGKILL is taken over and the run resumes; sweep jobs respect the lock),
* a full disk during training (ENOSPC injected at the OS call in the trainer's process): one line naming the
  file and the free space, the log never claims an epoch whose checkpoint was not written, and the run resumes,
* no import banner before a one-line error or in a model build.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))
import tiny_backbone  # noqa: E402

# the tiny-backbone CLI, with checkpoint.save followed by a sleep of $SLOW_SAVE_S and, with $ENOSPC_AT=k, the
# k-th fsync of a checkpoint.pt temp file failing with ENOSPC (what a full disk does)
RUNNER = textwrap.dedent("""
    import errno, os, sys, time
    sys.path.insert(0, {tests!r})
    import mara_bench.run.checkpoint as C
    _save = C.save
    C.save = lambda *a, **k: (_save(*a, **k), time.sleep(float(os.environ.get('SLOW_SAVE_S', '0'))))[0]
    _fsync, calls = os.fsync, [0]
    def fsync(fd):
        if os.environ.get('ENOSPC_AT') and 'checkpoint.pt' in os.readlink(f'/proc/self/fd/{{fd}}'):
            calls[0] += 1
            if calls[0] == int(os.environ['ENOSPC_AT']):
                raise OSError(errno.ENOSPC, 'No space left on device')
        return _fsync(fd)
    os.fsync = fsync
    import tiny_backbone
    tiny_backbone.register()
    from mara_bench.cli import main
    sys.exit(main(sys.argv[1:]))
""")


@pytest.fixture
def runner(tmp_path):
    script = tmp_path / "runner.py"
    script.write_text(RUNNER.format(tests=str(TESTS)))
    return script


def env(**extra):
    e = dict(os.environ, MARA_BENCH_THREADS="1", OMP_NUM_THREADS="1")
    e.pop("SLOW_SAVE_S", None)
    e.pop("ENOSPC_AT", None)
    e.update({k: str(v) for k, v in extra.items()})
    return e


def run_args(data, out, epochs=3):
    return ["run", "--backbone", "tiny", "--preset", "smoke", "--quiet", "--dataset", str(data), "--output-dir",
            str(out), "--set", f"train.max_epochs={epochs}", "--dtype", "float64"]


def test_one_trainer_per_run_folder_and_takeover_after_kill(tmp_path, runner):
    data = tiny_backbone.write_lj_extxyz(tmp_path / "lj.xyz", 24, seed=3)
    out = tmp_path / "res"
    cmd = [sys.executable, str(runner), *run_args(data, out)]
    first = subprocess.Popen(cmd, env=env(SLOW_SAVE_S=60), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        rd, t0 = None, time.time()
        while rd is None or not (rd / "checkpoint.pt").exists():  # holds the lock, sleeping after epoch 1
            assert first.poll() is None, first.communicate()
            assert time.time() - t0 < 120
            dirs = [d for d in out.iterdir() if d.is_dir()] if out.exists() else []
            rd = dirs[0] if dirs else None
            time.sleep(0.1)
        from mara_bench.run.lock import read_holder

        assert read_holder(rd)["pid"] == first.pid

        second = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=300)
        assert second.returncode == 2, second.stderr
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1, second.stderr
        assert f"PID {first.pid} on host {socket.gethostname()}" in lines[0] and str(rd) in lines[0]
        ck_before = (rd / "checkpoint.pt").read_bytes()

        # a sweep job (the callable every submitit job runs) for the same run respects the lock too, and leaves
        # the holder's folder and status alone
        from mara_bench.config import RunConfig
        from mara_bench.errors import RunLocked
        from mara_bench.run.sweep import SweepJob, run_state

        assert run_state(rd) == "running"  # sweep --status and resubmission see the holder
        tiny_backbone.register()
        cfg = RunConfig.from_dict(json.loads((rd / "config.json").read_text()))
        with pytest.raises(RunLocked, match=f"PID {first.pid}"):
            SweepJob(["tiny_backbone:register"])(cfg.resolved())
        assert (rd / "checkpoint.pt").read_bytes() == ck_before
        assert not (rd / "sweep_status.json").exists()
    finally:
        first.send_signal(signal.SIGKILL)  # killed while holding the lock: the kernel frees it
        first.wait()
    assert not (rd / "metrics.json").exists()

    third = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=300)
    assert third.returncode == 0, third.stderr
    assert f"taking over run folder '{rd}' from PID {first.pid}" in third.stderr
    assert "resuming from" in third.stdout + third.stderr
    assert (rd / "metrics.json").is_file()
    assert read_holder(rd) is None  # released at the end
    assert sorted(f.name for f in rd.iterdir()) == ["checkpoint.pt", "config.json", "metrics.json", "predictions.npz",
                                                    "run_info.json", "split_indices.json", "stats.json",
                                                    "train_log.csv"]  # nothing of the lock inside
    assert json.loads((rd / "metrics.json").read_text())["train"]["resumed_from_epoch"] == 1


def test_disk_full_during_training_is_one_line_and_resumes(tmp_path, runner):
    data = tiny_backbone.write_lj_extxyz(tmp_path / "lj.xyz", 24, seed=3)
    out = tmp_path / "res"
    cmd = [sys.executable, str(runner), *run_args(data, out, epochs=3)]
    full = subprocess.run(cmd, env=env(ENOSPC_AT=2), capture_output=True, text=True, timeout=300)
    assert full.returncode == 2, full.stderr
    lines = full.stderr.strip().splitlines()
    assert len(lines) == 1, full.stderr
    (rd,) = [d for d in out.iterdir() if d.is_dir()]
    assert "no space left on device" in lines[0] and str(rd / "checkpoint.pt") in lines[0] and "free there" in lines[0]
    # atomic writes: no temp file left; the log claims only the epoch whose checkpoint was written
    assert not [p for p in rd.iterdir() if p.name.endswith(".tmp")]
    log = (rd / "train_log.csv").read_text().strip().splitlines()
    assert [row.split(",")[0] for row in log[1:]] == ["1"]
    import torch

    assert torch.load(rd / "checkpoint.pt", weights_only=True)["epoch"] == 1

    again = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "resuming from" in again.stdout + again.stderr
    log = (rd / "train_log.csv").read_text().strip().splitlines()
    assert [row.split(",")[0] for row in log[1:]] == ["1", "2", "3"]
    assert (rd / "metrics.json").is_file()


def test_mace_build_prints_no_cuequivariance_banner(tmp_path):
    code = textwrap.dedent("""
        import torch
        from mara_bench.backbone import MaraOptions
        from mara_bench.data.stats import DatasetStats
        from mara_bench_backbones.mace import MACEBackbone
        stats = DatasetStats(elements=[1, 6], e0s={1: -1.0, 6: -2.0}, avg_num_neighbors=3.0,
                             energy_per_atom_mean=0.0, energy_per_atom_std=1.0, force_rms=1.0, n_frames=1)
        m = MACEBackbone().build(MACEBackbone.preset("smoke")["model"], stats, MaraOptions(), torch.float64)
        print("built", type(m).__name__)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env())
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines() == ["built MACEEnergyModel"], r.stdout
