"""`mara_bench run`: bad input gives one line, exit code 2 and no run folder; a good run writes every file."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import tiny_backbone

SCRIPT = str(Path(__file__).resolve().parents[1] / "tiny_backbone.py")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return tiny_backbone.write_lj_extxyz(tmp_path_factory.mktemp("d") / "lj.xyz", 40, seed=3)


def run(*args, out):
    return subprocess.run([sys.executable, SCRIPT, "run", "--backbone", "tiny", "--preset", "smoke", "--quiet",
                           "--output-dir", str(out), *args], capture_output=True, text=True, timeout=300)


def one_line_error(r, *needles):
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.mark.parametrize("args,needles", [
    (["--set", "train.bogus=1"], ["unknown override 'train.bogus'", "valid:"]),
    (["--set", "model.hiden=4"], ["unknown override 'model.hiden'", "did you mean 'hidden'"]),
    (["--set", "train.optimizer=sgd"], ["train.optimizer 'sgd' unknown", "adam"]),
    (["--set", "train.batch_size=0"], ["train.batch_size must be a positive integer"]),
    (["--set", "lr=0.1"], ["override key 'lr'"]),
    (["--mara", "maybe"], ["unknown --mara value 'maybe'"]),
])
def test_bad_overrides_leave_no_run_folder(data, tmp_path, args, needles):
    out = tmp_path / "res"
    one_line_error(run("--dataset", str(data), *args, out=out), *needles)
    assert not out.exists() or not any(out.iterdir())


def test_unknown_config_key_in_file(data, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"backbone: tiny\ndataset: {data}\nlearning_rate: 0.1\n")
    out = tmp_path / "res"
    one_line_error(run("--config", str(cfg), out=out), "unknown config key 'learning_rate'")
    assert not out.exists() or not any(out.iterdir())


def test_unwritable_output_dir(data, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    one_line_error(run("--dataset", str(data), out=blocker / "res"), "output directory", "--output-dir")


def test_good_run_writes_every_file_then_reuses_and_forces(data, tmp_path):
    out = tmp_path / "res"
    r = run("--dataset", str(data), "--mara", "on", out=out)
    assert r.returncode == 0, r.stderr
    (rd,) = list(out.iterdir())
    for f in ("config.json", "run_info.json", "train_log.csv", "checkpoint.pt", "metrics.json", "predictions.npz",
              "gates.npz"):
        assert (rd / f).is_file(), f
    m = json.loads((rd / "metrics.json").read_text())
    assert m["mara"] == "paper" and m["parameters"]["mara"] > 0
    t = m["test_sets"]["test"]
    assert t["force_mae_mev_A"] > 0 and t["zero_force_mae_mev_A"] > 0 and len(t["worst_structures"]) == min(
        10, t["n_structures"])
    assert "F MAE meV/Å" in r.stdout and "MARA: paper" in r.stdout
    info = json.loads((rd / "run_info.json").read_text())  # which distribution provided the backbone
    assert info["providers"]["backbone"]["distribution"] and info["providers"]["dataset_family"] is None  # user file
    assert info["malloc"].startswith(("tuned (", "system ("))  # the run set the allocator up (run.allocator)
    import numpy as np

    g = np.load(rd / "gates.npz")
    assert 0 < g["block0_gate"].min() and g["block0_gate"].max() < 1 and len(g["block0_r"]) == len(g["block0_gate"])
    r2 = run("--dataset", str(data), "--mara", "on", out=out)
    assert r2.returncode == 0 and "already done" in r2.stdout
    r3 = run("--dataset", str(data), "--mara", "on", "--force", out=out)
    assert r3.returncode == 0 and "already done" not in r3.stdout and "resuming" not in r3.stdout
