"""SchNet backbone (torch-geometric): the backbone test kit (every MARA variant) plus SchNet-specific checks."""

from __future__ import annotations

import copy
import importlib.util

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.skipif(importlib.util.find_spec("torch_geometric") is None,
                                reason="torch-geometric is not installed")

from mara_bench_backbones.schnet import SchNetBackbone  # noqa: E402
from smoke_models import preset_parameter_counts, smoke_tools  # noqa: E402

from mara_bench.backbone import MaraOptions  # noqa: E402
from mara_bench.errors import UserError  # noqa: E402
from mara_bench.graph import build_graph, collate  # noqa: E402
from mara_bench.testing import BackboneTestKit, KitStats, random_molecule  # noqa: E402


class TestSchNetKit(BackboneTestKit):
    backbone = "schnet"


SMOKE, build, batch = smoke_tools(SchNetBackbone)


def test_off_is_pyg_schnet_with_the_batch_edges():
    """With MARA off the model is PyG's SchNet: same numbers as calling it on PyG's own all-pairs graph (every
    pair of these small molecules is within r_max), scaled and shifted."""
    from torch_geometric.nn.models import SchNet

    rng = np.random.default_rng(1)
    g = random_molecule(5, rng, 10.0)  # 10 Å cutoff: the neighbour list is all pairs
    model = build("off", r_max=10.0)
    b = collate([g], torch.float64)
    # the reference graph: every ordered pair, distances from positions (no mara_bench code involved)
    n = len(g.numbers)
    ii, jj = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    keep = ii != jj
    ei = torch.stack([jj[keep], ii[keep]])

    def all_pairs(pos, _batch):
        return ei, (pos[ei[0]] - pos[ei[1]]).norm(dim=-1)

    ref = SchNet(hidden_channels=SMOKE["hidden_channels"], num_filters=SMOKE["num_filters"],
                 num_interactions=SMOKE["num_interactions"], num_gaussians=SMOKE["num_gaussians"], cutoff=10.0,
                 interaction_graph=all_pairs).double()
    ref.load_state_dict(model.schnet.state_dict())
    y = ref(b.z, b.pos, b.batch).squeeze(-1)
    shift = sum(KitStats().e0s[int(z)] + KitStats().energy_per_atom_mean for z in g.numbers)
    expected = model.scale * y + shift
    assert b.edge_index.shape[1] == n * (n - 1)
    assert torch.allclose(model(b)["energy"], expected, rtol=0, atol=1e-9)


def test_mara_in_every_cfconv_and_variants_pass_through():
    from torch_geometric.nn.models.schnet import CFConv

    from mara_bench.config import MARA_VARIANTS
    from mara_bench.nn.pyg import gated_layers

    for variant in MARA_VARIANTS:
        m = build(variant)
        layers = gated_layers(m)
        if variant == "off":
            assert layers == [] and m.mara_modules() == []
            continue
        assert [type(layer) for _, layer in layers] == [CFConv] * SMOKE["num_interactions"]
        assert [layer.mara for _, layer in layers] == m.mara_modules()
        assert all(mod.variant == variant and mod.message_dim == SMOKE["num_filters"] for mod in m.mara_modules())


def test_gate_sees_sender_minus_receiver_vectors_in_message_order():
    m = build("control")
    seen = []
    first = m.mara_modules()[0]
    inner = first.forward
    first.forward = lambda msg, vec: (seen.append((msg.detach().clone(), vec.detach().clone())), inner(msg, vec))[1]
    b = batch()
    m(b)
    msg, vec = seen[0]
    send, recv = b.edge_index
    assert torch.allclose(vec, b.positions[send] - b.positions[recv])
    # message e is x_j * W_e of edge e: recompute it with CFConv's own pieces for the first block
    conv = m.schnet.interactions[0].conv
    r = (b.positions[send] - b.positions[recv]).norm(dim=-1)
    x = conv.lin1(m.schnet.embedding(b.numbers))
    W = conv.nn(m.schnet.distance_expansion(r)) * (0.5 * (torch.cos(r * torch.pi / SMOKE["r_max"]) + 1.0))[:, None]
    assert torch.allclose(msg, x[send] * W, atol=1e-12)


def test_deepcopy_keeps_working_and_independent():
    """EMA deep-copies the model: the copy's hooks must use the copy's MARA and edges."""
    m = build("paper")
    c = copy.deepcopy(m)
    b = batch()
    assert torch.allclose(m(b)["energy"], c(b)["energy"], rtol=0, atol=1e-12)
    with torch.no_grad():
        for p in c.mara_modules()[0].parameters():
            p.add_(0.5)
    assert not torch.allclose(m(b)["energy"], c(b)["energy"], rtol=0, atol=1e-8)
    assert c.edges is not m.edges and c.schnet.interactions[0].conv._mara_edges is c.edges
    from mara_bench.nn.pyg import MaraEdges

    assert MaraEdges.of(c) is c.edges and MaraEdges.of(m) is m.edges


def test_periodic_shifts_enter_distances_and_gates():
    """A periodic cell: the same structure translated by a lattice vector (other images in the edge list)
    has the same energy and forces."""
    cell = np.eye(3) * 4.5
    rng = np.random.default_rng(3)
    pos = rng.uniform(0, 4.5, size=(4, 3))
    numbers = np.array([6, 1, 8, 1])
    m = build("paper")
    g1 = build_graph(numbers, pos, SMOKE["r_max"], cell=cell, pbc=[True] * 3)
    moved = pos.copy()
    moved[0] += cell[1]
    g2 = build_graph(numbers, moved, SMOKE["r_max"], cell=cell, pbc=[True] * 3)
    assert np.abs(g1.shifts).sum() > 0
    o1, o2 = m(collate([g1])), m(collate([g2]))
    assert torch.allclose(o1["energy"], o2["energy"], rtol=0, atol=1e-9)
    assert torch.allclose(o1["forces"], o2["forces"], rtol=0, atol=1e-9)


