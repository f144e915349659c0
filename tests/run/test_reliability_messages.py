"""Issue 15 (continued): model option values, float syntax, sweeps, damaged folders and the one-line messages
themselves; every bad input refused (one line, exit 2) before a run folder exists. Helpers: reliability_kit.py."""

import json
import shutil

import pytest
import tiny_backbone  # noqa: F401
from reliability_kit import SMOKE, cli, lj_file, nothing_written, one_line, tiny_env  # noqa: F401

from mara_bench.errors import UserError  # noqa: F401


# ------------------------------------------------------------------ item 7: model option values, before the folder
@pytest.mark.parametrize("backbone,option,needle", [
    ("painn", "model.n_atom_basis=abc", "expected an integer >= 1"),
    ("nequip", "model.num_layers=abc", "expected an integer >= 1"),
    ("mace", "model.hidden_irreps=garbage", "expected e3nn irreps"),
    ("mace", "model.num_interactions=0", "expected an integer >= 1"),
    ("tiny", "model.hidden=abc", "expected an integer"),  # a plugin without rules: types from its presets
])
def test_bad_model_option_values_leave_no_folder(tmp_path, capsys, backbone, option, needle):
    data = lj_file(tmp_path / "lj.xyz", 24)
    out = tmp_path / "res"
    rc, o, err = cli(capsys, "run", "--backbone", backbone, "--preset", "smoke", "--quiet", "--dataset", data,
                     "--output-dir", out, "--set", option)
    one_line(rc, err, option.split("=")[0], needle)
    assert "cuequivariance" not in o + err
    nothing_written(out)


def test_option_rules_api_for_plugins():
    from mara_bench.backbone import Backbone, check_values

    class Plugin(Backbone):
        name = "plugin"
        presets = {"smoke": {"model": {"r_max": 4.0, "width": 8, "act": "silu"}}}
        option_rules = {"act": "'silu' | 'tanh'"}

    Plugin().check_options({"r_max": 5, "width": 16, "act": "tanh"})
    with pytest.raises(UserError, match=r"model.act='relu' is not valid: expected 'silu' or 'tanh'"):
        Plugin().check_options({"r_max": 5.0, "width": 8, "act": "relu"})
    with pytest.raises(UserError, match="model.r_max='far'"):
        Plugin().check_options({"r_max": "far", "width": 8, "act": "silu"})
    with pytest.raises(UserError, match=r"expected a non-empty list of an integer >= 1"):
        check_values({"mlp": [16, 0]}, {"mlp": "list[int>=1]"}, "x")


# ------------------------------------------------------------------ item 8: every float syntax
def test_every_float_syntax_is_a_number(tmp_path, capsys):
    from mara_bench.config import RunConfig, parse_override
    from mara_bench.run.pipeline import check_config

    for text, value in (("1e-5", 1e-5), ("1E-5", 1e-5), (".5", 0.5), ("+2.5e-3", 2.5e-3), ("5", 5), ("1e3", 1000.0)):
        assert parse_override(f"train.lr={text}") == ("train.lr", value)
    assert parse_override("model.hidden_irreps=8x0e")[1] == "8x0e"
    cfg = RunConfig(backbone="tiny", dataset=str(lj_file(tmp_path / "lj.xyz", 24)), preset="smoke",
                    overrides={"train.lr": "1e-5"})  # as YAML reads it from a config or sweep file
    _, _, train = check_config(cfg)
    assert train["lr"] == 1e-5
    rc, _, err = cli(capsys, "run", *SMOKE, "--dataset", cfg.dataset, "--output-dir", tmp_path / "res",
                     "--set", "train.lr=1e-5", "--set", "train.max_epochs=1")
    assert rc == 0, err


# ------------------------------------------------------------------ item 9: sweeps validate every run first
def test_sweep_checks_every_planned_run_before_submitting(tmp_path, capsys):
    data = lj_file(tmp_path / "lj.xyz", 24)
    out = tmp_path / "res"
    f = tmp_path / "grid.yaml"
    f.write_text(f"backbones: tiny\ndatasets: ['{data}']\npresets: smoke\nseeds: [0, 1]\n"
                 "overrides: [{train.max_epochs: 1}, {train.bogus: 1}]\n")
    for extra in (["--dry-run"], ["--executor", "local", "--quiet"]):
        rc, o, err = cli(capsys, "sweep", f, "--output-dir", out, *extra)
        one_line(rc, err, "unknown override 'train.bogus'", str(f))
        assert not out.exists() or not any(out.iterdir())
    f.write_text(f"backbones: tiny\ndatasets: ['{data}']\npresets: smoke\noverrides: {{model.hidden: abc}}\n")
    rc, _, err = cli(capsys, "sweep", f, "--output-dir", out, "--dry-run")
    one_line(rc, err, "model.hidden='abc'")
    f.write_text("")
    rc, _, err = cli(capsys, "sweep", f, "--output-dir", out, "--dry-run")
    one_line(rc, err, "is empty")


