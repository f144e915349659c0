"""Deterministic compute cost of a model: FLOPs of one training step and of inference.

FLOPs are counted with :class:`torch.utils.flop_counter.FlopCounterMode` (matrix products; a multiply-add counts 2;
element-wise work is not counted) on a fixed *reference batch*: the first ``batch_size`` training frames in index
order. A training step is forward + forces (``create_graph=True``) + loss + backward, so the double backward of
force training is included; the optimizer step is element-wise and not counted. Training FLOPs per epoch =
FLOPs per reference frame × the number of training frames. These numbers depend only on the model, the options and
the data, never on the machine's load, so a FLOP budget gives the same runs everywhere (``train.budget_flops``).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import torch

from ..graph import FrameGraph, collate


class _GlobalOnly:
    """Stands in for FlopCounterMode's per-module tracker. That tracker hooks module outputs with multi-grad hooks,
    which raise inside ``torch.autograd.grad`` (how every backbone computes forces); totals need no modules."""

    parents = frozenset({"Global"})

    def __enter__(self):
        return self

    def __exit__(self, *args):
        return False


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of one call of ``fn`` (``FlopCounterMode``: matrix products, multiply-add = 2; deterministic)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _GlobalOnly()
    with counter:
        fn()
    return int(counter.get_total_flops())


def _graph_sizes(graphs: list[FrameGraph]) -> dict[str, int]:
    return {"frames": len(graphs), "atoms": int(sum(len(g.numbers) for g in graphs)),
            "edges": int(sum(g.edge_index.shape[1] for g in graphs))}


def train_step_flops(model: torch.nn.Module, train_graphs: list[FrameGraph], batch_size: int,
                     dtype: torch.dtype, device, energy_loss: str = "per_atom") -> dict[str, Any]:
    """FLOPs of one training step on the reference batch (a copy of ``model`` is used; ``model`` is untouched)."""
    from .train import loss_terms

    ref = train_graphs[: max(1, int(batch_size))]
    m = copy.deepcopy(model).train()
    batch = collate(ref, dtype=dtype).to(device)

    def step():
        out = m(batch, compute_forces=batch.forces is not None, training=True)
        e_mse, f_mse = loss_terms(out, batch, energy_loss)
        (e_mse + f_mse).backward()

    flops = count_flops(step)
    return {"flops_per_step": flops, "flops_per_frame": flops / len(ref), "reference": _graph_sizes(ref)}


def epoch_flops(step: dict[str, Any], n_train_frames: int) -> int:
    """Training FLOPs of one epoch over ``n_train_frames`` frames."""
    return int(round(step["flops_per_frame"] * n_train_frames))


def inference_flops(model: torch.nn.Module, graphs: list[FrameGraph], batch_size: int, dtype: torch.dtype,
                    device) -> dict[str, Any]:
    """FLOPs of energy + forces for the first ``batch_size`` of ``graphs``, per structure."""
    ref = graphs[: max(1, int(batch_size))]
    m = copy.deepcopy(model).eval()
    batch = collate(ref, dtype=dtype).to(device)
    flops = count_flops(lambda: m(batch, compute_forces=True, training=False))
    return {"flops_per_structure": flops / len(ref), "reference": _graph_sizes(ref)}


def budget_epochs(budget_flops: float, flops_per_epoch: int) -> int:
    """Epochs that spend ``budget_flops`` (nearest whole epoch, at least 1)."""
    if flops_per_epoch <= 0:
        raise ValueError("flops_per_epoch must be positive")
    return max(1, int(math.floor(budget_flops / flops_per_epoch + 0.5)))


def budget_options(o: dict[str, Any], flops_per_epoch: int) -> dict[str, Any]:
    """Training options for a FLOP budget (``o["budget_flops"]``): max_epochs from the budget, and every schedule
    measured in epochs (plateau patience, early-stopping patience) scaled by the same factor; stage two is a fraction
    of max_epochs and scales by itself. Without a budget, ``o`` unchanged."""
    b = o.get("budget_flops")
    if b is None:
        return o
    n = budget_epochs(float(b), flops_per_epoch)
    factor = n / max(1, int(o["max_epochs"]))
    out = {**o, "max_epochs": n, "budget_epochs_factor": factor}
    for key in ("scheduler_patience", "early_stopping_patience"):
        if out.get(key) is not None:
            out[key] = max(1, int(round(int(out[key]) * factor)))
    return out
