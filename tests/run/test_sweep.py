"""Sweeps: YAML grid expansion, sbatch dry-run, --status from the results folders, local submitit execution
(skip finished runs, resume a killed run, requeue on preemption through submitit's Checkpointable)."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path

import pytest
import tiny_backbone

from mara_bench.cli import main
from mara_bench.errors import UserError
from mara_bench.run import sweep as sw

TESTS = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent  # jobs import this module (setup hook test_sweep:_slow_saves)


def _slow_saves() -> None:
    """Job setup hook: sleep after each checkpoint so that a test can interrupt a job between two epochs."""
    import mara_bench.run.checkpoint as C

    save = C.save

    def slow(*a, **k):
        r = save(*a, **k)
        time.sleep(float(os.environ.get("SLOW_SAVE_S", "2")))
        return r

    C.save = slow


@pytest.fixture
def tiny_env(tmp_path, monkeypatch):
    """Two small LJ datasets, the tiny backbone registered here and in every job (setup hook + PYTHONPATH)."""
    tiny_backbone.register()
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), str(HERE), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.chdir(tmp_path)
    for k in (0, 1):
        tiny_backbone.write_lj_extxyz(tmp_path / f"lj{k}.xyz", 30, seed=k)
    return tmp_path


def write_yaml(path, text):
    path.write_text(text)
    return path


def test_expand_grid_and_errors(tiny_env):
    doc = {"backbones": "tiny", "variants": [False, "control"], "datasets": ["lj0.xyz", "lj1.xyz"],
           "seeds": [0, 1], "presets": "smoke", "overrides": [{"train.max_epochs": 1}, {"train.max_epochs": 2}]}
    cfgs = sw.expand(doc, output_dir="out")
    assert len(cfgs) == 16 and len({c.run_id() for c in cfgs}) == 16
    assert {c.mara for c in cfgs} == {"off", "control"} and all(c.output_dir == "out" for c in cfgs)
    assert sw.expand({"backbones": ["tiny", "tiny"]})[0].preset == "quick"  # omitted key = the run's default
    assert len(sw.expand({"backbones": ["tiny", "tiny"]})) == 1  # duplicates removed
    with pytest.raises(UserError, match="did you mean 'seeds'"):
        sw.expand({"seed": [1]})
    with pytest.raises(UserError, match="empty list"):
        sw.expand({"seeds": []})
    with pytest.raises(UserError, match="unknown backbone 'macee'"):
        sw.expand({"backbones": ["macee"]})
    with pytest.raises(UserError, match="preset"):
        sw.expand({"backbones": "tiny", "presets": "huge"})
    with pytest.raises(UserError, match="not found"):
        sw.load_sweep(tiny_env / "missing.yaml")


def test_dry_run_prints_sbatch_array_and_submits_nothing(tiny_env, capsys):
    f = write_yaml(tiny_env / "grid.yaml", "backbones: tiny\nvariants: [off, on]\nseeds: [0, 1, 2]\npresets: smoke\n"
                   "datasets: lj0.xyz\n")
    rc = main(["sweep", str(f), "--executor", "slurm", "--dry-run", "--partition", "gpu", "--account", "proj",
               "--time", "90", "--gpus-per-job", "1", "--jobs", "4"])
    out = capsys.readouterr().out
    assert rc == 0
    for line in ("#SBATCH --array=0-5%4", "#SBATCH --partition=gpu", "#SBATCH --account=proj", "#SBATCH --time=90",
                 "#SBATCH --gpus-per-node=1", "#SBATCH --signal=USR2@120", "-m submitit.core._submit"):
        assert line in out, line
    assert out.count("tiny-paper-") == 3 and out.count("tiny-off-") == 3
    assert not (tiny_env / "results").exists()
    import shutil

    if shutil.which("srun") is None:  # no SLURM here: a real submission is refused with one clear line
        assert main(["sweep", str(f), "--executor", "slurm"]) == 2
        assert "use --executor local" in capsys.readouterr().err
    assert main(["sweep", str(f), "--executor", "pbs"]) == 2


def _cfg_dirs(f):
    return {c.run_id(): Path(c.output_dir) / c.run_id() for c in sw.expand(sw.load_sweep(f))}


def test_status_counts_from_results_folders(tiny_env, capsys):
    f = write_yaml(tiny_env / "grid.yaml", "backbones: tiny\nseeds: [0, 1, 2, 3, 4]\npresets: smoke\n"
                   "datasets: lj0.xyz\n")
    dirs = list(_cfg_dirs(f).values())
    dirs[0].mkdir(parents=True)
    (dirs[0] / "metrics.json").write_text("{}")  # done
    sw.write_status(dirs[1], "running")  # this process: alive -> running
    sw.write_status(dirs[2], "failed", error="boom")
    sw.write_status(dirs[3], "running")
    st = json.loads((dirs[3] / sw.STATUS_FILE).read_text())
    st.update(host=socket.gethostname() + "-elsewhere", time=0)
    (dirs[3] / sw.STATUS_FILE).write_text(json.dumps(st))
    old = time.time() - 2 * sw.STALE_S
    for p in dirs[3].iterdir():
        os.utime(p, (old, old))  # another host, silent for an hour: failed (stale)
    assert main(["sweep", str(f), "--status"]) == 0
    out = capsys.readouterr().out
    counts = {ln.split()[0]: int(ln.split()[1]) for ln in out.splitlines()[1:5]}
    assert counts == {"done": 1, "running": 1, "failed": 2, "pending": 1}


@pytest.mark.slow  # ~2 min on 2 busy cores (8 jobs, each a fresh Python process importing torch)
def test_local_sweep_2x2x2_runs_and_skips(tiny_env, capsys):
    # 2 x 2 x 2 grid of real smoke runs, each an independent job of submitit's LocalExecutor, 2 at a time
    f = write_yaml(tiny_env / "grid.yaml", "backbones: tiny\nvariants: [off, control]\nseeds: [0, 1]\n"
                   "datasets: [lj0.xyz, lj1.xyz]\npresets: smoke\nsetup: ['tiny_backbone:register']\n")
    t0 = time.time()
    assert main(["sweep", str(f), "--jobs", "2", "--quiet"]) == 0, capsys.readouterr().err
    dt = time.time() - t0
    dirs = _cfg_dirs(f)
    assert len(dirs) == 8 and all((d / "metrics.json").is_file() for d in dirs.values())
    assert all(json.loads((d / sw.STATUS_FILE).read_text())["state"] == "done" for d in dirs.values())
    assert len(list((tiny_env / "results" / ".sweeps" / "grid" / "submitit").glob("*_result.pkl"))) == 8
    capsys.readouterr()
    assert main(["sweep", str(f), "--quiet"]) == 0  # everything done: nothing is submitted
    assert "nothing to do" in capsys.readouterr().out
    assert main(["sweep", str(f), "--status"]) == 0
    assert "done     8" in capsys.readouterr().out
    print(f"8-run local sweep: {dt:.1f} s")


def test_killed_job_resumes_and_preempted_job_requeues(tiny_env, capsys, monkeypatch):
    import submitit

    monkeypatch.setenv("SLOW_SAVE_S", "2")
    f = write_yaml(tiny_env / "grid.yaml", "backbones: tiny\nseeds: [0, 1]\ndatasets: lj0.xyz\npresets: smoke\n"
                   "overrides: {train.max_epochs: 4}\nsetup: ['tiny_backbone:register', 'test_sweep:_slow_saves']\n")
    cfgs = sw.expand(sw.load_sweep(f))
    ex = submitit.LocalExecutor(folder=tiny_env / "logs")
    ex.update_parameters(timeout_min=10)
    setup = ["tiny_backbone:register", "test_sweep:_slow_saves"]
    # submitit's local cancel() is a SIGINT; a test run started from a background shell ignores SIGINT and its
    # children would inherit that, so the jobs are started with the default handler
    old_handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        jobs = [ex.submit(sw.SweepJob(setup), c.resolved()) for c in cfgs]
    finally:
        signal.signal(signal.SIGINT, old_handler)
    dirs = [Path(c.output_dir) / c.run_id() for c in cfgs]

    def wait_for_checkpoint(d: Path) -> None:  # each job sleeps SLOW_SAVE_S after every checkpoint: time to act
        t0 = time.time()
        while not (d / "checkpoint.pt").exists() and time.time() - t0 < 180:
            time.sleep(0.05)
        assert not (d / "metrics.json").exists(), "job finished before it could be interrupted"

    wait_for_checkpoint(dirs[0])
    jobs[0].cancel()  # killed mid-way (SIGINT)
    wait_for_checkpoint(dirs[1])
    # preemption / time-out: the signal SLURM sends the job step (USR2) goes to the job's own process; submitit's
    # handler calls SweepJob.checkpoint, the task exits with the requeue code and submitit starts it again
    pid = json.loads((dirs[1] / sw.STATUS_FILE).read_text())["pid"]
    os.kill(pid, submitit.local.local.LocalJobEnvironment._usr_sig())
    with pytest.raises(Exception):  # noqa: B017 - the cancelled job's error type is submitit's
        jobs[0].result()
    assert jobs[1].result() == str(dirs[1])  # requeued and resumed by itself
    m1 = json.loads((dirs[1] / "metrics.json").read_text())
    assert m1["train"]["resumed_from_epoch"] >= 1 and m1["train"]["epochs"] == 4
    assert not (dirs[0] / "metrics.json").exists()
    assert main(["sweep", str(f), "--status"]) == 0
    out = capsys.readouterr().out
    assert "done     1" in out and "failed   1" in out
    monkeypatch.setenv("SLOW_SAVE_S", "0")
    assert main(["sweep", str(f), "--quiet"]) == 0  # resubmitted: resumes from its checkpoint
    m0 = json.loads((dirs[0] / "metrics.json").read_text())
    assert m0["train"]["resumed_from_epoch"] >= 1 and m0["train"]["epochs"] == 4
    log = (jobs[1].stdout() or "") + (jobs[1].stderr() or "")
    assert "Requeued job" in log, log[-2000:]  # submitit's own log of the requeue
    capsys.readouterr()
    assert main(["sweep", str(f), "--quiet"]) == 0  # all done now: re-running skips everything
    assert "nothing to do" in capsys.readouterr().out
