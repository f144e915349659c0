"""MD: energy conservation (NVE) of an exactly invariant potential, failure detection, rotation jumps, md.json."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase.build import molecule
from tiny_backbone import ElasticNetwork, MorsePair

from mara_bench.md.calculator import MaraBenchCalculator
from mara_bench.md.dynamics import distance_w1, energy_drift, md_summary, plot_md, rotation_jump, run_md
from mara_bench.md.failure import FailureCriteria, FailureDetector, first_failure


def ethanol_calc():
    atoms = molecule("CH3CH2OH")
    return atoms, MaraBenchCalculator(ElasticNetwork(atoms.numbers, atoms.positions), dtype="float64")


def test_nve_conserves_energy_for_invariant_model(tmp_path):
    atoms, calc = ethanol_calc()
    sec = run_md(calc, [atoms], [atoms], temperatures=[300.0], steps=400, timestep_fs=0.25, ensemble="nve",
                 replicas=1, seed=1, out_dir=tmp_path, progress=False)
    r = sec["replicas"][0]
    assert not r["failed"] and r["steps_completed"] == 400
    tr = r["trace"]
    etot = np.array(tr["epot_ev"]) + np.array(tr["ekin_ev"])
    # stated tolerance: total energy within 0.5 meV/atom over 0.1 ps at 0.25 fs, and drift << kinetic fluctuations
    assert np.abs(etot - etot[0]).max() / len(atoms) < 5e-4
    assert np.std(tr["ekin_ev"]) / len(atoms) > 5e-3  # the kinetic energy does fluctuate (a real test)
    assert r["etot_std_over_ekin_std"] < 0.01
    assert abs(r["drift_mev_atom_ps"]) < 5.0
    doc = json.loads((tmp_path / "md.json").read_text())
    assert doc["nve"]["replicas"][0]["trajectory"] == "nve_T300_r0.extxyz"
    from ase.io import read

    frames = read(tmp_path / "nve_T300_r0.extxyz", ":")
    assert len(frames) == 41 and frames[-1].info["step"] == 400


def test_nvt_runs_reproducibly_and_writes_sections(tmp_path):
    atoms, calc = ethanol_calc()
    kw = dict(temperatures=[300.0, 600.0], steps=60, timestep_fs=0.5, ensemble="nvt", replicas=2, seed=3,
              progress=False)
    a = run_md(calc, [atoms], [atoms], out_dir=tmp_path, **kw)
    b = run_md(calc, [atoms], [atoms], **kw)
    assert [r["trace"]["epot_ev"] for r in a["replicas"]] == [r["trace"]["epot_ev"] for r in b["replicas"]]
    assert a["replicas"][0]["trace"]["epot_ev"] != a["replicas"][1]["trace"]["epot_ev"]  # replicas differ
    assert len(a["replicas"]) == 4 and a["summary"]["600"]["survival_fraction"] == 1.0
    run_md(calc, [atoms], [atoms], temperatures=[300.0], steps=10, ensemble="nve", out_dir=tmp_path,
           progress=False)
    doc = json.loads((tmp_path / "md.json").read_text())
    assert set(doc) == {"nvt", "nve"} and doc["nvt"]["settings"]["replicas"] == 2


def exploding(n_frames=30, blow_at=12):
    base = molecule("CH3CH2OH")
    rng = np.random.default_rng(0)
    out = base.positions[8] - base.get_center_of_mass()
    out /= np.linalg.norm(out)
    frames = []
    for k in range(n_frames):
        a = base.copy()
        a.positions += rng.normal(scale=0.02, size=a.positions.shape)
        if k >= blow_at:
            a.positions[8] += (k - blow_at + 1) * 1.0 * out  # an H atom flies off, radially
        frames.append(a)
    return frames


def test_failure_detector_fires_on_explosion_not_on_stable():
    good, reason = first_failure(exploding(blow_at=10_000))
    assert reason is None and good == 29
    good, reason = first_failure(exploding(blow_at=12))
    assert reason.startswith("bond_stretch") and good == 11  # 1 Å added to a 1.1 Å bond -> > 1.5x
    det = FailureDetector(molecule("CH3CH2OH"))
    pos = molecule("CH3CH2OH").positions.copy()
    assert det.check(pos, 1.0, np.zeros_like(pos)) is None
    assert det.check(pos, float("nan")).startswith("nonfinite")
    pos2 = pos.copy()
    pos2[8] = pos2[0] + [0.1, 0.1, 0.1]
    assert det.check(pos2).startswith("close_contact")
    det2 = FailureDetector(molecule("CH3CH2OH"), FailureCriteria(bond_stretch=100.0))
    pos3 = pos.copy()
    pos3[8] += [0.0, 0.0, 30.0]
    assert det2.check(pos3).startswith("flying_apart")


def test_md_stops_at_failure_with_unstable_model(tmp_path):
    atoms = molecule("CH3CH2OH")
    # strongly repulsive pair potential: the molecule blows up within a few hundred steps
    calc = MaraBenchCalculator(MorsePair(depth=5.0, r_eq=3.0, alpha=1.0, r_max=5.0), dtype="float64")
    sec = run_md(calc, [atoms], [atoms], temperatures=[300.0], steps=2000, timestep_fs=0.5, ensemble="nvt",
                 out_dir=tmp_path, progress=False)
    r = sec["replicas"][0]
    assert r["failed"] and r["steps_completed"] < 2000 and r["failure_reason"]
    assert sec["summary"]["300"]["survival_fraction"] == 0.0
    assert md_summary(tmp_path.parent / "nope") is None


def test_rotation_jump_zero_for_invariant_and_not_for_anisotropic():
    atoms = molecule("CH3CH2OH")
    inv = rotation_jump(MaraBenchCalculator(MorsePair(), dtype="float64"), atoms, seed=0)
    assert abs(inv["energy_jump_ev"]) < 1e-10 and inv["force_error_ev_a"] < 1e-10
    aniso = rotation_jump(MaraBenchCalculator(MorsePair(anisotropy=0.05), dtype="float64"), atoms, seed=0)
    assert abs(aniso["energy_jump_ev"]) > 1e-3


def test_drift_and_w1_measurements():
    t = np.linspace(0, 1.0, 101)
    rng = np.random.default_rng(0)
    ekin = 1.0 + 0.05 * rng.normal(size=t.size)
    d = energy_drift(t, -10.0 + 0.002 * t, ekin, n_atoms=2)  # 2 meV per ps over 2 atoms = 1 meV/atom/ps
    assert d["drift_mev_atom_ps"] == pytest.approx(1.0, rel=1e-6)
    a = molecule("CH3CH2OH")
    b = a.copy()
    b.positions *= 1.1  # all distances 10 % longer
    assert distance_w1([a], [a]) == 0.0
    from scipy.spatial.distance import pdist

    assert distance_w1([b], [a]) == pytest.approx(0.1 * pdist(a.positions).mean(), rel=1e-6)


def test_plot_md(tmp_path):
    atoms, calc = ethanol_calc()
    run = tmp_path / "run"
    run_md(calc, [atoms], [atoms], temperatures=[300.0], steps=20, ensemble="nve", out_dir=run / "md", progress=False)
    out = plot_md([run, tmp_path / "missing"], tmp_path / "plots")
    assert [p.name for p in out] == ["md_survival.png", "md_nve_energy.png"]
    assert all(p.stat().st_size > 1000 for p in out)
    assert md_summary(run)["nve"]["300"]["replicas"] == 1


# ------------------------------------------------------------------ end to end: a trained run folder -> md CLI
@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """Two real (tiny) trained runs through the pipeline: MARA off and the direction-dependent 'paper' gate."""

    import tiny_backbone

    from mara_bench.config import RunConfig
    from mara_bench.run.pipeline import run_config

    tiny_backbone.register()
    d = tmp_path_factory.mktemp("md_runs")
    data = tiny_backbone.write_lj_extxyz(d / "lj.xyz", 40, seed=0)
    out = {}
    for mara in ("off", "paper"):
        cfg = RunConfig(backbone="tiny", mara=mara, dataset=str(data), preset="smoke", dtype="float64",
                        output_dir=str(d / "results"))
        out[mara] = run_config(cfg, progress=False)
    return out


def test_md_cli_on_trained_runs(tiny_runs, capsys):
    import torch

    from mara_bench.cli import main

    run = tiny_runs["off"]
    threads = torch.get_num_threads()
    try:
        rc = main(["md", str(run), "--temperature", "300,600", "--steps", "40", "--replicas", "2", "--ensemble",
                   "nve", "--quiet", "--write-every", "5", "--threads", "1"])
        assert rc == 0 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    doc = json.loads((run / "md" / "md.json").read_text())
    from mara_bench.md.run import checkpoint_fingerprint

    assert doc["nve"]["settings"]["checkpoint_sha256"] == checkpoint_fingerprint(run / "checkpoint.pt")
    reps = doc["nve"]["replicas"]
    assert len(reps) == 4 and {r["temperature"] for r in reps} == {300.0, 600.0}
    assert all(r["steps_completed"] <= 40 and r["distance_w1_a"] is not None for r in reps)
    assert len({r["start_frame"] for r in reps if r["temperature"] == 300.0}) == 2  # two different test frames
    done = [r for r in reps if not r["failed"]]
    assert all(abs(r["rotation"]["energy_jump_mev_atom"]) < 1e-8 for r in done)  # exactly invariant model
    assert (run / "md" / "nve_T600_r1.extxyz").is_file()
    assert "K:" in capsys.readouterr().out


def test_rotation_jump_of_paper_variant_is_measured(tiny_runs):
    from mara_bench.md.calculator import MaraBenchCalculator

    calc = MaraBenchCalculator.from_run(tiny_runs["paper"], dtype="float64")
    calc_off = MaraBenchCalculator.from_run(tiny_runs["off"], dtype="float64")
    atoms = molecule("CH3CH2OH")
    jump = rotation_jump(calc, atoms, seed=0)
    assert abs(jump["energy_jump_ev"]) > 1e-9  # the lab-frame gate breaks rotation invariance
    assert abs(rotation_jump(calc_off, atoms, seed=0)["energy_jump_ev"]) < 1e-10


def test_md_cli_errors(tmp_path, capsys):
    from mara_bench.cli import main

    assert main(["md", "nope", "--output-dir", str(tmp_path)]) == 2
    assert "no run folder" in capsys.readouterr().err
    assert main(["md", "x", "--temperature", "hot"]) == 2
    assert main(["md", "x", "--ensemble", "npt"]) == 2
    assert "nvt" in capsys.readouterr().err
    assert main(["md", "x", "--threads", "0"]) == 2
    assert "--threads" in capsys.readouterr().err


def test_run_md_resumes_finished_replicas(tmp_path):
    atoms, calc = ethanol_calc()
    kw = dict(temperatures=[300.0], steps=30, timestep_fs=0.5, ensemble="nvt", replicas=2, seed=4, progress=False,
              out_dir=tmp_path, meta={"checkpoint_sha256": "abc"})
    a = run_md(calc, [atoms], [atoms], **kw)
    assert not any(r.get("resumed") for r in a["replicas"])
    (tmp_path / "nvt_T300_r1.json").unlink()  # as if interrupted while replica 1 was running
    n = calc.n_calls
    b = run_md(calc, [atoms], [atoms], **kw)
    assert [bool(r.get("resumed")) for r in b["replicas"]] == [True, False]
    assert calc.n_calls - n >= 31  # only replica 1 ran again
    assert [r["trace"]["epot_ev"] for r in a["replicas"]] == [r["trace"]["epot_ev"] for r in b["replicas"]]
    c = run_md(calc, [atoms], [atoms], **{**kw, "meta": {"checkpoint_sha256": "retrained"}})
    assert not any(r.get("resumed") for r in c["replicas"])  # another model: nothing reused
    d = run_md(calc, [atoms], [atoms], **{**kw, "steps": 20})
    assert not any(r.get("resumed") for r in d["replicas"]) and d["replicas"][0]["steps_requested"] == 20


def test_thread_setting_from_env_and_flag(monkeypatch):
    import torch

    from mara_bench.errors import UserError
    from mara_bench.run.pipeline import apply_thread_env

    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("MARA_BENCH_THREADS", "1")
        assert apply_thread_env("cpu") == 1 and torch.get_num_threads() == 1
        assert apply_thread_env("cuda") is None
        assert apply_thread_env("cpu", threads=2) == 2 and torch.get_num_threads() == 2  # the flag wins
        monkeypatch.setenv("MARA_BENCH_THREADS", "two")
        with pytest.raises(UserError, match="MARA_BENCH_THREADS"):
            apply_thread_env("cpu")
        monkeypatch.delenv("MARA_BENCH_THREADS")
        assert apply_thread_env("cpu") is None
    finally:
        torch.set_num_threads(before)
