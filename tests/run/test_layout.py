"""Run-folder layout: a run saves its statistics and split indices, and its model is rebuilt from them without
re-reading the dataset (run/layout.py: STATS, SPLIT_INDICES, load_run_model)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from mara_bench.run import layout as rf


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    import tiny_backbone

    from mara_bench.config import RunConfig
    from mara_bench.run.pipeline import run_config

    tiny_backbone.register()
    d = tmp_path_factory.mktemp("layout_runs")
    data = tiny_backbone.write_lj_extxyz(d / "lj.xyz", 40, seed=0)
    cfg = RunConfig(backbone="tiny", mara="paper", dataset=str(data), preset="smoke", dtype="float64",
                    output_dir=str(d / "results"), overrides={"train.max_train_frames": 12})
    return run_config(cfg, progress=False), cfg


def test_run_saves_statistics_and_split_indices(tiny_run):
    from mara_bench.run.pipeline import prepare

    rd, cfg = tiny_run
    stats, idx = json.loads((rd / rf.STATS).read_text()), json.loads((rd / rf.SPLIT_INDICES).read_text())
    p = prepare(cfg)
    assert stats == p.stats.to_dict()
    assert idx == {"train": p.train_index, "val": p.val_index}
    assert len(idx["train"]) == 12 and len(set(idx["train"])) == 12  # the seeded max_train_frames subset


def test_model_rebuilt_from_saved_statistics_without_prepare(tiny_run, monkeypatch, tmp_path):
    from mara_bench.graph import collate
    from mara_bench.run import pipeline

    rd, _ = tiny_run
    old = tmp_path / rd.name  # a run folder from before stats.json: the model comes from prepare()
    shutil.copytree(rd, old)
    (old / rf.STATS).unlink()
    model_old, _ = rf.load_run_model(old)

    def no_prepare(cfg):
        raise AssertionError("load_run_model re-ran pipeline.prepare although stats.json exists")

    monkeypatch.setattr(pipeline, "prepare", no_prepare)
    model, cfg = rf.load_run_model(rd)
    with pytest.raises(AssertionError, match="re-ran"):
        rf.load_run_model(old)
    from mara_bench.data import load_dataset

    frames = load_dataset(cfg.dataset).splits["test"]
    batch = collate(frames.subset(np.arange(3)).to_graphs(float(model.r_max)), dtype=torch.float64)
    a, b = model(batch), model_old(batch)
    assert torch.equal(a["energy"], b["energy"]) and torch.equal(a["forces"], b["forces"])
