"""Issue 15: results tied to the exact data, every bad input refused (one line, exit 2) before a run folder exists.

Each test uses real files written in tmp_path and the real CLI entry point (``mara_bench.cli.main``) with the tiny
backbone registered in this process; tests about processes (the run lock, a full disk, import banners) are in
test_reliability_processes.py.
"""

import json
import math
import shutil

import numpy as np
import pytest
import tiny_backbone  # noqa: E402
from reliability_kit import SMOKE, cli, lj_file, nothing_written, one_line, tiny_env  # noqa: F401

from mara_bench.errors import UserError  # noqa: E402


# ------------------------------------------------------------------ item 1 + 6: geometry validated when data are read
def _coincident(frames):
    frames[2].positions[1] = frames[2].positions[0]


def _absurd(frames):
    frames[2].positions[0, 0] = 1e30


def _far(frames):
    frames[2].positions[0] += 500.0


@pytest.mark.parametrize("edit,needle", [(_coincident, "coincident"), (_absurd, "absurd coordinate"),
                                         (_far, "span")])
def test_bad_geometry_in_test_file_is_refused_with_file_and_frame(tmp_path, capsys, edit, needle):
    train = lj_file(tmp_path / "train.xyz", 20, seed=1)
    test = lj_file(tmp_path / "test.xyz", 6, seed=2, edit=edit)
    out = tmp_path / "res"
    rc, _, err = cli(capsys, "run", *SMOKE, "--dataset", train, "--test", test, "--output-dir", out)
    one_line(rc, err, str(test), "frame 2", needle, "remove or fix that frame")
    nothing_written(out)


def test_coincident_atoms_in_training_data_caught_at_validation_not_as_nan(tmp_path, capsys):
    train = lj_file(tmp_path / "train.xyz", 20, seed=1, edit=_coincident)
    out = tmp_path / "res"
    rc, _, err = cli(capsys, "run", *SMOKE, "--dataset", train, "--output-dir", out)
    line = one_line(rc, err, str(train), "frame 2", "atoms 0 and 1", "coincident")
    assert "NaN" not in line and "checkpoint" not in line
    nothing_written(out)


def test_nan_loss_message_is_true_when_no_checkpoint_exists(tmp_path):
    """Labels that are not finite (bypassing the data layer) make the loss NaN in the first epoch: the message
    must not claim a kept checkpoint that was never written."""
    import torch

    from mara_bench.backbone import TRAIN_DEFAULTS
    from mara_bench.graph import build_graph
    from mara_bench.run.train import TrainingDiverged, train

    frames = tiny_backbone.make_lj_frames(6)
    graphs = [build_graph(a.numbers, a.positions, 4.0, energy=float("nan") if i == 0 else a.info["energy"],
                          forces=a.arrays["forces"], index=i) for i, a in enumerate(frames)]
    model = tiny_backbone.TinyPairModel({}, hidden=8).double()
    opts = {**TRAIN_DEFAULTS, "max_epochs": 2, "batch_size": 6}
    with pytest.raises(TrainingDiverged) as e:
        train(model, graphs, graphs[1:3], opts, seed=0, dtype=torch.float64, device="cpu", run_dir=tmp_path,
              progress=False)
    msg = str(e.value)
    assert "no checkpoint exists yet" in msg and "is kept" not in msg
    assert not (tmp_path / "checkpoint.pt").exists()


def test_nan_metric_is_written_as_null_with_a_reason(tmp_path, capsys, monkeypatch):
    """metrics.json is strict JSON: a metric that is not finite is null and listed under invalid_metrics."""
    import mara_bench.run.evaluate as ev

    real = ev.evaluate_run

    def with_a_nan(*a, **k):  # the real evaluation, then one metric spoiled as a diverged model would
        out = real(*a, **k)
        out["test_sets"]["test"]["energy_mae_mev"] = float("nan")
        return out

    monkeypatch.setattr(ev, "evaluate_run", with_a_nan)
    data = lj_file(tmp_path / "lj.xyz", 24)
    out = tmp_path / "res"
    rc, _, err = cli(capsys, "run", *SMOKE, "--dataset", data, "--output-dir", out)
    assert rc == 0, err
    assert "not finite" in err
    (rd,) = [d for d in out.iterdir() if d.is_dir()]
    text = (rd / "metrics.json").read_text()
    m = json.loads(text, parse_constant=lambda c: pytest.fail(f"metrics.json holds bare {c}"))
    assert m["test_sets"]["test"]["energy_mae_mev"] is None
    assert "test_sets.test.energy_mae_mev" in m["invalid_metrics"]
    assert math.isfinite(m["test_sets"]["test"]["force_mae_mev_A"])
    json.loads((rd / "run_info.json").read_text(), parse_constant=lambda c: pytest.fail(c))


# ------------------------------------------------------------------ item 2: identity includes the data's content
NAMED_RUN_IDS = {  # run ids of named datasets must never change (reference sweeps resume against them)
    ("mace", "off", "rmd17:ethanol", "quick", ()): "mace-off-rmd17-ethanol-s1-quick-seed0-99ab87f3",
    ("mace", "off", "default", "quick", ()): "mace-off-default-s1-quick-seed0-1b7ecd48",
    ("mace", "paper", "3bpa", "smoke", (("train.max_epochs", 3),)): "mace-paper-3bpa-s1-smoke-seed0-8c3c71c5",
}


