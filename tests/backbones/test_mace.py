"""MACE backbone and its MARA adapter: forces, stock equivalence, gate algebra, symmetry, structure.

Smoke-sized models (seconds); float64 where exactness is asserted. No dataset files are needed: the molecules
are ASE's built-in geometries (ethanol, water), perturbed with a fixed seed.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mara_bench_backbones.mace import MACEBackbone
from mara_bench_backbones.mace_mara import EdgeVectorTap, MaraConvTP

from mara_bench.backbone import MaraOptions
from mara_bench.errors import UserError
from mara_bench.graph import build_graph, collate
from mara_bench.testing import BackboneTestKit

F64 = torch.float64
VARIANTS = ["off", "paper", "control"]
STATS = SimpleNamespace(elements=[1, 6, 8], e0s={1: -13.6, 6: -1029.8, 8: -2041.9}, avg_num_neighbors=6.0,
                        force_rms=1.3, energy_per_atom_mean=-0.1)


def smoke_options() -> dict:
    return MACEBackbone.preset("smoke")["model"]


def build(variant: str = "off", dtype=F64, seed: int = 0, options: dict | None = None, trained_like: bool = True):
    """A smoke MACE; with ``trained_like`` MARA's parameters get seeded noise.

    At initialisation the ``paper`` gate is a constant: its readout averages a LayerNorm output (γ = 1, β = 0)
    over channels, which is exactly 0, so α = sigmoid(b) whatever the geometry. Perturbing MARA's parameters
    (as training does) makes the gate depend on the messages and directions, so the tests below exercise it.
    """
    torch.manual_seed(seed)
    model = MACEBackbone().build(options or smoke_options(), STATS, MaraOptions(variant=variant), dtype)
    if trained_like:
        gen = torch.Generator().manual_seed(seed + 100)
        with torch.no_grad():
            for p in (p for m in model.mara_modules() for p in m.parameters()):
                p.add_(0.3 * torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.dtype))
    return model


def molecules(seed: int = 0, dtype=F64, r_max: float | None = None):
    """Ethanol + water (ASE geometries, 0.05 Å noise) as one GraphBatch."""
    from ase.build import molecule

    rng = np.random.default_rng(seed)
    r_max = r_max or smoke_options()["r_max"]
    graphs = []
    for name in ("CH3CH2OH", "H2O"):
        a = molecule(name)
        pos = a.positions + 0.05 * rng.standard_normal(a.positions.shape)
        graphs.append(build_graph(a.numbers, pos, r_max))
    return collate(graphs, dtype)


def energy_at(model, batch, pos) -> float:
    b = batch.clone()
    b.positions = pos
    return float(model(b, compute_forces=False)["energy"].detach().sum())


def random_rotation(seed: int) -> torch.Tensor:
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return torch.tensor(q, dtype=F64)


def symmetry_errors(model, batch, seed: int = 1) -> tuple[float, float]:
    """max |E(Rx) - E(x)| and max |F(Rx) - F(x) R^T| for a random proper rotation R (float64)."""
    R = random_rotation(seed)
    out = model(batch)
    rb = batch.clone()
    rb.positions = batch.positions @ R.T
    rot = model(rb)
    de = (rot["energy"] - out["energy"]).abs().max().item()
    df = (rot["forces"] - out["forces"] @ R.T).abs().max().item()
    return de, df


class TestMACEKit(BackboneTestKit):
    """The shared backbone tests (finite differences, symmetry, batching, cutoff, dtypes, training, gates)."""

    backbone = MACEBackbone


# ---------------------------------------------------------------------------------------------- forces
@pytest.mark.parametrize("variant", VARIANTS)
def test_forces_are_minus_energy_gradient_by_finite_differences(variant):
    model = build(variant)
    batch = molecules()
    forces = model(batch)["forces"].detach()
    h = 1e-5
    rng = np.random.default_rng(3)
    for atom, axis in [(0, 0), (2, 1), (5, 2), (8, 0), (10, 2)] + [(int(rng.integers(12)), int(rng.integers(3)))]:
        plus, minus = batch.positions.clone(), batch.positions.clone()
        plus[atom, axis] += h
        minus[atom, axis] -= h
        fd = -(energy_at(model, batch, plus) - energy_at(model, batch, minus)) / (2 * h)
        assert abs(fd - forces[atom, axis].item()) < 1e-7 * max(1.0, abs(fd)), (variant, atom, axis, fd)


def test_forces_include_the_mara_path():
    """Cutting MARA's geometric input from autograd changes the forces: MACE's own -dE/dx sees MARA."""
    model = build("paper")
    batch = molecules()
    forces = model(batch)["forces"].detach()
    tap = model.mace.spherical_harmonics
    assert isinstance(tap, EdgeVectorTap)
    for block in model.mace.interactions:  # MARA gets detached vectors: gate no longer differentiated
        wrapper = block.conv_tp
        original = wrapper.mara.forward
        wrapper.mara.forward = (lambda f: (lambda m, d: f(m, d.detach())))(original)
    cut = model(batch)["forces"].detach()
    assert (cut - forces).abs().max().item() > 1e-8


# ---------------------------------------------------------------------------------------------- stock MACE
def stock_mace_batch(batch, elements, r_max):
    """MACE's own input dict for the same structures, built with mace.data / mace.tools utilities."""
    from mace import data as mdata
    from mace.tools import AtomicNumberTable, torch_geometric

    previous = torch.get_default_dtype()
    torch.set_default_dtype(F64)
    try:
        items = []
        for g in range(batch.num_graphs):
            sl = slice(int(batch.ptr[g]), int(batch.ptr[g + 1]))
            cfg = mdata.Configuration(atomic_numbers=batch.numbers[sl].numpy(),
                                      positions=batch.positions[sl].numpy(), properties={}, property_weights={})
            items.append(mdata.AtomicData.from_config(cfg, z_table=AtomicNumberTable(elements), cutoff=r_max))
        loader = torch_geometric.dataloader.DataLoader(items, batch_size=len(items), shuffle=False)
        return next(iter(loader)).to_dict()
    finally:
        torch.set_default_dtype(previous)


