"""compare with 2 seeds x 3 variants (tiny real backbone, LJ-labelled data through the real data layer) writes the
table, the Markdown and a self-contained HTML report; report on a results folder; optional Chromium screenshot."""

import base64
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import tiny_backbone  # noqa: E402

SCRIPT = str(Path(__file__).resolve().parents[1] / "tiny_backbone.py")


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    root = tmp_path_factory.mktemp("cmp")
    data = tiny_backbone.write_lj_extxyz(root / "lj.xyz", 80, seed=2)
    r = subprocess.run([sys.executable, SCRIPT, "compare", "--backbone", "tiny", "--dataset", str(data),
                        "--seeds", "3", "--preset", "smoke", "--bootstrap", "200",
                        "--output-dir", str(root / "results"), "--quiet"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    (out,) = (root / "results").glob("compare-*")
    return root, out, r


def test_compare_writes_table_and_report(compared):
    root, out, r = compared
    runs = [p for p in (root / "results").iterdir() if (p / "metrics.json").exists()]
    assert len(runs) == 21  # 12 at equal epochs + off/scale/control × 3 seeds with more epochs at equal FLOPs
    full = pd.read_csv(out / "compare.csv", keep_default_na=False, na_values=[""])
    full["baseline"] = full["baseline"].fillna("")
    assert set(full.budget) == {"equal epochs", "equal FLOPs"}
    df = full[full.budget == "equal epochs"]
    assert set(df["variant"]) == {"off", "scale", "control", "paper"}  # the default ladder
    assert set(df["test_set"]) == {"test", "test_rotated"}
    f = df[(df.metric == "force_mae_mev_A") & (df.test_set == "test")]
    own = f[f.baseline == ""].set_index("variant")
    assert (own["n_models"] == 3).all() and own.loc["off", "std"] >= 0
    vs = f[f.baseline != ""].set_index(["variant", "baseline"])
    assert set(vs.index) == {("scale", "off"), ("control", "off"), ("paper", "off"), ("paper", "scale"),
                             ("paper", "control")}
    for key, row in vs.iterrows():  # 3 paired models: interval, P(improvement) and a verdict that follows the rule
        assert row["ci_lo"] <= row["diff"] <= row["ci_hi"] and 0 <= row["p_improve"] <= 1
        assert row["verdict"] == (("better" if row["diff"] < 0 else "worse") if row["p_holm"] < 0.05
                                  else "no clear difference")
        assert row["rel_pct"] == pytest.approx(100 * row["diff"] / own.loc[key[1], "mean"], rel=1e-6)
    mx = df[(df.metric == "force_err_max_mev_A") & (df.baseline != "")]
    assert (mx.verdict == "descriptive only").all() and mx.ci_lo.isna().all()
    ev = df[df.metric.str.startswith("force_events_above_") & (df.baseline == "off")]
    assert len(set(ev.metric)) == 4 and not ev.in_family.any()  # 3 absolute thresholds + 5 × off MAE
    md = (out / "compare.md").read_text()
    assert md.startswith("# Verdict") and "Rule:" in md and "attention credited?" in md
    head = r.stdout.split("Δ = variant − baseline")[0]  # the verdict table is printed first
    assert "scale − off" in head and "paper − control" in head and "need ≥ 3" not in head
    cost = pd.read_csv(out / "cost.csv")
    ce = cost[cost.budget == "equal epochs"].set_index("variant")
    assert list(ce.index) == ["off", "scale", "control", "paper"] and (ce.inference_ms_per_structure > 0).all()
    assert (ce.epochs == 3).all() and ce.loc["paper", "train_flops"] > 3 * ce.loc["off", "train_flops"]
    # equal compute: every variant spends paper's 3-epoch FLOPs; off gets more epochs by the FLOP ratio (±1)
    cf = cost[cost.budget == "equal FLOPs"].set_index("variant")
    ratio = ce.loc["paper", "train_flops"] / ce.loc["off", "train_flops"]
    assert abs(cf.loc["off", "epochs"] - 3 * ratio) <= 1 and cf.loc["paper", "epochs"] == 3
    assert abs(cf.loc["off", "train_flops"] / cf.loc["paper", "train_flops"] - 1) < 0.5 / cf.loc["off", "epochs"] + 1e-9
    assert "at equal FLOPs" in head and "equal compute =" in r.stdout
    html = (out / "report.html").read_text()
    imgs = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", html)
    assert len(imgs) >= 5 and all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in imgs)
    assert "gate_histograms" in html and "force_error_cdf_test" in html and "src='http" not in html
    summary = pd.read_csv(out / "summary.csv")
    assert len(summary) == 42 and summary["equiv_forces_max_abs_eV_A"].notna().all()
    # paper variant of the tiny model uses the edge direction: it is not equivariant, off is (float64 check)
    s = summary[summary.test_set == "test"].groupby("mara")["equiv_forces_max_abs_eV_A"].max()
    assert s["off"] < 1e-9 and s["scale"] < 1e-9 and s["control"] < 1e-9 and s["paper"] > 1e-6
    assert html.index("Verdict") < html.index("Comparison (all metrics)") and "forest_tiny" in html


def test_compare_reuses_finished_runs(compared):
    root, out, _ = compared
    data = root / "lj.xyz"
    r = subprocess.run([sys.executable, SCRIPT, "compare", "--backbone", "tiny", "--dataset", str(data),
                        "--variants", "off,control", "--seeds", "2", "--preset", "smoke", "--bootstrap", "100",
                        "--output-dir", str(root / "results"), "--out", str(root / "c2"), "--quiet"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("already done") == 4
    head = r.stdout.split("Δ = variant − baseline")[0]  # 2 paired models: no verdict
    assert "need ≥ 3 paired models" in head and "✓ better" not in head and "✗ worse" not in head


def test_report_cli_on_results_folder(compared, tmp_path):
    root, _, _ = compared
    r = subprocess.run([sys.executable, "-m", "mara_bench", "report", str(root / "results"), "-o", str(tmp_path)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "21 runs" in r.stdout
    assert (tmp_path / "summary.csv").exists() and (tmp_path / "report.md").exists()
    assert "![force_error_cdf_test](figures/force_error_cdf_test.png)" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "figures" / "force_error_cdf_test.png").stat().st_size > 1000


def test_report_without_runs_is_one_line_error(tmp_path):
    r = subprocess.run([sys.executable, "-m", "mara_bench", "report", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "no finished runs" in r.stderr


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome", "headless_shell"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def test_html_renders_in_headless_chromium(compared, tmp_path):
    exe = _chromium()
    if exe is None:
        pytest.skip("no chromium/google-chrome on PATH (apt-get install -y chromium); screenshot test skipped")
    _, out, _ = compared
    shot = tmp_path / "shot.png"
    r = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                        "--window-size=1200,2400", (out / "report.html").as_uri()], capture_output=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 20_000, r.stderr[-500:]


def test_learning_curves_and_pareto_figures_render_in_headless_chromium(compared, tmp_path):
    """The equal-compute figures are in the report and the browser decodes them: a copy of the report marks, after
    load, the alt text of every image with a non-zero natural width; Chromium's --dump-dom shows the marks."""
    exe = _chromium()
    if exe is None:
        pytest.skip("no chromium/google-chrome on PATH (apt-get install -y chromium); browser check skipped")
    _, out, _ = compared
    html = (out / "report.html").read_text()
    assert "alt='learning_curves'" in html and "alt='pareto_test'" in html
    probe = tmp_path / "probe.html"
    probe.write_text(html.replace("</body>", "<script>window.addEventListener('load', () => "
                                  "document.body.setAttribute('data-decoded', [...document.images]"
                                  ".filter(i => i.complete && i.naturalWidth > 0).map(i => i.alt).join(',')));"
                                  "</script></body>"))
    r = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
                        "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120)
    m = re.search(r'data-decoded="([^"]*)"', r.stdout)
    assert m, r.stdout[-500:] + r.stderr[-500:]
    decoded = set(m.group(1).split(","))
    assert {"learning_curves", "pareto_test"} <= decoded, decoded
