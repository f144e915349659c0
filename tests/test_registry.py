"""The public API and plugin discovery through entry points (registry.py, __init__.py)."""

import os
import subprocess
import sys
import textwrap


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


def test_description_and_mara_placement_from_the_docstring():
    """A backbone may document itself: first docstring line = description, the 'MARA:' paragraph = placement;
    explicit attributes win, and nothing is inherited from a parent's docstring."""
    from mara_bench.backbone import Backbone

    class Documented(Backbone):
        """A documented toy backbone.

        Longer prose that is neither.

        MARA: on every edge message,
        before the neighbour sum.
        """

    class Explicit(Documented):
        """Another one.

        MARA: ignored here."""

        mara_placement = "explicit"

    class Child(Documented):
        pass

    assert Documented.description == "A documented toy backbone"
    assert Documented.mara_placement == "on every edge message, before the neighbour sum"
    assert Explicit.description == "Another one" and Explicit.mara_placement == "explicit"
    assert Child.description == Documented.description  # inherited attribute, not re-parsed
