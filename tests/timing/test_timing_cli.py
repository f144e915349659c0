"""`mara_bench time`: files written, defaults, threads, one-line errors, real MACE, MARA implementations."""

from __future__ import annotations

import json

import pytest
import torch

from mara_bench.timing import measure as timing


def test_cli_in_process_writes_results(tmp_path, capsys):
    from mara_bench.cli import main

    rc = main(["time", "--backbone", "pairtest", "--mara", "off,on", "--preset", "smoke", "--sizes", "12,24",
               "--repeats", "2", "--warmup", "1", "--molecule", "ase:C6H6", "--output-dir", str(tmp_path),
               "--threads", "1", "--quiet", "--plot"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "paper" in out and "median ms" in out
    js = list(tmp_path.glob("*.json"))
    assert len(js) == 1 and js[0].with_suffix(".csv").exists() and js[0].with_suffix(".png").exists()
    res = json.loads(js[0].read_text())
    assert timing.validate_timing(res) == []
    assert res["settings"]["variants"] == ["off", "paper"] and res["environment"]["threads"] == 1


def test_cli_quick_by_default_full_on_request_and_threads_from_env(tmp_path, capsys, monkeypatch):
    import argparse

    from mara_bench.cli import main, time_cmd

    p = argparse.ArgumentParser()
    time_cmd.add_parser(p.add_subparsers())
    quick = time_cmd.apply_defaults(p.parse_args(["time"]))
    full = time_cmd.apply_defaults(p.parse_args(["time", "--full"]))
    mine = time_cmd.apply_defaults(p.parse_args(["time", "--full", "--sizes", "12", "--repeats", "3"]))
    assert (quick.sizes, quick.repeats) == ("20,200", 5) and (full.sizes, full.repeats) == ("20,200,2000,5000", 10)
    assert (mine.sizes, mine.repeats) == ("12", 3)
    import torch

    before = torch.get_num_threads()
    monkeypatch.setenv("MARA_BENCH_THREADS", "1")  # honoured like run/md/sweep (no --threads given)
    try:
        rc = main(["time", "--backbone", "pairtest", "--mara", "off", "--preset", "smoke", "--sizes", "12",
                   "--repeats", "1", "--warmup", "0", "--molecule", "ase:C6H6", "--output-dir", str(tmp_path),
                   "--quiet", "--no-flops"])
        assert rc == 0
        (js,) = tmp_path.glob("*.json")
        assert json.loads(js.read_text())["environment"]["threads"] == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("args,needle", [
    (["--mara", "off,bogus"], "unknown --mara value 'bogus'"),
    (["--sizes", "20,abc"], "bad --sizes entry 'abc'"),
    (["--sizes", "0"], "sizes must be >= 1"),
    (["--sizes", ","], "empty --sizes list"),
    (["--backbone", "mcae"], "did you mean 'mace'"),
    (["--modes", "infer"], "unknown --modes value"),
    (["--repeats", "0"], "--repeats must be >= 1"),
    (["--device", "gpu"], "unknown device 'gpu'"),
])
def test_cli_bad_input_exit_2_one_line(capsys, args, needle):
    from mara_bench.cli import main

    assert main(["time", *args, "--quiet"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and lines[0].startswith("mara_bench time: error:"), lines


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal of --device cuda on a CPU-only machine")
def test_cli_cuda_without_gpu_is_refused(cli):
    p = cli("time", "--device", "cuda", "--quiet", timeout=120)  # a real process: checks the exit status
    assert p.returncode == 2 and "CUDA is not available" in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_cli_times_real_mace_smoke(tmp_path, capsys):
    pytest.importorskip("mace", reason="mace-torch is not installed")
    from mara_bench.cli import main

    rc = main(["time", "--backbone", "mace", "--mara", "off,on", "--preset", "smoke", "--sizes", "12",
               "--repeats", "2", "--warmup", "1", "--modes", "inference,train", "--molecule", "ase:C6H6",
               "--output-dir", str(tmp_path), "--threads", "1", "--quiet"])
    assert rc == 0
    res = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert timing.validate_timing(res) == []
    rows = {(r["variant"], r["mode"]): r for r in res["rows"]}
    assert set(rows) == {("off", "inference"), ("off", "train"), ("paper", "inference"), ("paper", "train")}
    assert all(r["status"] == "ok" and r["n_atoms"] == 12 and r["n_edges"] > 0 for r in rows.values())
    assert res["settings"]["stats"] == "synthetic"


def test_cli_mara_impl_times_the_reference_path_inside_mace(tmp_path, capsys):
    pytest.importorskip("mace", reason="mace-torch is not installed")
    pytest.importorskip("torch_harmonics", reason="torch-harmonics is not installed")
    from mara_bench.cli import main

    rc = main(["time", "--backbone", "mace", "--mara", "off,on", "--mara-impl", "folded,reference", "--preset",
               "smoke", "--sizes", "12", "--repeats", "2", "--warmup", "1", "--molecule", "ase:C6H6",
               "--output-dir", str(tmp_path), "--threads", "1", "--quiet"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "paper/reference" in out and "GFLOP/s" in out and "its FLOP floor" in out
    res = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert timing.validate_timing(res) == []
    rows = {(r["variant"], r["mara_impl"], r["mode"]): r for r in res["rows"]}
    for mode in ("inference", "train"):
        ours, ref = rows[("paper", "folded", mode)], rows[("paper", "reference", mode)]
        assert ours["speedup_vs_reference"] > 0 and ours["cpu_speedup_vs_reference"] > 0
        assert ref["speedup_vs_reference"] is None
        assert ref["flops"] > ours["flops"] > rows[("off", None, mode)]["flops"]  # folding removes arithmetic


def test_cli_rejects_an_unknown_mara_impl(capsys):
    from mara_bench.cli import main

    assert main(["time", "--mara-impl", "folded,fast", "--quiet"]) == 2
    assert "unknown --mara-impl value 'fast'" in capsys.readouterr().err


def test_cli_resolves_the_device_as_a_run_does(monkeypatch):
    """time's --device goes through pipeline.resolve_device (auto -> cuda or cpu; CUDA absent -> one-line error)."""
    import argparse

    from mara_bench.cli import time_cmd
    from mara_bench.run import pipeline

    seen = []
    monkeypatch.setattr(pipeline, "resolve_device", lambda d: seen.append(d) or "cpu")
    p = argparse.ArgumentParser()
    time_cmd.add_parser(p.add_subparsers())
    s = time_cmd.settings_from_args(p.parse_args(["time", "--device", "auto", "--backbone", "pairtest"]))
    assert seen == ["auto"] and s.device == "cpu"
