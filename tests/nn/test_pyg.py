"""torch-geometric: graph batches are PyG batches, and MARA attaches to any PyG MessagePassing layer."""

from __future__ import annotations

import copy
import importlib.util
import os
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.skipif(importlib.util.find_spec("torch_geometric") is None,
                                reason="torch-geometric is not installed")

from torch_geometric.data import Batch, Data  # noqa: E402
from torch_geometric.nn import MessagePassing  # noqa: E402
from torch_geometric.nn.models import SchNet  # noqa: E402
from torch_geometric.nn.models.schnet import CFConv  # noqa: E402

from mara_bench.graph import GraphBatch, MaraData, build_graph, collate  # noqa: E402
from mara_bench.nn.pyg import MaraEdges, attach_mara, detach_mara, gated_layers  # noqa: E402
from mara_bench.testing import perturb_mara, random_molecule  # noqa: E402

F64 = torch.float64
KEYS = ("pos", "z", "edge_index", "shifts", "unit_shifts", "cell", "pbc", "frame_index", "energy", "forces")


def frames(r_max=4.0, seed=0, sizes=(5, 4, 6)):
    rng = np.random.default_rng(seed)
    out = []
    for k, n in enumerate(sizes):
        g = random_molecule(n, rng, r_max)
        g.energy, g.forces, g.index = float(rng.normal()), rng.normal(size=(n, 3)), 10 + k
        out.append(g)
    return out


def periodic_frame(index=3):
    rng = np.random.default_rng(5)
    cell = np.diag([4.2, 4.6, 5.0])
    g = build_graph([8, 1, 1, 6], rng.uniform(0, 4, size=(4, 3)), 4.0, cell=cell, pbc=[True, True, False],
                    energy=-1.5, forces=rng.normal(size=(4, 3)), index=index)
    assert np.abs(g.unit_shifts).sum() > 0
    return g


# ------------------------------------------------------------------------------------------ PyG batches
def test_batch_is_pyg_batch_with_mara_bench_names():
    gs = frames()
    b = collate(gs, F64)
    assert type(b) is GraphBatch and isinstance(b, Batch) and isinstance(b, MaraData)
    assert b.num_graphs == 3 and b.ptr.tolist() == [0, 5, 9, 15] and b.num_atoms.tolist() == [5, 4, 6]
    assert b.batch.tolist() == [0] * 5 + [1] * 4 + [2] * 6
    assert b.positions is b.pos and b.numbers is b.z
    assert b.cell.shape == (3, 3, 3) and b.pbc.shape == (3, 3) and b.energy.shape == (3,)
    assert b.frame_index.tolist() == [10, 11, 12]  # not offset by atom counts, although its name holds "index"
    # edge indices offset by the atoms of the graphs before (PyG's increments), sender/receiver kept
    offsets = [0, 5, 9]
    expected = np.concatenate([g.edge_index + o for g, o in zip(gs, offsets, strict=True)], axis=1)
    assert np.array_equal(b.edge_index.numpy(), expected)
    assert torch.allclose(b.edge_vectors(), torch.cat([collate([g]).edge_vectors() for g in gs]), rtol=0, atol=0)


def test_to_data_list_round_trips_frames():
    gs = frames() + [periodic_frame()]
    for dtype in (F64, torch.float32):
        parts = collate(gs, dtype).to_data_list()
        assert len(parts) == len(gs)
        for g, d in zip(gs, parts, strict=True):
            ref = g.to_data().to(dtype=dtype)
            assert type(d) is MaraData and set(d.keys()) == set(KEYS)
            for k in KEYS:
                assert d[k].dtype == ref[k].dtype and d[k].shape == ref[k].shape, k
                assert torch.equal(d[k], ref[k]), k
    # and back: PyG's collation of the separated frames is the same batch
    b = collate(gs)
    again = Batch.from_data_list(b.to_data_list())
    assert type(again) is GraphBatch
    for k in KEYS + ("batch", "ptr"):
        assert torch.equal(again[k], b[k]), k