def test_off_model_is_stock_mace_with_identical_outputs():
    from mace.modules import ScaleShiftMACE

    model = build("off")
    assert type(model.mace) is ScaleShiftMACE  # the unmodified upstream class, no wrapper anywhere
    assert not any(isinstance(m, (EdgeVectorTap, MaraConvTP)) for m in model.modules())
    batch = molecules()
    ours = model(batch)
    data = stock_mace_batch(batch, model.elements, model.r_max)
    assert data["edge_index"].shape == batch.edge_index.shape  # same neighbour list (mace.data's own)
    stock = model.mace(data, training=False, compute_force=True)
    assert torch.allclose(ours["energy"], stock["energy"], rtol=0, atol=1e-10)
    assert torch.allclose(ours["forces"], stock["forces"], rtol=0, atol=1e-10)


@pytest.mark.parametrize("variant", ["paper", "control"])
def test_mara_model_contains_the_same_mace_weights(variant):
    """Same seed: MARA-on holds exactly the off model's MACE parameters (MARA is built after MACE)."""
    off, on = build("off"), build(variant)
    sd_off = off.mace.state_dict()
    sd_on = {k.replace("conv_tp.tp.", "conv_tp."): v for k, v in on.mace.state_dict().items()
             if ".conv_tp.mara." not in k}
    assert sd_off.keys() == sd_on.keys()
    assert all(torch.equal(sd_off[k], sd_on[k]) for k in sd_off)


# ---------------------------------------------------------------------------------------------- gate = 1
@pytest.mark.parametrize("variant", ["paper", "control"])
def test_gate_one_equals_off_model_with_doubled_conv_tp_messages(variant):
    on, off = build(variant), build("off")
    for mara in on.mara_modules():  # force α = 1; MARA's own forward still forms m + α·m
        mara.gates = lambda m, d: torch.ones(m.shape[0], 1, dtype=m.dtype)
    for block in off.mace.interactions:  # independent construction: stock conv_tp output times 2
        block.conv_tp.register_forward_hook(lambda mod, inp, out: 2.0 * out)
    batch = molecules()
    a, b = on(batch), off(batch)
    assert torch.allclose(a["energy"], b["energy"], rtol=0, atol=1e-10)
    assert torch.allclose(a["forces"], b["forces"], rtol=0, atol=1e-10)
    plain = build("off")(batch)  # and doubling matters: the comparison can fail
    assert (plain["energy"] - b["energy"]).abs().max().item() > 1e-6
    assert all(torch.equal(g, torch.ones_like(g)) for g in on.last_gates())


# ---------------------------------------------------------------------------------------------- symmetry
@pytest.mark.parametrize("variant", ["off", "control"])
def test_energy_invariance_and_force_equivariance(variant):
    de, df = symmetry_errors(build(variant), molecules())
    print(f"{variant}: max |dE| = {de:.2e} eV, max |dF| = {df:.2e} eV/A")
    assert de <= 1e-10 and df <= 1e-10


