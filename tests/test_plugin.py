"""The example plugin (examples/mara_bench_example_plugin): install, discover, pass the kit, uninstall, clash.

The plugin is pip-installed (``--no-deps --target``, no network, no build isolation) into a temporary folder put on
PYTHONPATH of subprocesses, which is how a separate site-packages looks to importlib.metadata; removing the folder
uninstalls it. Nothing is installed into the project's virtual environment.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "mara_bench_example_plugin"


def _env(site: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def install(src: Path, site: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                        "--quiet", "--target", str(site), str(src)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr


def copy_example(dest: Path, pyproject_edit=None) -> Path:
    shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", ".pytest_cache"))
    if pyproject_edit is not None:
        p = dest / "pyproject.toml"
        p.write_text(pyproject_edit(p.read_text()))
    return dest


def mb(*args: str, site: Path | None) -> subprocess.CompletedProcess:
    env = _env(site) if site is not None else dict(os.environ)
    return subprocess.run([sys.executable, "-m", "mara_bench", *args], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=300)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    root = tmp_path_factory.mktemp("plugin")
    src = copy_example(root / "src")
    site = root / "site"
    install(src, site)
    return src, site


def test_install_list_uninstall(tmp_path):
    src, site = copy_example(tmp_path / "src"), tmp_path / "site"
    install(src, site)
    assert (site / "mara_bench_example_plugin-0.1.0.dist-info" / "entry_points.txt").is_file()
    r = mb("list", "backbones", site=site)
    assert r.returncode == 0, r.stderr
    line = next(ln for ln in r.stdout.splitlines() if ln.strip().startswith("minischnet"))
    assert "plugin from 'mara_bench_example_plugin'" in line and "smoke, quick, paper" in line
    shutil.rmtree(site)  # uninstall
    r = mb("list", "backbones", site=site)
    assert r.returncode == 0 and "minischnet" not in r.stdout
    assert "unknown backbone 'minischnet'" in mb("run", "--backbone", "minischnet", "--preset", "smoke",
                                                  site=site).stderr


def test_plugin_passes_the_backbone_kit(installed):
    src, site = installed
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(src / "tests")],
                       capture_output=True, text=True, env=_env(site), cwd=src, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    from mara_bench.testing import VARIANTS, BackboneTestKit

    n_tests = sum(1 for name in dir(BackboneTestKit) if name.startswith("test_"))
    assert f"{n_tests * len(VARIANTS)} passed" in r.stdout  # every kit test x every MARA variant, none skipped
    assert "warning" not in r.stdout.splitlines()[-1].lower()


def test_name_clash_with_builtin_keeps_builtin_and_names_the_plugin(tmp_path):
    def clash(text: str) -> str:
        text = text.replace('name = "mara-bench-example-plugin"', 'name = "mara-bench-clash-example"')
        return text.replace('minischnet = "mara_bench_example_plugin', 'nequip = "mara_bench_example_plugin')

    src, site = copy_example(tmp_path / "src", clash), tmp_path / "site"
    install(src, site)
    r = mb("list", "backbones", site=site)
    assert r.returncode == 0, r.stderr
    assert "mara_bench_clash_example" in r.stderr and "built-in wins" in r.stderr
    line = next(ln for ln in r.stdout.splitlines() if ln.strip().startswith("nequip"))
    assert "built-in" in line and "example plugin" not in line
    r = subprocess.run([sys.executable, "-c", "from mara_bench.registry import get_backbone; "
                        "print(get_backbone('nequip').__module__)"], capture_output=True, text=True, env=_env(site))
    assert r.stdout.strip() == "mara_bench_backbones.nequip", r.stderr


def test_smoke_presets_cap_frames_in_readme_example_and_every_backbone():
    """A copied smoke preset must train on a few frames, not the whole dataset (a plugin author's papercut): the
    README's example, the example plugin and every built-in backbone cap train and validation frames."""
    import re

    from mara_bench.registry import get_backbone

    for doc in ("README.md", "docs/add_your_backbone.md"):
        text = (REPO / doc).read_text()
        example = re.search(r'"smoke": \{"model".*?"train": \{([^}]*)\}', text, re.S)
        assert example, f"{doc} lost its smoke preset example"
        assert "max_train_frames" in example.group(1) and "max_val_frames" in example.group(1), (doc, example.group(0))
    src = (EXAMPLE / "mara_bench_example_plugin" / "__init__.py").read_text()
    plugin = re.search(r'"smoke": \{"model".*?"train": \{([^}]*)\}', src, re.S)
    assert plugin and "max_train_frames" in plugin.group(1) and "max_val_frames" in plugin.group(1)
    from importlib.metadata import entry_points

    builtin = [e.name for e in entry_points(group="mara_bench.backbones") if e.dist and e.dist.name == "mara_bench"]
    assert sorted(builtin) == ["mace", "nequip", "painn", "schnet"]  # (toy backbones other tests register are not)
    for name in builtin:
        train = get_backbone(name).preset("smoke")["train"]
        assert train.get("max_train_frames") and train.get("max_val_frames"), (name, train)