# ------------------------------------------------------------------ item 11: report on damaged / copied folders
def test_report_skips_damaged_runs_and_counts_a_copied_run_once(tmp_path, capsys):
    data = lj_file(tmp_path / "lj.xyz", 24)
    res = tmp_path / "res"
    rc, _, err = cli(capsys, "run", *SMOKE, "--dataset", data, "--output-dir", res / "a")
    assert rc == 0, err
    (rd,) = list((res / "a").iterdir())
    shutil.copytree(rd, res / "b" / rd.name)  # the same run, copied
    broken = res / "c" / "broken-run"
    shutil.copytree(rd, broken)
    text = (broken / "metrics.json").read_text()
    (broken / "metrics.json").write_text(text[: len(text) // 2])  # truncated
    rc, o, err = cli(capsys, "report", res, "--out", tmp_path / "rep")
    assert rc == 0, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert [ln for ln in lines if str(broken) in ln and "not valid JSON" in ln]
    assert [ln for ln in lines if "counted once" in ln]
    import pandas as pd

    summary = pd.read_csv(tmp_path / "rep" / "summary.csv")
    assert summary["run_id"].nunique() == 1 and len(summary) == len(summary.drop_duplicates(["run_id", "test_set"]))


# ------------------------------------------------------------------ item 12: the one-line messages themselves
def test_frame_missing_forces_names_that_frame_and_the_right_fix(tmp_path):
    from mara_bench.data.readers import read_extxyz

    def drop(frames):
        del frames[3].arrays["forces"]

    f = lj_file(tmp_path / "f.xyz", 6, edit=drop)
    with pytest.raises(UserError) as e:
        read_extxyz(f)
    msg = str(e.value)
    assert "frame 3 has no forces" in msg and "other frames have them" in msg and "add forces" in msg
    assert "keys of frame 3: energy" in msg and "forces_key" not in msg


def test_atom_count_mismatch_names_the_frame_and_line(tmp_path):
    from mara_bench.data.readers import read_extxyz

    f = lj_file(tmp_path / "c.xyz", 5)
    lines = f.read_text().splitlines()
    starts, i = [], 0
    while i < len(lines):
        starts.append(i)
        i += int(lines[i]) + 2
    lines[starts[2]] = str(int(lines[starts[2]]) + 1)
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError) as e:
        read_extxyz(f)
    assert f"frame 2 (line {starts[2] + 1}): the count line says" in str(e.value)


def test_small_file_directory_and_bad_flag_messages(tmp_path, capsys):
    two = lj_file(tmp_path / "two.xyz", 2)
    out = tmp_path / "res"
    rc, _, err = cli(capsys, "run", *SMOKE, "--dataset", two, "--output-dir", out)
    one_line(rc, err, str(two), "2 frame(s)", "at least 3", "--test")
    d = tmp_path / "folder.xyz"
    d.mkdir()
    rc, _, err = cli(capsys, "run", *SMOKE, "--dataset", d, "--output-dir", out)
    one_line(rc, err, str(d), "is a directory")
    rc, _, err = cli(capsys, "run", *SMOKE, "--seed", "abc")
    one_line(rc, err, "--seed", "invalid int value: 'abc'")
    assert "usage" not in err
    nothing_written(out)


def test_yaml_errors_give_line_and_column(tmp_path, capsys):
    bad = tmp_path / "c.yaml"
    bad.write_text("backbone: tiny\npreset: [smoke\n")
    rc, _, err = cli(capsys, "run", "--config", bad)
    one_line(rc, err, str(bad), "line 3, column 1")
    rc, _, err = cli(capsys, "sweep", bad, "--dry-run")
    one_line(rc, err, str(bad), "line 3, column 1")


# ------------------------------------------------------------------ disk full: the atomic writer's message
def test_disk_full_is_one_line_naming_path_and_free_space(tmp_path, monkeypatch):
    import errno
    import os

    from mara_bench import atomic
    from mara_bench.errors import DiskFull

    target = tmp_path / "x.json"
    atomic.atomic_write_json(target, {"old": 1})

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(DiskFull) as e:
        atomic.atomic_write_json(target, {"new": 2})
    assert str(target) in str(e.value) and "free there" in str(e.value) and "\n" not in str(e.value)
    assert isinstance(e.value, OSError)  # optional writes (caches) that tolerate OSError keep doing so
    assert json.loads(target.read_text()) == {"old": 1}  # still atomic: nothing half-written
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]