def test_pyg_dataloader_and_loader_view(monkeypatch, tmp_path):
    from torch_geometric.loader import DataLoader

    from mara_bench.data.loader import load_dataset, pyg_data_for

    monkeypatch.setenv("MARA_BENCH_CACHE", str(tmp_path))
    ds = load_dataset("default")
    data = pyg_data_for(ds, "val", 4.0, progress=False)
    assert len(data) == len(ds["val"]) and all(type(d) is MaraData for d in data)
    from mara_bench.data.loader import graphs_for

    graphs = graphs_for(ds, "val", 4.0, progress=False)
    original = data[0].pos.clone()
    data[0].pos.add_(1.0)  # pyg_data_for hands out copies: the cached graphs are untouched
    assert np.array_equal(graphs[0].positions, original.numpy())
    data[0].pos.copy_(original)
    batches = list(DataLoader(data, batch_size=16, shuffle=False))
    assert [type(b) for b in batches] == [GraphBatch] * len(batches)
    ours = collate(graphs[:16])
    for k in KEYS + ("batch", "ptr"):
        assert torch.equal(batches[0][k], ours[k]), k


def test_missing_labels_and_to():
    gs = frames()
    gs[1].energy, gs[2].forces = None, None
    b = collate(gs, F64)
    assert b.energy is None and b.forces is None and "energy" not in b.keys()
    b32 = b.to(dtype=torch.float32)
    assert b32.pos.dtype == torch.float32 and b32.z.dtype == torch.long and b32.pbc.dtype == torch.bool
    assert b.pos.dtype == F64  # to() leaves the original alone
    b32b = b.to("cpu", torch.float32)  # mara_bench's positional form
    assert torch.equal(b32b.pos, b32.pos) and b32b.to_data_list()[2].pos.dtype == torch.float32
    assert b.to("cpu", "pos").pos.dtype == F64  # PyG's form: attribute names


def test_pyg_transforms_apply():
    """PyG transforms work on frames and on batches, and a model takes what they give."""
    import torch_geometric.transforms as T
    from mara_bench_backbones.schnet import SchNetBackbone

    from mara_bench.backbone import MaraOptions
    from mara_bench.testing import KitStats

    gs = frames()
    b = collate(gs, F64)
    with_dist = T.Distance(norm=False, cat=False)(b.clone())
    assert torch.allclose(with_dist.edge_attr.squeeze(-1), b.edge_vectors().norm(dim=-1), rtol=0, atol=1e-12)
    # per-frame Center + RandomRotate, then PyG's collation: a SchNet model (invariant) gives the same energies
    torch.manual_seed(0)
    model = SchNetBackbone().build(SchNetBackbone.preset("smoke")["model"], KitStats(), MaraOptions("control"), F64)
    perturb_mara(model)
    transform = T.Compose([T.Center(), T.RandomRotate(180, axis=0), T.RandomRotate(180, axis=2)])
    moved = Batch.from_data_list([transform(g.to_data().clone()) for g in gs])
    assert type(moved) is GraphBatch and not torch.allclose(moved.pos, b.pos)
    # RandomRotate builds its matrix in float32 (orthogonal to ~1e-8), hence the tolerance
    def e(batch):
        return model(batch, compute_forces=False)["energy"].detach()

    assert float((e(moved) - e(b)).abs().max()) <= 1e-6
    jittered = Batch.from_data_list([T.RandomJitter(0.05)(g.to_data().clone()) for g in gs])  # not rigid
    assert float((e(jittered) - e(b)).abs().min()) > 1e-4


# ------------------------------------------------------------------------------------------ the adapter
def batch_edges(edges: MaraEdges):
    """A SchNet interaction graph: the edges given for this forward, distances from SchNet's ``pos`` (molecules)."""

    def graph(pos, _batch):
        ei = edges.edge_index
        return ei, (pos[ei[0]] - pos[ei[1]]).norm(dim=-1)

    return graph


