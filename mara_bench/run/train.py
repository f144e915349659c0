"""The one training loop for every backbone.

loss = w_E · mean_graphs((ΔE / n_atoms)²) + w_F · mean_components(ΔF²) (``energy_loss: per_atom``, the default;
``energy_loss: total`` uses mean_graphs(ΔE²), schnetpack's form), with the per-preset weights and an optional
stage two (``stage2_start`` · max_epochs onwards: stage-two weights). Optimizer adam / amsgrad / adamw,
ReduceLROnPlateau on the validation loss, an exponential moving average of the weights (validation, the best
model and the final evaluation use the EMA weights), gradient-norm clipping, early stopping and a wall-time
limit.

Model selection rule: validation losses are only compared under the same loss weights. When stage two starts,
best-state tracking, the plateau scheduler's memory (the learning rate itself is kept) and the early-stopping
patience are reset, so the kept model is the epoch with the lowest validation loss *within the last stage that
ran* — a stage-two epoch whenever stage two ran (as mace-torch does when its stage two starts). The data order comes from a seeded ``torch.Generator`` whose state is checkpointed with everything else
after every epoch, so a run killed at any moment continues from its last finished epoch and ends with the same
numbers as an uninterrupted run (tests/run/test_resume.py).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..atomic import atomic_write_text
from ..errors import UserError
from ..graph import FrameGraph, GraphBatch, collate
from . import checkpoint as ckpt
from . import ddp
from .layout import TRAIN_LOG

LOG_COLUMNS = ("epoch", "train_loss", "val_loss", "val_energy_mae_mev_per_atom", "val_force_mae_mev_A", "lr",
               "epoch_time_s", "stage", "train_flops_cum", "epoch_cpu_s")
OPTIMIZERS = ("adam", "amsgrad", "adamw")
SCHEDULERS = ("plateau", "none")
ENERGY_LOSSES = ("per_atom", "total")  # energy term: mean((ΔE / n_atoms)²) | mean(ΔE²), per structure


class TrainingDiverged(UserError):
    """The loss became NaN/inf; the last good checkpoint (if one was written) is kept."""


def _kept(ck_path: Path) -> str:
    """What a diverged run leaves behind, truthfully: the last checkpoint, or none yet."""
    if ck_path.exists():
        return f"the last good checkpoint (end of an earlier epoch) is kept in '{ck_path}'"
    return "no checkpoint exists yet (this was the first epoch of the run), so there is nothing to resume"


@dataclass
class TrainResult:
    best_state: dict[str, torch.Tensor]
    epochs: int
    best_epoch: int
    best_val_loss: float
    train_time_s: float
    stopped: str  # max_epochs | early_stopping | time_limit
    final_lr: float
    resumed_from_epoch: int = 0
    log: list[list[float]] = field(default_factory=list)
    cost: dict[str, Any] = field(default_factory=dict)  # training FLOPs (mara_bench.run.cost), CPU seconds, budget


class EMA:
    """Exponential moving average of parameters (buffers are copied), with the usual warm-up
    decay_t = min(decay, (1 + t) / (10 + t))."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = float(decay)
        self.model = copy.deepcopy(model)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.updates = 0

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        d = min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
        for pe, p in zip(self.model.parameters(), model.parameters(), strict=True):
            pe.mul_(d).add_(p.detach(), alpha=1.0 - d)
        for be, b in zip(self.model.buffers(), model.buffers(), strict=True):
            be.copy_(b)
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "updates": self.updates}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.model.load_state_dict(sd["model"])
        self.updates = int(sd["updates"])


