"""Issue 2: CLI, registry, config, results layout, plugin discovery, bad input."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from mara_bench.atomic import atomic_write_json
from mara_bench.config import RunConfig
from mara_bench.errors import UserError

HEAVY = ("mace", "nequip", "schnetpack", "e3nn", "torch", "torch_harmonics")


def test_help_and_version(cli):
    r = cli("--help")
    assert r.returncode == 0 and "run" in r.stdout and "compare" in r.stdout
    for sub in ("run", "compare", "list", "report", "time", "md", "sweep"):
        r = cli(sub, "--help")
        assert r.returncode == 0, (sub, r.stderr)
        assert "usage" in r.stdout
    assert cli("--version").stdout.startswith("mara_bench ")


def test_list_prints_everything_and_imports_no_backbone_package(cli):
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "mara_bench", "list"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    for word in ("mace", "nequip", "painn", "rmd17", "3bpa", "default", "smoke", "quick", "paper", "control"):
        assert word in r.stdout
    imported = {line.split("|")[-1].strip().split(".")[0] for line in r.stderr.splitlines() if "|" in line}
    assert not imported & set(HEAVY), f"list imported heavy packages: {sorted(imported & set(HEAVY))}"



def test_public_api_is_lazy():
    code = ("import sys, mara_bench; assert not {'torch', 'mara_bench.nn.mara'} & set(sys.modules), 'eager import'; "
            "import mara_bench.nn.mara as m, mara_bench.model as e; "
            "assert mara_bench.MARA is m.MARA and mara_bench.EnergyModel is e.EnergyModel; "
            "assert all(hasattr(mara_bench, n) for n in mara_bench.__all__); print(sorted(mara_bench.__all__))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "RunConfig" in r.stdout and "GraphBatch" in r.stdout and "Backbone" in r.stdout

def _make_plugin(tmp_path, name="toyplugin", entry="toy", dist="toy_plugin"):
    pkg = tmp_path / name
    pkg.mkdir()
    (pkg / "__init__.py").write_text(textwrap.dedent('''
        from mara_bench.backbone import Backbone

        class ToyBackbone(Backbone):
            name = "toy"
            description = "a third-party toy backbone"
            presets = {"smoke": {"model": {"r_max": 4.0}, "train": {}}}
    '''))
    di = tmp_path / f"{dist}-0.1.dist-info"
    di.mkdir()
    (di / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (di / "entry_points.txt").write_text(f"[mara_bench.backbones]\n{entry} = {name}:ToyBackbone\n")
    return {"PYTHONPATH": str(tmp_path) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def test_third_party_plugin_shows_up_without_changes(cli, tmp_path):
    env = _make_plugin(tmp_path)
    r = cli("list", "backbones", env=env)
    assert r.returncode == 0, r.stderr
    assert "toy" in r.stdout and "a third-party toy backbone" in r.stdout and "toy_plugin" in r.stdout
    # without the plugin on the path it is gone
    assert "toy " not in cli("list", "backbones").stdout


def test_plugin_clashing_with_builtin_loses_with_warning(cli, tmp_path):
    env = _make_plugin(tmp_path, entry="mace", dist="evil_plugin")
    r = cli("list", "backbones", env=env)
    assert r.returncode == 0
    assert "evil_plugin" in r.stderr and "built-in wins" in r.stderr
    assert "a third-party toy backbone" not in r.stdout


@pytest.mark.parametrize("args, needle", [
    (["--backbone", "macee"], "did you mean 'mace'"),
    (["--dataset", "rmd71:aspirin"], "did you mean 'rmd17'"),
    (["--mara", "maybe"], "unknown --mara value 'maybe'"),
    (["--preset", "quik"], "did you mean 'quick'"),
    (["--set", "train.max_epochs"], "expected KEY=VALUE"),
    (["--mara-grid", "4by8"], "bad mara_grid"),
    (["--dataset", "no/such/file.xyz"], "not found"),
])
def test_bad_input_one_line_exit_2_no_run_folder(cli, tmp_path, args, needle):
    out = tmp_path / "results"
    r = cli("run", *args, "--output-dir", str(out))
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], r.stderr
    assert not out.exists() or not any(out.iterdir())


def test_unknown_config_key_in_file(cli, tmp_path):
    f = tmp_path / "cfg.yaml"
    f.write_text("backbone: mace\nlearning_rate: 0.1\n")
    r = cli("run", "--config", str(f), "--output-dir", str(tmp_path / "res"))
    assert r.returncode == 2 and "unknown config key 'learning_rate'" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "res").exists()


def test_unwritable_output_dir(cli, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    r = cli("run", "--output-dir", str(blocker / "results"))
    assert r.returncode == 2 and "output directory" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_traceback_flag_shows_trace(cli):
    r = cli("--traceback", "run", "--backbone", "nope")
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_run_config_identity_and_id():
    a = RunConfig(mara="on").validate()
    assert a.mara == "paper"
    b = RunConfig(mara="paper", output_dir="/elsewhere", data_dir="/data").validate()
    assert a.run_id() == b.run_id()  # locations do not change identity
    c = RunConfig(mara="paper", seed=1).validate()
    assert c.run_id() != a.run_id() and c.run_id().startswith("mace-paper-default-s1-quick-seed1-")
    off1 = RunConfig(mara="off", mara_grid="8x16").validate()
    assert off1.run_id() == RunConfig(mara="off").validate().run_id()  # MARA options irrelevant when off
    with pytest.raises(UserError, match="unknown config key 'sed'.*did you mean 'seed'"):
        RunConfig.from_dict({"sed": 1})
    with pytest.raises(UserError, match="'seed' must be an integer"):
        RunConfig.from_dict({"seed": "1"})
    with pytest.raises(UserError, match="mara_hidden"):
        RunConfig.from_dict({"mara_hidden": 30, "mara_heads": 4})


def test_atomic_write_leaves_no_partial_file(tmp_path):
    p = tmp_path / "x.json"
    atomic_write_json(p, {"a": 1})
    with pytest.raises(TypeError):
        atomic_write_json(p, {"a": object()})
    assert json.loads(p.read_text()) == {"a": 1}
    assert sorted(f.name for f in tmp_path.iterdir()) == ["x.json"]