def perturb(model, seed=0):
    """Seeded noise on every MARA parameter (gates then vary with the edge, as after training)."""
    from mara_bench.nn.mara import MARA

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, MARA):
                for p in m.parameters():
                    p.add_(0.3 * torch.randn(p.shape, generator=gen, dtype=F64).to(p.dtype))


def schnet(seed=0, n_inter=2, edges=None):
    torch.manual_seed(seed)
    return SchNet(hidden_channels=16, num_filters=12, num_interactions=n_inter, num_gaussians=10, cutoff=4.0,
                  interaction_graph=batch_edges(edges) if edges is not None else None).double()


def energy(model, edges: MaraEdges, b, pos=None, detach_vectors=False):
    pos = b.pos if pos is None else pos
    v = -b.edge_vectors(pos)
    with edges(v.detach() if detach_vectors else v, b.edge_index):
        return model(b.z, pos, b.batch).squeeze(-1)


def force_gate(mara, logit: float):
    """Make MARA's gate the constant sigmoid(logit), whatever the variant."""
    with torch.no_grad():
        if mara.variant == "scale":
            mara.gate_logit.fill_(logit)
        else:
            last = mara.readout if mara.variant == "paper" else mara.mlp[-1]
            last.weight.zero_()
            last.bias.fill_(logit)


@pytest.mark.parametrize("variant", ["scale", "control", "paper"])
def test_gate_forced_to_zero_is_the_unmodified_pyg_model(variant):
    if variant == "scale":
        from mara_bench.nn.mara import VARIANTS

        if "scale" not in VARIANTS:
            pytest.skip("this mara_bench has no 'scale' variant")
    edges = MaraEdges()
    plain = schnet(edges=edges)
    gated = copy.deepcopy(plain)
    attach_mara(gated, CFConv, lambda c: c.lin1.out_features, variant, r_max=4.0, edges=edges)
    perturb(gated)
    b = collate(frames(), F64)
    e_plain = energy(plain, edges, b)
    assert not torch.allclose(energy(gated, edges, b), e_plain, rtol=0, atol=1e-6)  # the gate does something
    for _, layer in gated_layers(gated):
        force_gate(layer.mara, -800.0)  # sigmoid(-800) = 0 in float64
    assert torch.allclose(energy(gated, edges, b), e_plain, rtol=0, atol=1e-12)
    assert all(float(g.abs().max()) == 0.0 for g in [layer.mara.last_gates for _, layer in gated_layers(gated)])


def test_only_the_chosen_layers_are_gated():
    """MARA on the second CFConv only, gate forced to a constant a: equals the plain model whose second CFConv
    messages are (1 + a) x_j W (lin1 scaled by 1 + a; CFConv's messages are linear in it), first one untouched."""
    edges = MaraEdges()
    plain = schnet(n_inter=3, edges=edges)
    gated = copy.deepcopy(plain)
    attach_mara(gated, ["interactions.1.conv"], 12, "control", r_max=4.0, edges=edges)
    assert [n for n, _ in gated_layers(gated)] == ["interactions.1.conv"]
    a = torch.sigmoid(torch.tensor(0.7, dtype=F64))
    force_gate(gated.interactions[1].conv.mara, 0.7)
    ref = copy.deepcopy(plain)
    with torch.no_grad():
        ref.interactions[1].conv.lin1.weight.mul_(1.0 + a)
    b = collate(frames(), F64)
    assert torch.allclose(energy(gated, edges, b), energy(ref, edges, b), rtol=0, atol=1e-12)
    assert not torch.allclose(energy(plain, edges, b), energy(ref, edges, b), rtol=0, atol=1e-6)