def check_options(opts: dict[str, Any], where: str) -> None:
    if opts["optimizer"] not in OPTIMIZERS:
        raise UserError(f"{where}: train.optimizer '{opts['optimizer']}' unknown; choose from {', '.join(OPTIMIZERS)}")
    if opts["scheduler"] not in SCHEDULERS:
        raise UserError(f"{where}: train.scheduler '{opts['scheduler']}' unknown; choose from {', '.join(SCHEDULERS)}")
    if opts.get("energy_loss", "per_atom") not in ENERGY_LOSSES:
        raise UserError(f"{where}: train.energy_loss '{opts['energy_loss']}' unknown; choose from "
                        f"{', '.join(ENERGY_LOSSES)}")
    for key in ("batch_size", "max_epochs", "eval_batch_size"):
        v = opts[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise UserError(f"{where}: train.{key} must be a positive integer, got {v!r}")
    for key in ("lr", "energy_weight", "forces_weight"):
        v = opts[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            raise UserError(f"{where}: train.{key} must be a number >= 0, got {v!r}")
    b = opts.get("budget_flops")
    if b is not None and (isinstance(b, bool) or not isinstance(b, (int, float)) or not b > 0 or b == float("inf")):
        raise UserError(f"{where}: train.budget_flops must be a positive number of FLOPs (e.g. 3.2e12) or null, "
                        f"got {b!r}")


def make_optimizer(model: torch.nn.Module, o: dict[str, Any]) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if o["optimizer"] == "adamw":
        return torch.optim.AdamW(params, lr=o["lr"], weight_decay=o["weight_decay"] or 0.0)
    return torch.optim.Adam(params, lr=o["lr"], weight_decay=o["weight_decay"] or 0.0,
                            amsgrad=o["optimizer"] == "amsgrad")


def make_scheduler(opt: torch.optim.Optimizer, o: dict[str, Any]):
    if o["scheduler"] == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=o["scheduler_factor"],
                                                          patience=o["scheduler_patience"])
    return None


def iter_batches(graphs: list[FrameGraph], order: list[int], batch_size: int, dtype, device):
    for s in range(0, len(order), batch_size):
        yield collate([graphs[i] for i in order[s : s + batch_size]], dtype=dtype).to(device)


def loss_terms(out: dict[str, torch.Tensor], batch: GraphBatch,
               energy_loss: str = "per_atom") -> tuple[torch.Tensor, torch.Tensor]:
    """(energy MSE, force component MSE); a missing label gives a zero term. The energy MSE is per atom,
    mean((ΔE / n_atoms)²), or with ``energy_loss="total"`` per structure, mean(ΔE²)."""
    zero = out["energy"].sum() * 0.0
    e_mse = zero
    if batch.energy is not None:
        de = out["energy"] - batch.energy
        if energy_loss != "total":
            de = de / batch.num_atoms.to(out["energy"].dtype)
        e_mse = (de**2).mean()
    f_mse = zero
    if batch.forces is not None and "forces" in out:
        f_mse = ((out["forces"] - batch.forces) ** 2).mean()
    return e_mse, f_mse


def training_loss(out: dict[str, torch.Tensor], batch: GraphBatch, we: float, wf: float,
                  energy_loss: str = "per_atom") -> torch.Tensor:
    """The training loss of one batch: ``we`` · energy MSE + ``wf`` · force MSE (:func:`loss_terms`)."""
    e_mse, f_mse = loss_terms(out, batch, energy_loss)
    return we * e_mse + wf * f_mse


def clip_and_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, o: dict[str, Any]) -> None:
    """Gradient-norm clipping (``train.grad_clip``, off when 0/None), then the optimizer step."""
    if o.get("grad_clip"):
        torch.nn.utils.clip_grad_norm_(model.parameters(), float(o["grad_clip"]))
    optimizer.step()


def validate(model, graphs, batch_size, dtype, device, we, wf, energy_loss: str = "per_atom") -> dict[str, float]:
    """Weighted loss (the training loss's form, ``energy_loss`` included), energy MAE (meV/atom) and force MAE
    (meV/Å) on ``graphs`` (graph-/component-weighted)."""
    model.eval()
    n_g = n_c = 0
    se = sf = ae = af = 0.0
    graphs = [graphs[i] for i in ddp.shard(range(len(graphs)))]  # DDP: each rank validates a shard
    for batch in iter_batches(graphs, list(range(len(graphs))), batch_size, dtype, device):
        out = model(batch, compute_forces=batch.forces is not None, training=False)
        if batch.energy is not None:
            d_total = (out["energy"].detach() - batch.energy).double()
            d = d_total / batch.num_atoms.double()
            se += float(((d_total if energy_loss == "total" else d) ** 2).sum())
            ae += float(d.abs().sum())
            n_g += batch.num_graphs
        if batch.forces is not None:
            d = (out["forces"].detach() - batch.forces).double()
            sf += float((d**2).sum())
            af += float(d.abs().sum())
            n_c += d.numel()
    se, sf, ae, af, n_g, n_c = ddp.all_reduce_sum([se, sf, ae, af, n_g, n_c])
    e_mse = se / n_g if n_g else 0.0
    f_mse = sf / n_c if n_c else 0.0
    return {"loss": we * e_mse + wf * f_mse, "energy_mae_mev_per_atom": 1000 * ae / n_g if n_g else math.nan,
            "force_mae_mev_A": 1000 * af / n_c if n_c else math.nan}


