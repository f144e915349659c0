"""train.energy_loss: the energy term of the loss per atom (default) or per structure (schnetpack's form, used by
the PaiNN paper preset); validated, used in training and in the validation loss."""

from __future__ import annotations

import pytest
import torch
from tiny_backbone import TinyPairModel, make_lj_frames

from mara_bench.backbone import TRAIN_DEFAULTS
from mara_bench.config import apply_overrides
from mara_bench.errors import UserError
from mara_bench.graph import build_graph, collate
from mara_bench.run.train import ENERGY_LOSSES, check_options, loss_terms, train, validate


def graphs(n, seed):
    return [build_graph(a.numbers, a.positions, 4.0, energy=a.info["energy"], forces=a.arrays["forces"], index=k)
            for k, a in enumerate(make_lj_frames(n, seed))]


@pytest.fixture(scope="module")
def data():
    return graphs(8, 0), graphs(6, 1)


def model():
    torch.manual_seed(0)
    return TinyPairModel({}, r_max=4.0, hidden=8).double()


def test_default_and_validation():
    assert TRAIN_DEFAULTS["energy_loss"] == "per_atom" and ENERGY_LOSSES == ("per_atom", "total")
    for v in ENERGY_LOSSES:
        check_options({**TRAIN_DEFAULTS, "energy_loss": v}, "test")
    with pytest.raises(UserError, match="train.energy_loss 'per_structure' unknown; choose from per_atom, total"):
        check_options({**TRAIN_DEFAULTS, "energy_loss": "per_structure"}, "test")
    # settable with --set train.energy_loss=...
    assert apply_overrides(TRAIN_DEFAULTS, {"train.energy_loss": "total"}, "train", "x")["energy_loss"] == "total"


def test_loss_terms_per_atom_and_total(data):
    tr, _ = data
    batch = collate(tr[:4], torch.float64)
    m = model()
    out = m(batch, compute_forces=True, training=False)
    de = (out["energy"] - batch.energy).detach()
    n = batch.num_atoms.double()
    e_atom, f_atom = (t.detach() for t in loss_terms(out, batch))
    e_tot, f_tot = (t.detach() for t in loss_terms(out, batch, "total"))
    assert float(e_atom) == pytest.approx(float(((de / n) ** 2).mean()), rel=1e-12)
    assert float(e_tot) == pytest.approx(float((de**2).mean()), rel=1e-12)
    assert float(f_atom) == float(f_tot)  # the force term does not change
    assert float(e_tot) > float(e_atom)  # n_atoms > 1


def test_validation_loss_uses_the_same_form(data):
    _, va = data
    m = model()
    batch = collate(va, torch.float64)
    de = (m(batch, compute_forces=False)["energy"] - batch.energy).detach()
    n = batch.num_atoms.double()
    v_atom = validate(m, va, 4, torch.float64, "cpu", 1.0, 0.0)
    v_tot = validate(m, va, 4, torch.float64, "cpu", 1.0, 0.0, energy_loss="total")
    assert v_atom["loss"] == pytest.approx(float(((de / n) ** 2).mean()), rel=1e-10)
    assert v_tot["loss"] == pytest.approx(float((de**2).mean()), rel=1e-10)
    assert v_tot["energy_mae_mev_per_atom"] == v_atom["energy_mae_mev_per_atom"]  # the MAE stays per atom


def test_training_with_total_energy_loss(data, tmp_path):
    tr, va = data
    o = {**TRAIN_DEFAULTS, "max_epochs": 2, "batch_size": 4, "lr": 0.005, "ema_decay": None, "energy_loss": "total"}
    runs = {}
    for form in ENERGY_LOSSES:
        m = model()
        res = train(m, tr, va, {**o, "energy_loss": form}, seed=0, dtype=torch.float64, device="cpu",
                    run_dir=tmp_path / form, progress=False)
        runs[form] = res
        last = validate(m, va, 32, torch.float64, "cpu", o["energy_weight"], o["forces_weight"], energy_loss=form)
        assert res.log[-1][2] == pytest.approx(last["loss"], rel=1e-9)  # the logged val loss is in that form
    # a different loss gives a different training trajectory
    assert runs["total"].log[-1][1] != runs["per_atom"].log[-1][1]


def test_painn_paper_preset_uses_schnetpack_total_energy_loss():
    from mara_bench.registry import get_backbone

    painn = get_backbone("painn")
    assert painn.preset("paper")["train"]["energy_loss"] == "total"
    assert painn.preset("quick")["train"]["energy_loss"] == "per_atom"
    for name in ("mace", "nequip"):
        for preset in ("quick", "paper"):
            assert get_backbone(name).preset(preset)["train"]["energy_loss"] == "per_atom"