class PairConv(MessagePassing):
    """A test layer whose message depends on both ends and the edge: m_e = tanh(A x_j + B x_i) * f(r_e)."""

    def __init__(self, dim, flow="source_to_target"):
        super().__init__(aggr="add", flow=flow)
        self.a = torch.nn.Linear(dim, dim)
        self.b = torch.nn.Linear(dim, dim)

    def forward(self, x, edge_index, r):
        return self.propagate(edge_index, x=x, r=r)

    def message(self, x_j, x_i, r):
        return torch.tanh(self.a(x_j) + self.b(x_i)) * torch.exp(-r)[:, None]


def test_messages_and_vectors_line_up_in_any_edge_order():
    b = collate(frames(), F64)
    torch.manual_seed(1)
    layer = PairConv(8).double()
    edges = attach_mara(layer, [layer], 8, "paper", r_max=4.0)
    perturb(layer)
    x = torch.randn(b.num_nodes, 8, dtype=F64)
    d = -b.edge_vectors()
    r = d.norm(dim=-1)
    with edges(d, b.edge_index):
        out = layer(x, b.edge_index, r)
    src, dst = b.edge_index
    m = torch.tanh(layer.a(x[src]) + layer.b(x[dst])) * torch.exp(-r)[:, None]
    alpha = layer.mara.gates(m, d)
    expected = torch.zeros_like(x).index_add(0, dst, m * (1 + alpha))
    assert float(alpha.detach().std()) > 1e-4
    assert torch.allclose(out, expected, rtol=0, atol=1e-12)
    perm = torch.randperm(b.edge_index.shape[1], generator=torch.Generator().manual_seed(0))
    with edges(d[perm], b.edge_index[:, perm]):
        shuffled = layer(x, b.edge_index[:, perm], r[perm])
    assert torch.allclose(shuffled, out, rtol=0, atol=1e-12)


def test_target_to_source_layers_get_sender_minus_receiver():
    b = collate(frames(), F64)
    layer = PairConv(4, flow="target_to_source").double()
    edges = attach_mara(layer, PairConv, 4, "control", r_max=4.0)
    seen = []
    inner = layer.mara.forward
    layer.mara.forward = lambda m, v: (seen.append(v), inner(m, v))[1]
    d = -b.edge_vectors()  # p[edge_index[0]] - p[edge_index[1]]; this layer sends from edge_index[1]
    with edges(d, b.edge_index):
        layer(torch.randn(b.num_nodes, 4, dtype=F64), b.edge_index, d.norm(dim=-1))
    send, recv = b.edge_index[1], b.edge_index[0]
    assert torch.allclose(seen[0], b.pos[send] - b.pos[recv], rtol=0, atol=1e-15)


def test_forces_with_the_gate_match_finite_differences():
    edges = MaraEdges()
    model = schnet(edges=edges)
    attach_mara(model, CFConv, 12, "paper", r_max=4.0, edges=edges)
    perturb(model)
    b = collate(frames(sizes=(5,)), F64)
    pos = b.pos.clone().requires_grad_(True)
    forces = -torch.autograd.grad(energy(model, edges, b, pos).sum(), pos)[0]
    wrong = -torch.autograd.grad(energy(model, edges, b, pos, detach_vectors=True).sum(), pos)[0]
    h, worst, worst_wrong = 1e-5, 0.0, 0.0
    for a in range(5):
        for c in range(3):
            e = []
            for s in (1, -1):
                p = b.pos.clone()
                p[a, c] += s * h
                e.append(float(energy(model, edges, b, p).sum().detach()))
            fd = -(e[0] - e[1]) / (2 * h)
            worst = max(worst, abs(fd - float(forces[a, c])))
            worst_wrong = max(worst_wrong, abs(fd - float(wrong[a, c])))
    assert worst < 1e-7, worst
    assert worst_wrong > 1e-4, worst_wrong  # without the gate's geometry gradient the forces are wrong