def stage2_epoch(o: dict[str, Any]) -> int | None:
    """The 0-based epoch at which stage two starts, or None without stage two."""
    s2 = o.get("stage2_start")
    return None if s2 is None else int(math.ceil(float(s2) * o["max_epochs"]))


def stage_of(o: dict[str, Any], epoch: int) -> int:
    """1 or 2: the loss stage of the 0-based ``epoch``."""
    s2 = stage2_epoch(o)
    return 2 if s2 is not None and epoch >= s2 else 1


def loss_weights(o: dict[str, Any], epoch: int) -> tuple[float, float]:
    """(energy weight, forces weight) of the 0-based ``epoch``: stage one's, or stage two's from its start."""
    if stage_of(o, epoch) == 2:
        return float(o["stage2_energy_weight"]), float(o["stage2_forces_weight"])
    return float(o["energy_weight"]), float(o["forces_weight"])




def _write_log(path: Path, log: list[list[float]], o: dict[str, Any], flops_per_epoch: int | None = None) -> None:
    lines = [",".join(LOG_COLUMNS)]
    for row in log:
        flops = "" if flops_per_epoch is None else str(int(row[0]) * int(flops_per_epoch))
        cpu = f"{float(row[7]):.8g}" if len(row) > 7 else ""
        lines.append(",".join([str(int(row[0]))] + [f"{float(v):.8g}" for v in row[1:7]]
                              + [str(stage_of(o, int(row[0]) - 1)), flops, cpu]))
    atomic_write_text(path, "\n".join(lines) + "\n")


