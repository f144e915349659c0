"""Timing times what training trains: the run's model building, statistics, optimizer, loss and step."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from mara_bench.backbone import Backbone
from mara_bench.model import EnergyModel
from mara_bench.registry import BACKBONE_GROUP, register, unregister

TRAIN = {"optimizer": "adamw", "lr": 0.003, "weight_decay": 0.01, "energy_loss": "total", "energy_weight": 2.0,
         "forces_weight": 5.0, "grad_clip": 0.5, "max_train_frames": 20}


class DefaultDtypeModel(EnergyModel):
    """Builds its parameters the way e3nn/mace do: in torch's *default* dtype, with no ``.to(dtype)`` of its own, and
    with a numpy-random buffer. Only a builder that scopes the default dtype and seeds numpy, torch and random as a
    run does (``pipeline.build_backbone_model``) reproduces a run's model."""

    def __init__(self, stats, width: int, variant: str):
        super().__init__()
        self.embed = torch.nn.Embedding(119, width)
        self.radial = torch.nn.Linear(4, width)
        self.gate = torch.nn.Linear(width, 1) if variant != "off" else None
        self.out = torch.nn.Linear(width, 1)
        self.register_buffer("jitter", torch.as_tensor(np.random.rand(width)).to(torch.get_default_dtype()))
        self.register_buffer("e0", torch.tensor([float(stats.e0s.get(z, 0.0)) for z in range(119)]))
        self.n_frames = stats.n_frames

    def forward(self, batch, compute_forces=True, training=False):
        pos = batch.positions.detach().requires_grad_(True)
        r = batch.edge_vectors(pos).norm(dim=-1, keepdim=True)
        k = torch.arange(1, 5, device=r.device, dtype=r.dtype)
        m = self.radial(torch.cos(k * r)) * self.embed(batch.numbers)[batch.edge_index[0]] + self.jitter
        if self.gate is not None:
            m = m + torch.sigmoid(self.gate(m)) * m
        h = torch.zeros(pos.shape[0], m.shape[1], dtype=m.dtype, device=m.device).index_add(0, batch.edge_index[1], m)
        e_at = self.out(torch.tanh(h)).squeeze(-1) + self.e0[batch.numbers]
        energy = torch.zeros(batch.num_graphs, dtype=e_at.dtype, device=e_at.device).index_add(0, batch.batch, e_at)
        return self.with_forces(energy, pos, compute_forces, training)


class DefaultDtypeBackbone(Backbone):
    name = "dtypetest"
    description = "test-only: parameters in torch's default dtype"
    presets = {p: {"model": {"r_max": 4.0, "width": 6}, "train": dict(TRAIN)} for p in ("smoke", "quick", "paper")}

    def build(self, model_options, stats, mara, dtype=torch.float32):
        return DefaultDtypeModel(stats, model_options["width"], mara.variant)


@pytest.fixture(autouse=True)
def dtype_backbone():
    register(BACKBONE_GROUP, "dtypetest", DefaultDtypeBackbone)
    yield
    unregister(BACKBONE_GROUP, "dtypetest")


def _run_model(backbone: str, variant: str, preset: str, stats, dtype, seed: int):
    """The model ``pipeline`` builds for a run of this configuration (``run_config`` -> ``build_model``)."""
    from mara_bench.config import RunConfig
    from mara_bench.run.pipeline import Prepared, build_model, check_config

    cfg = RunConfig(backbone=backbone, mara=variant, preset=preset, seed=seed, dtype=str(dtype)[6:])
    cls, model_opts, train_opts = check_config(cfg)
    p = Prepared(cfg, cls, model_opts, train_opts, None, stats, [], [], {}, "cpu", None)
    return build_model(p, dtype)


def _ethanol_stats():
    from mara_bench.timing.systems import load_molecule, make_batch, stats_for

    mol = load_molecule("default")
    _, graphs = make_batch(mol, 18, 4.0, torch.float64)
    return stats_for(mol, graphs, 4.0, TRAIN, 0)[0]


def _same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype, k
        assert torch.equal(sa[k], sb[k]), k


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_timed_model_is_the_model_a_run_builds(dtype):
    from mara_bench.timing.sweep import build_model

    stats = _ethanol_stats()
    timed = build_model("dtypetest", "smoke", "paper", stats, dtype, "cpu", seed=3)
    _same_state(timed, _run_model("dtypetest", "paper", "smoke", stats, dtype, seed=3))
    assert timed.radial.weight.dtype == dtype
    other = build_model("dtypetest", "smoke", "paper", stats, dtype, "cpu", seed=4)
    assert not torch.equal(other.radial.weight, timed.radial.weight)  # the seed is the run's seed


