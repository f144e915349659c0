"""``BackboneTestKit``: the tests every backbone (built-in or plugin) should pass, for every MARA variant.

Use it from a pytest file::

    from mara_bench.testing import BackboneTestKit

    class TestMyBackbone(BackboneTestKit):
        backbone = "mybackbone"          # a registered name, or the Backbone class itself
        # optional: tolerances (see the class attributes below), model_overrides, preset

Every test runs once per MARA variant (``off``, ``scale``, ``control``, ``paper``) on the backbone's ``smoke`` preset and on
tiny random molecules (H, C, O; built with :func:`mara_bench.graph.build_graph`), with a small stats object:

* ``test_forces_are_energy_gradient`` — forces = -dE/dx against central finite differences (float64);
* ``test_rotation_reflection`` — energy invariance / force equivariance under random rotations and a
  reflection (float64): asserted for ``off``, ``scale`` and ``control``; measured and printed for ``paper`` (the published
  gate is only approximately invariant);
* ``test_translation`` — exact translation invariance (all variants);
* ``test_permutation`` — renumbering the atoms permutes the forces and keeps the energy;
* ``test_batch_consistency`` — a batch of molecules gives what each molecule gives alone;
* ``test_cutoff_smoothness`` — energy and forces continuous as an atom crosses r_max;
* ``test_force_continuity`` — forces continuous where a bond points along a MARA grid direction (the cone points of
  the ``paper`` gate's ρ_ek, :mod:`mara_bench.nn.continuity`): the ε → 0 limit of |F(+ε) − F(−ε)| is asserted ≤
  ``continuity_atol`` for ``off``, ``scale`` and ``control``; measured and printed for ``paper``;
* ``test_float32_and_float64`` — a float32 model runs and agrees with the same weights in float64;
* ``test_training_lowers_loss`` — a few Adam steps lower an energy+forces loss;
* ``test_gates_recorded`` — MARA modules exist only when asked for and record gates [E, 1] in (0, 1).

MARA's ``paper`` gate is a constant at initialisation (its readout averages a fresh LayerNorm, which is exactly 0),
so the kit perturbs every MARA parameter with seeded noise ("trained-like") before testing; otherwise the gate
would not depend on the geometry and the tests would not exercise it.
"""

from __future__ import annotations

import copy
import importlib.util
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pytest
import torch

from .backbone import MaraOptions
from .config import MARA_VARIANTS
from .graph import FrameGraph, GraphBatch, build_graph, collate

VARIANTS = MARA_VARIANTS  # off, scale, control, paper
F64 = torch.float64


@dataclass
class KitStats:
    """The dataset statistics a backbone's build() may use. Required: elements, e0s, avg_num_neighbors."""

    elements: list[int] = field(default_factory=lambda: [1, 6, 8])
    e0s: dict[int, float] = field(default_factory=lambda: {1: -13.6, 6: -1029.8, 8: -2041.9})
    avg_num_neighbors: float = 4.0
    force_rms: float = 1.3  # optional: eV/Å
    energy_per_atom_mean: float = -0.1  # optional: eV/atom after E0s
    energy_per_atom_std: float = 0.05  # optional
    n_frames: int = 3


def random_molecule(n_atoms: int, rng: np.random.Generator, r_max: float, elements=(1, 6, 8),
                    min_dist: float = 0.95, box: float = 2.6) -> FrameGraph:
    """A random compact molecule (all atoms at least ``min_dist`` apart) with its neighbour list."""
    pos: list[np.ndarray] = []
    while len(pos) < n_atoms:
        p = rng.uniform(-box / 2, box / 2, size=3)
        if all(np.linalg.norm(p - q) >= min_dist for q in pos):
            pos.append(p)
    numbers = rng.choice(np.asarray(elements), size=n_atoms)
    return build_graph(numbers, np.stack(pos), r_max)


def perturb_mara(model: torch.nn.Module, seed: int = 0, scale: float = 0.3) -> None:
    """Add seeded noise to every MARA parameter, so that the gates vary with the edge (as after training)."""
    gen = torch.Generator().manual_seed(seed)
    mods = model.mara_modules() if hasattr(model, "mara_modules") else []
    with torch.no_grad():
        for m in mods:
            for p in m.parameters():
                p.add_(scale * torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.dtype))


def _equivariance_error(fn, batch: GraphBatch, n_rotations: int, seed: int, reflection: bool) -> dict[str, float]:
    from .nn.symmetry import equivariance_error

    return dict(equivariance_error(fn, batch, n_rotations=n_rotations, seed=seed, reflection=reflection))