def test_bad_options_and_elements_are_user_errors():
    with pytest.raises(UserError, match="num_filters"):
        build(num_filter=8)
    with pytest.raises(UserError, match="num_interactions"):
        build(num_interactions=0)
    with pytest.raises(UserError, match="r_max"):
        build(r_max=-1.0)
    with pytest.raises(UserError, match="1..99"):
        SchNetBackbone().build(SMOKE, KitStats(elements=[1, 118], e0s={1: 0.0, 118: 0.0}), MaraOptions(),
                               torch.float64)
    b = batch()
    b.numbers[0] = 9
    with pytest.raises(UserError, match=r"\[9\]"):
        build()(b)


def test_presets_build_and_count_parameters():
    from mara_bench.config import MARA_VARIANTS

    counts = preset_parameter_counts(SchNetBackbone, variants=MARA_VARIANTS)
    for preset in ("smoke", "quick", "paper"):
        n_blocks = SchNetBackbone.preset(preset)["model"]["num_interactions"]
        assert counts[preset, "scale"] - counts[preset, "off"] == n_blocks  # one learned constant per block
    # SchNet of the NeurIPS 2017 paper: F = 64 features and filters, 3 interactions, atom-wise 64 -> 32 -> 1;
    # PyG: embedding 100F; per block filter net (G F + F) + (F^2 + F), CFConv lin1 F^2, lin2 F^2 + F, lin F^2 + F
    F, G, T = 64, 51, 3
    expected = 100 * F + T * ((G * F + F) + (F * F + F) + F * F + (F * F + F) + (F * F + F)) + (F * F // 2 + F // 2) \
        + (F // 2 + 1)
    assert counts["paper", "off"] == expected


def test_shifts_stay_float64_after_to_float32():
    m = build("paper").to(torch.float32)
    assert m.shift_of_z.dtype == torch.float64 and m.mara_modules()[0].grid_u.dtype == torch.float32
    b = batch(torch.float32)
    e32 = m(b)["energy"].detach()
    e64 = build("paper")(batch())["energy"].detach()
    assert e32.dtype == torch.float64 and float((e32 - e64).abs().max()) < 1e-3  # float32 rounding of y only


def test_cli_list_and_run_with_mara_on(cli, tmp_path):
    """`list` shows schnet; `run --backbone schnet --mara on` (smoke, embedded default dataset) writes its results."""
    import json

    env = {"MARA_BENCH_CACHE": str(tmp_path / "cache"), "MARA_BENCH_THREADS": "1"}
    r = cli("list", "backbones", env=env)
    assert r.returncode == 0 and "schnet" in r.stdout and "torch-geometric" in r.stdout, r.stderr
    out = tmp_path / "res"
    r = cli("run", "--backbone", "schnet", "--mara", "on", "--preset", "smoke", "--quiet", "--output-dir", str(out),
            env=env)
    assert r.returncode == 0, r.stderr
    (rd,) = list(out.iterdir())
    m = json.loads((rd / "metrics.json").read_text())
    assert m["backbone"] == "schnet" and m["mara"] == "paper" and m["parameters"]["mara"] > 0
    assert 0 < m["test_sets"]["test"]["force_mae_mev_A"] < m["test_sets"]["test"]["zero_force_mae_mev_A"] * 2
    g = np.load(rd / "gates.npz")
    assert 0 < g["block0_gate"].min() and g["block1_gate"].max() < 1


@pytest.mark.slow
def test_cli_compare_time_md_sweep(cli, tmp_path):
    """schnet in compare (off vs scale), time, md and a local sweep (smoke sizes)."""
    env = {"MARA_BENCH_CACHE": str(tmp_path / "cache"), "MARA_BENCH_THREADS": "1"}
    out = tmp_path / "res"
    r = cli("compare", "--backbone", "schnet", "--variants", "off,scale", "--preset", "smoke", "--seeds", "1",
            "--quiet", "--output-dir", str(out), env=env)
    assert r.returncode == 0, r.stderr
    run_dir = next(p for p in out.iterdir() if p.name.startswith("schnet-scale"))
    r = cli("md", str(run_dir), "--temperature", "300", "--steps", "20", "--replicas", "1", "--quiet", env=env)
    assert r.returncode == 0 and (run_dir / "md" / "md.json").is_file(), r.stderr
    r = cli("time", "--backbone", "schnet", "--mara", "off,control", "--sizes", "20", "--preset", "smoke",
            "--repeats", "1", "--warmup", "0", "--modes", "inference", "--no-flops", "--threads", "1",
            "--output-dir", str(tmp_path / "time"), env=env)
    assert r.returncode == 0 and any((tmp_path / "time").glob("*schnet*.json")), r.stderr
    sweep = tmp_path / "grid.yaml"
    sweep.write_text(f"backbones: [schnet]\nvariants: [control]\npresets: [smoke]\nseeds: [0]\n"
                     f"output_dir: {tmp_path / 'sweep'}\n")
    r = cli("sweep", str(sweep), "--executor", "local", "--jobs", "1", env=env, timeout=900)
    assert r.returncode == 0 and list((tmp_path / "sweep").glob("schnet-control-*/metrics.json")), r.stderr