def test_timed_mace_is_the_model_a_run_builds():
    pytest.importorskip("mace", reason="mace-torch is not installed")
    from mara_bench.timing.sweep import build_model

    stats = _ethanol_stats()
    timed = build_model("mace", "smoke", "paper", stats, torch.float64, "cpu", seed=1)
    _same_state(timed, _run_model("mace", "paper", "smoke", stats, torch.float64, seed=1))


def test_timing_statistics_are_the_runs(tmp_path):
    """A dataset molecule: the model statistics are those of the frames a run trains on (train.max_train_frames)."""
    from mara_bench.config import RunConfig
    from mara_bench.run.pipeline import prepare
    from mara_bench.timing.systems import load_molecule, make_batch, stats_for

    p = prepare(RunConfig(backbone="dtypetest", preset="smoke", dataset="default", seed=2, output_dir=str(tmp_path)))
    mol = load_molecule("default")
    _, graphs = make_batch(mol, 18, 4.0, torch.float32)
    stats, kind = stats_for(mol, graphs, 4.0, p.train_opts, 2)
    assert kind == "dataset" and stats.n_frames == 20 == p.stats.n_frames
    assert stats.to_dict() == p.stats.to_dict()


def test_timed_step_uses_the_training_optimizer_loss_and_clip(monkeypatch):
    from mara_bench.run import train
    from mara_bench.timing.sweep import SweepSettings, time_size, train_step
    from mara_bench.timing.systems import load_molecule, make_batch

    made = []
    real = train.make_optimizer

    def spy(model, o):
        made.append(real(model, o))
        return made[-1]

    monkeypatch.setattr(train, "make_optimizer", spy)
    s = SweepSettings(backbone="dtypetest", variants=("off", "paper"), preset="smoke", sizes=(18,), repeats=1,
                      warmup=1, modes=("train",), molecule="ase:CH4", flops=False)
    rows, _ = time_size(s, load_molecule(s.molecule), 18)
    assert all(r["status"] == "ok" for r in rows)
    assert len(made) == 2 and all(isinstance(o, torch.optim.AdamW) for o in made)
    assert all(o.param_groups[0]["lr"] == 0.003 and o.param_groups[0]["weight_decay"] == 0.01 for o in made)

    # the loss: train.training_loss with the preset's weights and energy_loss ('total': per-structure ΔE²)
    from mara_bench.backbone import MaraOptions

    batch, _ = make_batch(load_molecule("ase:CH4"), 15, 4.0, torch.float32)
    assert torch.equal(batch.energy, torch.zeros(3)) and torch.equal(batch.forces, torch.zeros(15, 3))
    model = DefaultDtypeBackbone().build({"width": 6}, _ethanol_stats(), MaraOptions("paper"))
    before = copy.deepcopy(model)
    out = before(batch, compute_forces=True, training=True)
    want = 2.0 * (out["energy"] ** 2).mean() + 5.0 * (out["forces"] ** 2).mean()
    opts = DefaultDtypeBackbone.preset("smoke")["train"]
    clipped = []
    real_clip = torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda ps, c: clipped.append(c) or real_clip(ps, c))
    loss = train_step(model, batch, train.make_optimizer(model, opts), opts)
    assert float(loss) == pytest.approx(float(want.detach()), rel=1e-6)
    assert clipped == [0.5]
    assert not torch.equal(model.radial.weight, before.radial.weight)  # the optimizer stepped


def test_a_broken_data_layer_is_an_error_not_a_silent_stand_in(monkeypatch):
    """--molecule default is the default dataset's ethanol; no fallback molecule hides a data layer that fails."""
    import sys

    from mara_bench.timing.systems import load_molecule

    mol = load_molecule("default")
    assert (mol.source, mol.n_atoms, sorted(set(mol.frames[0][0].tolist()))) == ("dataset", 9, [1, 6, 8])
    monkeypatch.setitem(sys.modules, "mara_bench.data", None)  # importing it now raises ImportError
    with pytest.raises(ImportError):
        load_molecule("default")