class BackboneTestKit:
    """Base class of a backbone's pytest suite. Subclass it and set ``backbone``."""

    backbone: ClassVar[Any] = None  # registered name or Backbone subclass
    preset: ClassVar[str] = "smoke"
    model_overrides: ClassVar[dict[str, Any]] = {}  # merged into the preset's model options
    seed: ClassVar[int] = 0
    # tolerances (eV, eV/Å); float64 unless said otherwise
    fd_step: ClassVar[float] = 1e-4
    fd_atol: ClassVar[float] = 1e-5
    fd_rtol: ClassVar[float] = 1e-4
    symmetry_atol: ClassVar[float] = 1e-8
    batch_atol: ClassVar[float] = 1e-8
    cutoff_delta: ClassVar[float] = 1e-5  # atom moved from r_max - delta to r_max + delta
    cutoff_energy_atol: ClassVar[float] = 1e-6
    cutoff_forces_atol: ClassVar[float] = 1e-4
    continuity_atol: ClassVar[float] = 1e-7  # ε→0 force jump at a MARA cone point (smooth models: ~1e-11)
    float32_rtol: ClassVar[float] = 1e-3  # |F32 - F64| <= rtol * max(1, max|F64|)
    converted_rtol: ClassVar[float] = 1e-6  # float32 model .to(float64) vs the float64 build, same weights
    train_steps: ClassVar[int] = 4
    train_lr: ClassVar[float] = 5e-3

    # ------------------------------------------------------------------ plumbing
    @classmethod
    def backbone_class(cls):
        if cls.backbone is None:
            raise TypeError(f"{cls.__name__}: set the class attribute 'backbone' (a name or a Backbone class)")
        if isinstance(cls.backbone, str):
            from .registry import get_backbone

            bb = get_backbone(cls.backbone)
        else:
            bb = cls.backbone
        missing = [r for r in getattr(bb, "requires", ()) if importlib.util.find_spec(r) is None]
        if missing:
            pytest.skip(f"backbone '{bb.name}' needs {', '.join(missing)}, which is not installed")
        return bb

    @classmethod
    def model_options(cls) -> dict[str, Any]:
        return {**cls.backbone_class().preset(cls.preset)["model"], **cls.model_overrides}

    @classmethod
    def r_max(cls) -> float:
        return float(cls.model_options()["r_max"])

    @classmethod
    def stats(cls) -> KitStats:
        return KitStats()

    @classmethod
    def build(cls, variant: str, dtype: torch.dtype = F64) -> torch.nn.Module:
        """The smoke model for ``variant`` (seeded; MARA parameters perturbed)."""
        torch.manual_seed(cls.seed)
        model = cls.backbone_class()().build(cls.model_options(), cls.stats(), MaraOptions(variant=variant), dtype)
        perturb_mara(model, cls.seed)
        return model.eval()

    @classmethod
    def molecules(cls, n: int = 3) -> list[FrameGraph]:
        rng = np.random.default_rng(cls.seed + 17)
        return [random_molecule(k, rng, cls.r_max()) for k in (5, 4, 6)[:n]]

    @pytest.fixture(scope="class", params=VARIANTS)
    @classmethod
    def variant(cls, request) -> str:
        return request.param

    @pytest.fixture(scope="class")
    @classmethod
    def model64(cls, variant):
        return cls.build(variant, F64)

    @staticmethod
    def predict(model, batch: GraphBatch, compute_forces: bool = True) -> dict[str, torch.Tensor]:
        out = model(batch, compute_forces=compute_forces, training=False)
        return {k: v.detach() for k, v in out.items()}

    # ------------------------------------------------------------------ tests
    def test_forces_are_energy_gradient(self, model64):
        g = self.molecules()[0]
        batch = collate([g], dtype=F64)
        forces = self.predict(model64, batch)["forces"]
        assert forces.shape == batch.positions.shape and forces.dtype == F64
        rng = np.random.default_rng(self.seed)
        coords = [(int(a), int(c)) for a, c in zip(rng.integers(0, len(g.numbers), 6), rng.integers(0, 3, 6),
                                                   strict=True)]
        h = self.fd_step
        for a, c in coords:
            e = []
            for s in (+1, -1):
                pos = g.positions.copy()
                pos[a, c] += s * h
                e.append(float(self.predict(model64, collate([build_graph(g.numbers, pos, self.r_max())], F64),
                                            compute_forces=False)["energy"][0]))
            fd = -(e[0] - e[1]) / (2 * h)
            got = float(forces[a, c])
            assert abs(fd - got) <= self.fd_atol + self.fd_rtol * abs(fd), (
                f"forces are not -dE/dx: atom {a}, component {'xyz'[c]}: the model's force is {got:.8g} eV/Å but the "
                f"central finite difference of its energy (step {h:g} Å) gives {fd:.8g} eV/Å (tolerance "
                f"{self.fd_atol:g} + {self.fd_rtol:g}·|fd|); check the sign and any scaling of the forces")

    def test_rotation_reflection(self, model64, variant, record_property):
        batch = collate(self.molecules(), dtype=F64)

        def fn(b):
            return self.predict(model64, b)

        err = _equivariance_error(fn, batch, n_rotations=3, seed=self.seed, reflection=True)
        record_property(f"equivariance_{variant}", err)
        print(f"\n[{self.backbone_class().name} mara={variant}] equivariance error (float64): {err}")
        maxima = {k: v for k, v in err.items() if "max" in k}
        assert maxima, f"equivariance_error returned no maxima: {err}"
        if variant == "paper":
            assert all(np.isfinite(v) for v in err.values() if isinstance(v, float))
        else:
            assert max(maxima.values()) <= self.symmetry_atol, err

    def test_translation(self, model64):
        batch = collate(self.molecules(), dtype=F64)
        ref = self.predict(model64, batch)
        moved = batch.clone()
        moved.positions = batch.positions + torch.tensor([3.1, -2.2, 0.7], dtype=F64)
        out = self.predict(model64, moved)
        de = float((out["energy"] - ref["energy"]).abs().max())
        df = float((out["forces"] - ref["forces"]).abs().max())
        assert de <= self.symmetry_atol, (f"energy is not translation invariant: a rigid shift by (3.1, -2.2, 0.7) Å "
                                          f"changes it by {de:.3g} eV (tolerance {self.symmetry_atol:g}); the model "
                                          "must use only relative positions (edge vectors)")
        assert df <= self.symmetry_atol, (f"forces are not translation invariant: a rigid shift changes them by "
                                          f"{df:.3g} eV/Å (tolerance {self.symmetry_atol:g})")

    def test_permutation(self, model64):
        g = self.molecules()[2]
        perm = np.random.default_rng(self.seed + 1).permutation(len(g.numbers))
        gp = build_graph(g.numbers[perm], g.positions[perm], self.r_max())
        ref = self.predict(model64, collate([g], F64))
        out = self.predict(model64, collate([gp], F64))
        assert torch.allclose(out["energy"], ref["energy"], rtol=0, atol=self.batch_atol)
        assert torch.allclose(out["forces"], ref["forces"][torch.as_tensor(perm)], rtol=0, atol=self.batch_atol)

    def test_batch_consistency(self, model64):
        graphs = self.molecules()
        together = self.predict(model64, collate(graphs, F64))
        alone = [self.predict(model64, collate([g], F64)) for g in graphs]
        assert together["energy"].shape == (len(graphs),)
        assert torch.allclose(together["energy"], torch.cat([a["energy"] for a in alone]), rtol=0, atol=self.batch_atol)
        assert torch.allclose(together["forces"], torch.cat([a["forces"] for a in alone]), rtol=0, atol=self.batch_atol)

    def test_cutoff_smoothness(self, model64):
        """A third atom moves along x across r_max of its nearest neighbour; E and F must not jump."""
        rc, d = self.r_max(), self.cutoff_delta
        numbers = np.array([8, 1, 6])

        def at(x):
            # |atom2 - atom1| = x exactly; atom0 stays farther than x from atom2
            pos = np.array([[0.0, 0.0, 0.0], [0.97, 0.0, 0.0], [0.97 + np.sqrt(x * x - 0.09), 0.3, 0.0]])
            g = build_graph(numbers, pos, rc)
            return g, self.predict(model64, collate([g], F64))

        g_in, inside = at(rc - d)
        g_out, outside = at(rc + d)
        shifted = build_graph(numbers, g_in.positions + np.array([2.3, -1.1, 0.4]), rc)
        dt = float((self.predict(model64, collate([shifted], F64))["energy"] - inside["energy"]).abs().max())
        if dt > self.symmetry_atol:  # a translation bug would look like a cutoff jump here: name the real cause
            pytest.fail(f"cannot judge the cutoff: the energy changes by {dt:.3g} eV under a rigid translation of this "
                        "geometry, so the model is not translation invariant (see test_translation); fix that first")
        assert g_in.edge_index.shape[1] == g_out.edge_index.shape[1] + 2, "the test geometry must cross the cutoff"
        de = float((inside["energy"] - outside["energy"]).abs().max())
        df = float((inside["forces"] - outside["forces"]).abs().max())
        assert de <= self.cutoff_energy_atol, f"energy jumps by {de:.3g} eV at r_max"
        assert df <= self.cutoff_forces_atol, f"forces jump by {df:.3g} eV/Å at r_max"

    def test_force_continuity(self, model64, variant, record_property):
        """Bonds rotated onto MARA grid directions, the receiver moved by ±ε across the cone point
        (ε = 1e-3, 1e-4, 1e-5 Å): the force jump must vanish as ε → 0 except for ``paper`` (measured, printed)."""
        from .nn.continuity import force_continuity, model_grid, summary_line

        grid = model_grid(model64, default=MaraOptions().grid)

        def fn(b):
            return self.predict(model64, b)

        res = force_continuity(fn, self.molecules()[:2], grid=grid)
        record_property(f"force_continuity_{variant}", {k: v for k, v in res.items() if k != "probes"})
        print(f"\n[{self.backbone_class().name} mara={variant}] {summary_line(res)}")
        assert all(np.isfinite(res["jump_max_eV_A"])) and np.isfinite(res["jump_limit_eV_A"]), res
        if variant != "paper":
            assert res["jump_limit_eV_A"] <= self.continuity_atol, (
                f"forces jump by {res['jump_limit_eV_A']:.3g} eV/Å (ε → 0 limit) where a bond crosses a MARA grid "
                f"direction: {summary_line(res)}")

    def test_float32_and_float64(self, variant):
        m32 = self.build(variant, torch.float32)
        m64 = self.build(variant, F64)
        m64.load_state_dict(m32.state_dict())
        graphs = self.molecules()
        o32 = self.predict(m32, collate(graphs, torch.float32))
        o64 = self.predict(m64, collate(graphs, F64))
        assert o32["forces"].dtype == torch.float32
        assert torch.isfinite(o32["energy"]).all() and torch.isfinite(o32["forces"]).all()
        scale = max(1.0, float(o64["forces"].abs().max()))
        assert float((o32["forces"].double() - o64["forces"]).abs().max()) <= self.float32_rtol * scale
        e_scale = max(1.0, float(o64["energy"].abs().max()))
        assert float((o32["energy"].double() - o64["energy"]).abs().max()) <= self.float32_rtol * e_scale
        # .to(float64) of a float32 model (the evaluator measures symmetry that way) runs in float64 and matches
        # the float64 build up to constants the float32 build rounded (e.g. e3nn's Clebsch-Gordan buffers)
        converted = copy.deepcopy(m32).to(F64)
        oc = self.predict(converted, collate(graphs, F64))
        assert oc["forces"].dtype == F64
        assert float((oc["forces"] - o64["forces"]).abs().max()) <= self.converted_rtol * scale
        assert float((oc["energy"] - o64["energy"]).abs().max()) <= self.converted_rtol * e_scale

    def test_training_lowers_loss(self, variant):
        """A few Adam steps on an energy+forces loss against a smooth pair potential lower that loss."""
        model = self.build(variant, torch.float32).train()
        graphs = self.molecules()
        batch = collate(graphs, torch.float32)
        pos = batch.positions.double().requires_grad_(True)
        r = (pos[batch.edge_index[1]] - pos[batch.edge_index[0]]).norm(dim=-1)
        e_pair = 0.5 * (torch.exp(-2.0 * (r - 1.2)) - 2.0 * torch.exp(-(r - 1.2)))
        e_atom = torch.zeros(len(pos), dtype=F64).index_add(0, batch.edge_index[1], e_pair)
        e_ref = torch.zeros(batch.num_graphs, dtype=F64).index_add(0, batch.batch, e_atom)
        f_ref = -torch.autograd.grad(e_ref.sum(), pos)[0].detach()
        e0 = torch.tensor([self.stats().e0s[int(z)] for z in batch.numbers], dtype=F64)
        e_ref = e_ref.detach() + torch.zeros_like(e_ref).index_add(0, batch.batch, e0)
        n = batch.num_atoms.double()
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=self.train_lr)

        def loss_fn():
            out = model(batch, compute_forces=True, training=True)
            le = (((out["energy"].double() - e_ref) / n) ** 2).mean()
            lf = ((out["forces"].double() - f_ref) ** 2).mean()
            return le + 10.0 * lf

        losses = []
        for _ in range(self.train_steps):
            opt.zero_grad()
            loss = loss_fn()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        final = float(loss_fn().detach())
        assert np.isfinite(final) and final < losses[0], (losses, final)

    def test_gates_recorded(self, model64, variant):
        batch = collate(self.molecules(), dtype=F64)
        self.predict(model64, batch)
        mods = model64.mara_modules()
        if variant == "off":
            assert mods == [] and model64.last_gates() == []
            return
        gates = model64.last_gates()
        assert len(mods) >= 1 and len(gates) == len(mods)
        for g in gates:
            assert g.shape == (batch.edge_index.shape[1], 1)
            assert bool(((g > 0) & (g < 1)).all())
        if variant == "paper":  # the perturbed gate must depend on the edge (else the tests above prove little)
            assert float(torch.cat(gates).std()) > 1e-4
