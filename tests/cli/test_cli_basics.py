"""The CLI surface: help, version, list, bad input (one line, exit 2, no run folder), --traceback."""

import subprocess
import sys

import pytest

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
