"""MD stability in reports and ``compare --md``: pooled tables, survival figures, reuse of MD with equal settings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import tiny_backbone

from mara_bench.md.tables import replica_frame, stability_markdown, stability_table, survival_png

SCRIPT = str(Path(__file__).resolve().parents[1] / "tiny_backbone.py")
PNG = b"\x89PNG\r\n\x1a\n"


def _fake_run(root: Path, name: str, mara: str, seed: int, replicas: list[tuple[float, bool, float]]):
    """A run folder with metrics.json and an md.json holding the given (temperature, failed, time_ps) replicas."""
    d = root / name
    (d / "md").mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps({"run_id": name, "backbone": "b", "mara": mara, "seed": seed}))
    reps = [{"temperature": T, "failed": failed, "time_ps": t, "steps_requested": 100, "steps_completed": int(t * 2000),
             "failure_reason": "bond_stretch: 0-1" if failed else None, "replica": k, "n_atoms": 3,
             "rotation": {"energy_jump_mev_atom": 0.5 if mara == "paper" else 0.0},
             "distance_w1_a": 0.01 * (k + 1), "trace": {"time_ps": [], "epot_ev": [], "ekin_ev": []}}
            for k, (T, failed, t) in enumerate(replicas)]
    doc = {"nvt": {"settings": {"timestep_fs": 0.5, "steps": 100}, "replicas": reps}}
    (d / "md" / "md.json").write_text(json.dumps(doc))
    return d


def test_stability_table_pools_seeds_and_counts_failures(tmp_path):
    runs = [_fake_run(tmp_path, "off0", "off", 0, [(300, False, 0.05), (300, True, 0.01)]),
            _fake_run(tmp_path, "off1", "off", 1, [(300, False, 0.05), (300, False, 0.05)]),
            _fake_run(tmp_path, "pap0", "paper", 0, [(300, True, 0.02), (300, True, 0.03)]),
            tmp_path / "no_md_here"]
    rep = replica_frame(runs)
    assert rep["failure_reason"].isna().sum() == 3  # None in JSON: NaN in the frame
    assert len(rep) == 6 and set(rep["group"]) == {"b/off", "b/paper"}
    t = stability_table(rep).set_index("mara")
    assert list(t.index) == ["off", "paper"]  # off first
    assert t.loc["off", "stable"] == "3/4" and t.loc["off", "seeds"] == 2
    assert t.loc["off", "survival_fraction"] == pytest.approx(0.75)
    assert t.loc["off", "mean_time_ps"] == pytest.approx((0.05 + 0.01 + 0.05 + 0.05) / 4)
    assert t.loc["paper", "stable"] == "0/2" and t.loc["paper", "failures"] == "bond_stretch"
    assert t.loc["off", "failures"] == "bond_stretch"  # the stable replicas (reason None) add nothing
    assert t.loc["paper", "max_rotation_jump_mev_atom"] == pytest.approx(0.5)
    assert t.loc["off", "duration_ps"] == pytest.approx(0.05)
    md = stability_markdown(stability_table(rep))
    assert "| b | off | nvt | 300 | 0.05 (dt 0.5 fs) | 2 | 3/4 |" in md
    assert survival_png(rep)[:8] == PNG
    assert survival_png(replica_frame([tmp_path / "no_md_here"])) is None


@pytest.fixture(scope="module")
def compared_md(tmp_path_factory):
    root = tmp_path_factory.mktemp("cmp_md")
    data = tiny_backbone.write_lj_extxyz(root / "lj.xyz", 60, seed=3)
    args = [sys.executable, SCRIPT, "compare", "--backbone", "tiny", "--dataset", str(data), "--variants", "off,on",
            "--seeds", "1", "--preset", "smoke", "--bootstrap", "100", "--output-dir", str(root / "results"),
            "--quiet", "--budget", "epochs", "--md", "--md-temperature", "300,600", "--md-steps", "20", "--md-replicas", "1",
            "--md-ensembles", "nvt,nve", "--md-dtype", "float64"]
    r = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    (out,) = (root / "results").glob("compare-*")
    return root, out, args, r


def test_compare_md_runs_md_and_reports_it(compared_md):
    root, out, _, r = compared_md
    runs = sorted(p for p in (root / "results").iterdir() if (p / "metrics.json").exists())
    assert len(runs) == 2
    for run in runs:
        doc = json.loads((run / "md" / "md.json").read_text())
        assert set(doc) == {"nvt", "nve"}
        assert doc["nve"]["settings"]["dtype"] == "float64" and doc["nvt"]["settings"]["steps"] == 20
    rep = pd.read_csv(out / "md_stability.csv")
    assert len(rep) == 2 * 2 * 2  # runs x temperatures x ensembles (1 replica each)
    assert set(rep["mara"]) == {"off", "paper"} and set(rep["temperature_k"]) == {300.0, 600.0}
    cmp_md = (out / "compare.md").read_text()
    assert "## MD stability" in cmp_md and "| tiny | paper | nve | 600 |" in cmp_md
    html = (out / "report.html").read_text()
    assert "<h2>MD stability</h2>" in html and "md_survival" in html and "md_nve_energy" in html
    assert "## MD stability" in (out / "report.md").read_text()
    assert r.stdout.count("[md ") == 4


def test_compare_md_reuses_equal_settings_and_reruns_changed(compared_md):
    root, out, args, _ = compared_md
    r = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("already done") == 2 + 4  # 2 trainings, 2 runs x 2 ensembles of MD
    changed = [a if a != "20" else "10" for a in args]  # --md-steps 10
    changed = [a for a in changed if a not in ("--md-ensembles", "nvt,nve")]  # nvt only (the default)
    r = subprocess.run(changed, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("already done") == 2 and r.stdout.count("[md ") == 2
    run = next(p for p in (root / "results").iterdir() if (p / "md" / "md.json").exists())
    doc = json.loads((run / "md" / "md.json").read_text())
    assert doc["nvt"]["settings"]["steps"] == 10 and doc["nve"]["settings"]["steps"] == 20


def test_compare_md_bad_options_fail_before_training(tmp_path):
    data = tiny_backbone.write_lj_extxyz(tmp_path / "lj.xyz", 20, seed=1)
    base = [sys.executable, SCRIPT, "compare", "--backbone", "tiny", "--dataset", str(data), "--seeds", "1",
            "--preset", "smoke", "--output-dir", str(tmp_path / "results"), "--quiet", "--md"]
    for bad, words in ((["--md-ensembles", "npt"], "nvt"), (["--md-temperature", "hot"], "temperature"),
                       (["--md-steps", "0"], "steps"), (["--md-dtype", "float16"], "float64")):
        r = subprocess.run(base + bad, capture_output=True, text=True, timeout=300)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and words in r.stderr, r.stderr
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())