def _clone_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def train(model: torch.nn.Module, train_graphs: list[FrameGraph], val_graphs: list[FrameGraph], o: dict[str, Any],
          *, seed: int, dtype: torch.dtype, device: str | torch.device, run_dir: Path,
          progress: bool = True) -> TrainResult:
    """Train ``model`` in place (resuming from ``run_dir/checkpoint.pt`` if present); return the best EMA state."""
    from tqdm.auto import tqdm

    run_dir = Path(run_dir)
    ck_path, log_path = run_dir / ckpt.NAME, run_dir / TRAIN_LOG
    if not train_graphs or not val_graphs:
        raise UserError(f"need training and validation frames, got {len(train_graphs)} and {len(val_graphs)}")
    from .cost import budget_options, epoch_flops, train_step_flops

    # deterministic training cost (FLOPs per epoch), and with train.budget_flops the epochs that budget buys
    step_cost = train_step_flops(model, train_graphs, o["batch_size"], dtype, device, o.get("energy_loss", "per_atom"))
    flops_per_epoch = epoch_flops(step_cost, len(train_graphs))
    o = budget_options(o, flops_per_epoch)
    optimizer = make_optimizer(model, o)
    scheduler = make_scheduler(optimizer, o)
    ema = EMA(model, o["ema_decay"]) if o.get("ema_decay") else None
    gen = torch.Generator().manual_seed(int(seed))
    start, best_val, best_epoch, train_time, log, stopped = 0, math.inf, -1, 0.0, [], None
    best_state = None
    if ck_path.exists():
        ck = ckpt.load(ck_path)
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        if scheduler is not None and ck.get("scheduler") is not None:
            scheduler.load_state_dict(ck["scheduler"])
        if ema is not None:
            ema.load_state_dict(ck["ema"])
        ckpt.set_rng_state(ck["rng"], gen)
        start, best_val, best_epoch = int(ck["epoch"]), float(ck["best_val_loss"]), int(ck["best_epoch"])
        train_time, log, stopped, best_state = float(ck["train_time_s"]), ck["log"], ck["stopped"], ck["best_state"]
        if ddp.is_main():
            print(f"resuming from {ck_path} after epoch {start}", flush=True)
    resumed_from = start
    eval_model = ema.model if ema is not None else model
    n_epochs = int(o["max_epochs"])
    energy_loss = o.get("energy_loss", "per_atom")
    progress = progress and ddp.is_main()
    epochs = tqdm(range(start, n_epochs), desc="epochs", disable=not progress or stopped is not None,
                  initial=start, total=n_epochs, dynamic_ncols=True)
    for epoch in epochs if stopped is None else []:
        t0, c0 = time.perf_counter(), time.process_time()
        we, wf = loss_weights(o, epoch)
        if epoch > 0 and epoch == stage2_epoch(o):
            # new loss weights: losses before and after are not comparable, so forget the stage-one best state,
            # the scheduler's plateau memory (keeping the learning rate) and the early-stopping reference
            best_val, best_epoch, best_state = math.inf, epoch, None
            scheduler = make_scheduler(optimizer, o)
            if ddp.is_main() and progress:
                print(f"stage two from epoch {epoch + 1}: best-model tracking and the LR scheduler restart", flush=True)
        model.train()
        order = torch.randperm(len(train_graphs), generator=gen).tolist()
        n_batches = math.ceil(len(order) / o["batch_size"])
        bar = tqdm(ddp.batches(train_graphs, order, o["batch_size"], dtype, device), total=n_batches,
                   desc=f"epoch {epoch + 1}", leave=False, disable=not progress, dynamic_ncols=True)
        total, count = 0.0, 0
        for b, (batch, share) in enumerate(bar):  # share: this rank's fraction of the batch (1.0 without DDP)
            optimizer.zero_grad(set_to_none=True)
            if batch is not None:
                out = model(batch, compute_forces=batch.forces is not None, training=True)
                loss = training_loss(out, batch, we, wf, energy_loss)
                if not torch.isfinite(loss):
                    raise TrainingDiverged(
                        f"training loss became {float(loss.detach())} at epoch {epoch + 1}, batch {b + 1} (lr "
                        f"{optimizer.param_groups[0]['lr']:.3g}); {_kept(ck_path)}; "
                        "lower train.lr (--set train.lr=...) or use --dtype float64")
                loss.backward()
            ddp.allreduce_gradients(model, share)
            clip_and_step(model, optimizer, o)
            if ema is not None:
                ema.update(model)
            if batch is not None:
                total += float(loss.detach()) * batch.num_graphs
                count += batch.num_graphs
                bar.set_postfix(loss=f"{float(loss.detach()):.4g}")
        total, count = ddp.all_reduce_sum([total, count])
        val = validate(eval_model, val_graphs, o["eval_batch_size"], dtype, device, we, wf, energy_loss)
        if not math.isfinite(val["loss"]):
            raise TrainingDiverged(f"validation loss became {val['loss']} after epoch {epoch + 1}; {_kept(ck_path)}; "
                                   "lower train.lr or use --dtype float64")
        if scheduler is not None:
            scheduler.step(val["loss"])
        if val["loss"] < best_val:
            best_val, best_epoch, best_state = val["loss"], epoch + 1, _clone_state(eval_model)
        dt = time.perf_counter() - t0
        train_time += dt
        lr = float(optimizer.param_groups[0]["lr"])
        log.append([epoch + 1, total / count, val["loss"], val["energy_mae_mev_per_atom"], val["force_mae_mev_A"],
                    lr, dt, time.process_time() - c0])
        epochs.set_postfix(train=f"{total / count:.4g}", val=f"{val['loss']:.4g}",
                           F_mae=f"{val['force_mae_mev_A']:.1f}")
        patience = o.get("early_stopping_patience")
        if epoch + 1 >= n_epochs:
            stopped = "max_epochs"
        elif patience is not None and epoch + 1 - best_epoch >= int(patience):
            stopped = "early_stopping"
        elif o.get("time_limit_s") is not None and train_time >= float(o["time_limit_s"]):
            stopped = "time_limit"
        if ddp.is_main():  # only rank 0 writes; the others wait so that a resume reads a complete checkpoint
            # the checkpoint first: the log never claims an epoch that a crash (e.g. a full disk) did not keep
            ckpt.save(ck_path, model=model.state_dict(), optimizer=optimizer.state_dict(),
                      scheduler=None if scheduler is None else scheduler.state_dict(),
                      ema=None if ema is None else ema.state_dict(), rng=ckpt.rng_state(gen), epoch=epoch + 1,
                      best_val_loss=best_val, best_epoch=best_epoch, best_state=best_state, train_time_s=train_time,
                      log=log, stopped=stopped)
            _write_log(log_path, log, o, flops_per_epoch)
        ddp.barrier()
        if stopped is not None:
            break
    epochs.close()
    n_done = int(log[-1][0]) if log else 0
    cost = {"flops_per_epoch": flops_per_epoch, "flops_per_step": step_cost["flops_per_step"],
            "flops_reference_batch": step_cost["reference"], "train_flops": n_done * flops_per_epoch,
            "process_cpu_s": float(sum(r[7] for r in log if len(r) > 7)),
            "budget_flops": o.get("budget_flops"), "max_epochs": int(o["max_epochs"])}
    return TrainResult(best_state=best_state, epochs=n_done, best_epoch=best_epoch,
                       best_val_loss=best_val, train_time_s=train_time, stopped=stopped or "max_epochs",
                       final_lr=float(optimizer.param_groups[0]["lr"]), resumed_from_epoch=resumed_from, log=log,
                       cost=cost)