def test_detach_restores_the_plain_model():
    edges = MaraEdges()
    plain = schnet(edges=edges)
    gated = copy.deepcopy(plain)
    attach_mara(gated, CFConv, 12, "paper", r_max=4.0, edges=edges)
    b = collate(frames(), F64)
    assert detach_mara(gated) == 2 and gated_layers(gated) == []
    assert not any(isinstance(m, torch.nn.Module) and type(m).__name__ == "MARA" for m in gated.modules())
    assert torch.equal(energy(gated, edges, b), energy(plain, edges, b))


def test_adapter_refuses_what_it_cannot_gate():
    from torch_geometric.utils import to_torch_coo_tensor

    edges = MaraEdges()
    model = schnet(edges=edges)
    with pytest.raises(TypeError, match="not a torch_geometric MessagePassing"):
        attach_mara(model, ["interactions.0.lin"], 12, "paper", r_max=4.0)
    with pytest.raises(ValueError, match="no submodule named"):
        attach_mara(model, ["interactions.9.conv"], 12, "paper", r_max=4.0)
    with pytest.raises(ValueError, match="no PairConv layer"):
        attach_mara(model, PairConv, 12, "paper", r_max=4.0)
    attach_mara(model, CFConv, 12, "paper", r_max=4.0, edges=edges)
    with pytest.raises(ValueError, match="already has MARA"):
        attach_mara(model, CFConv, 12, "paper", r_max=4.0)
    b = collate(frames(), F64)
    layer = PairConv(4).double()
    e2 = attach_mara(layer, [layer], 4, "control", r_max=4.0)
    x, d = torch.randn(b.num_nodes, 4, dtype=F64), -b.edge_vectors()
    with pytest.raises(RuntimeError, match="no edge vectors"):
        layer(x, b.edge_index, d.norm(dim=-1))
    # the layer propagates over other edges than those whose vectors were given
    with e2(d, b.edge_index), pytest.raises(RuntimeError, match="not the"):
        layer(x, b.edge_index.flip(0), d.norm(dim=-1))
    with warnings.catch_warnings():  # torch's note that sparse invariant checks are off
        warnings.simplefilter("ignore", UserWarning)
        adj = to_torch_coo_tensor(b.edge_index, size=b.num_nodes)
    with e2(d, b.edge_index), pytest.raises(RuntimeError, match="plain"):
        layer(x, adj, d.norm(dim=-1))
    layer.decomposed_layers = 2
    with e2(d, b.edge_index), pytest.raises(RuntimeError, match="decomposed_layers"):
        layer(x, b.edge_index, d.norm(dim=-1))
    with pytest.raises(ValueError, match="edge vectors"):
        with e2(d[:-1], b.edge_index):
            pass


def test_variant_off_attaches_nothing():
    model = schnet()
    n = sum(p.numel() for p in model.parameters())
    edges = attach_mara(model, CFConv, 12, "off", r_max=4.0)
    assert isinstance(edges, MaraEdges) and gated_layers(model) == []
    assert sum(p.numel() for p in model.parameters()) == n


# ------------------------------------------------------------------------------------------ README example
def readme_block(heading: str) -> str:
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    start = text.index(heading)
    m = re.search(r"```python\n(.*?)```", text[start:], re.S)
    assert m, f"no python block after '{heading}'"
    return m.group(1)


def test_readme_pyg_example_runs(monkeypatch):
    monkeypatch.setenv("MARA_BENCH_THREADS", os.environ.get("MARA_BENCH_THREADS", "1"))
    code = readme_block("Your model is built from PyG layers? Attach MARA in one call")
    ns: dict = {}
    exec(compile(code, "README.md", "exec"), ns)
    assert ns["energy"].shape == (ns["batch"].num_graphs,)
    assert ns["forces"].shape == ns["batch"].pos.shape and torch.isfinite(ns["forces"]).all()
    assert len(gated_layers(ns["model"])) == 3 and all(g.shape == (ns["batch"].num_edges, 1)
                                                       for g in (layer.mara.last_gates
                                                                 for _, layer in gated_layers(ns["model"])))


def test_data_is_plain_pyg_data_subclass():
    assert issubclass(MaraData, Data)