def test_named_dataset_run_ids_are_unchanged():
    from mara_bench.config import RunConfig

    for (bb, mara, ds, preset, ov), rid in NAMED_RUN_IDS.items():
        cfg = RunConfig(backbone=bb, mara=mara, dataset=ds, preset=preset, overrides=dict(ov))
        assert cfg.run_id() == rid
        assert "data_sha256" not in cfg.identity()


def test_changed_user_file_is_a_new_run_and_never_resumes_the_old_one(tmp_path, capsys):
    from mara_bench.config import RunConfig
    from mara_bench.run.results import check_same_config

    data = lj_file(tmp_path / "lj.xyz", 24, seed=0)
    out = tmp_path / "res"
    args = ["run", *SMOKE, "--dataset", data, "--output-dir", out, "--set", "train.max_epochs=1"]
    rc, _, err = cli(capsys, *args)
    assert rc == 0, err
    (old,) = [d for d in out.iterdir() if d.is_dir()]
    saved = json.loads((old / "config.json").read_text())
    assert len(saved["data_sha256"]["dataset"]) == 64
    rc, o, _ = cli(capsys, *args)
    assert rc == 0 and "already done" in o  # same bytes: reused

    lj_file(data, 24, seed=7)  # same path, other data
    rc, o, err = cli(capsys, *args)
    assert rc == 0, err
    assert "already done" not in o
    new = {d for d in out.iterdir() if d.is_dir()} - {old}
    assert len(new) == 1 and (new.pop() / "metrics.json").is_file()
    # the old folder (and its config.json) refuse the changed file, naming it
    cfg = RunConfig.from_dict(saved)
    with pytest.raises(UserError, match="made from other data") as e:
        check_same_config(old, cfg)
    assert str(data) in str(e.value)
    rc, _, err = cli(capsys, "run", "--config", old / "config.json", "--quiet")
    one_line(rc, err, str(data), "other data", "changed")


# ------------------------------------------------------------------ item 3: manifest sha256 of cached/data-dir files
def test_file_under_another_molecules_name_is_refused(tmp_path, data_dir, monkeypatch):
    from mara_bench.data import hashes as datahash
    from mara_bench.data import load_dataset

    fake = tmp_path / "data" / "rmd17"
    fake.mkdir(parents=True)
    for kind in ("train", "test"):
        shutil.copy(data_dir / "rmd17" / f"rmd17_ethanol_{kind}_01.npz", fake / f"rmd17_aspirin_{kind}_01.npz")
    with pytest.raises(UserError, match="does not match the rmd17 manifest") as e:
        load_dataset("rmd17:aspirin", 1, data_dir=tmp_path / "data")
    assert "rmd17_aspirin_train_01.npz" in str(e.value) and "download it again" in str(e.value)

    # a good file is hashed once: later processes trust the sidecar (size + mtime + hash) instead of re-hashing
    good = tmp_path / "good" / "rmd17"
    good.mkdir(parents=True)
    for kind in ("train", "test"):
        shutil.copy(data_dir / "rmd17" / f"rmd17_ethanol_{kind}_01.npz", good)
    load_dataset("rmd17:ethanol", 1, data_dir=tmp_path / "good")
    assert len(list((tmp_path / "cache" / "verified").glob("*.json"))) == 3  # the bad aspirin one + 2 good
    datahash._VERIFIED.clear()
    datahash._MEMO.clear()
    monkeypatch.setattr(datahash, "file_sha256", lambda p: pytest.fail(f"re-hashed {p}"))
    load_dataset("rmd17:ethanol", 1, data_dir=tmp_path / "good")


# ------------------------------------------------------------------ item 4: ?units= / ?energy_key= for --dataset
def test_dataset_option_syntax_works_for_dataset_flag(tmp_path, capsys):
    from mara_bench.data import load_dataset

    ev = lj_file(tmp_path / "ev.xyz", 24, seed=0)
    kcal = lj_file(tmp_path / "kcal.xyz", 24, seed=0, units_factor=23.060548)
    a = load_dataset(str(ev))
    b = load_dataset(f"{kcal}?units=kcal/mol")
    np.testing.assert_allclose(b["train"].energy, a["train"].energy, rtol=1e-6)
    out = tmp_path / "res"
    rc, o, err = cli(capsys, "run", *SMOKE, "--dataset", f"{kcal}?units=kcal/mol", "--output-dir", out,
                     "--set", "train.max_epochs=1")
    assert rc == 0, err
    rc, _, err = cli(capsys, "run", *SMOKE, "--dataset", f"{kcal}?unit=kcal/mol", "--output-dir", out)
    one_line(rc, err, "unknown dataset option", "did you mean 'units'")


# ------------------------------------------------------------------ item 5: md on an unfinished run
def test_md_refuses_an_unfinished_run_unless_allowed(tmp_path, capsys):
    data = lj_file(tmp_path / "lj.xyz", 24)
    out = tmp_path / "res"
    rc, _, err = cli(capsys, "run", *SMOKE, "--dataset", data, "--output-dir", out)
    assert rc == 0, err
    (rd,) = [d for d in out.iterdir() if d.is_dir()]
    (rd / "metrics.json").unlink()  # what a run killed after its checkpoint leaves
    md = ["md", rd, "--steps", "4", "--replicas", "1", "--write-every", "2", "--quiet"]
    rc, _, err = cli(capsys, *md)
    one_line(rc, err, str(rd), "unfinished", "--allow-partial")
    assert not (rd / "md").exists()
    rc, _, err = cli(capsys, *md, "--allow-partial")
    assert rc == 0, err
    assert (rd / "md" / "md.json").is_file()