def test_paper_variant_symmetry_error_is_measured():
    de, df = symmetry_errors(build("paper"), molecules())
    print(f"paper: max |dE| = {de:.3e} eV, max |dF| = {df:.3e} eV/A (smoke size, MARA parameters perturbed)")
    assert np.isfinite(de) and np.isfinite(df)


# ---------------------------------------------------------------------------------------------- structure
@pytest.mark.parametrize("variant", ["paper", "control"])
def test_every_interaction_block_has_a_mara_wrapper(variant):
    model = build(variant, options={**smoke_options(), "num_interactions": 3})
    blocks = list(model.mace.interactions)
    assert len(blocks) == 3
    assert all(isinstance(b.conv_tp, MaraConvTP) for b in blocks)
    maras = model.mara_modules()
    assert len(maras) == 3 and all(m.variant == variant for m in maras)
    assert [m.message_dim for m in maras] == [b.conv_tp.tp.irreps_out.dim for b in blocks]
    model(molecules())
    gates = model.last_gates()
    assert len(gates) == 3 and all(g.shape == (molecules().edge_index.shape[1], 1) for g in gates)
    assert all(bool(((g > 0) & (g < 1)).all()) for g in gates)


@pytest.mark.parametrize("variant", ["paper", "control"])
def test_parameter_count_difference_is_mara(variant):
    n_off = sum(p.numel() for p in build("off").parameters())
    on = build(variant)
    n_on = sum(p.numel() for p in on.parameters())
    n_mara = sum(p.numel() for m in on.mara_modules() for p in m.parameters())
    assert n_mara > 0 and n_on - n_off == n_mara
    print(f"smoke {variant}: off {n_off}, on {n_on}, MARA {n_mara}")


def test_control_scalar_slice_is_the_l0_channels():
    model = build("control")
    for block in model.mace.interactions:
        irreps = block.conv_tp.tp.irreps_out
        sl = block.conv_tp.mara._scalar_slice
        n0 = sum(mul for mul, ir in irreps if ir.l == 0 and ir.p == 1)
        assert sl == slice(0, n0) and str(irreps).startswith(f"{irreps[0].mul}x0e")


# ---------------------------------------------------------------------------------------------- errors, dtype
def test_unknown_element_is_a_user_error_naming_it():
    model = build("off")
    b = molecules()
    b.numbers = b.numbers.clone()
    b.numbers[3] = 17
    with pytest.raises(UserError, match=r"Z=17 \(Cl\)"):
        model(b)


def test_unknown_model_option_is_a_user_error():
    with pytest.raises(UserError, match="hiden_irreps"):
        MACEBackbone().build({**smoke_options(), "hiden_irreps": "8x0e"}, STATS, MaraOptions(), F64)


def test_fused_convolution_is_refused_with_mara():
    from mara_bench_backbones.mace import build_mace_model, resolve_options
    from mara_bench_backbones.mace_mara import attach_mara

    mace_model = build_mace_model(resolve_options(smoke_options()), STATS)
    mace_model.interactions[1].conv_fusion = True  # what a cueq/oeq conv_fusion config sets on a block
    with pytest.raises(UserError, match="conv_fusion"):
        attach_mara(mace_model, lambda dim, sl: torch.nn.Identity())


def test_float32_build_and_default_dtype_restored():
    before = torch.get_default_dtype()
    model = build("paper", dtype=torch.float32)
    assert torch.get_default_dtype() == before
    assert all(p.dtype == torch.float32 for p in model.parameters())
    out = model(molecules(dtype=torch.float32))
    assert out["energy"].dtype == torch.float32 and out["forces"].shape == (12, 3)


def test_training_mode_forces_are_differentiable_and_batch_untouched():
    model = build("paper")
    batch = molecules()
    out = model(batch, training=True)
    assert out["forces"].requires_grad and not batch.positions.requires_grad
    (out["forces"].square().sum() + out["energy"].sum()).backward()
    grads = [p.grad for m in model.mara_modules() for p in m.parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_deepcopy_keeps_one_shared_edge_geometry():
    model = copy.deepcopy(build("paper"))
    geo = model.mace.spherical_harmonics.geometry
    assert all(b.conv_tp.context is geo for b in model.mace.interactions)
    model(molecules())
    assert geo.vectors is None  # released after the forward pass
