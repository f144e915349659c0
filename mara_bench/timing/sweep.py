"""The timing sweep behind ``mara_bench time``: systems of ~20 … ≥5,000 atoms, models per MARA variant,
inference (energy + forces) and one training step, variants interleaved in one process.

Systems: copies of one molecule (frames of a dataset, cycled, or a built-in ASE molecule) batched into one
:class:`GraphBatch` of disjoint graphs. Molecules never interact (no edges between copies), so the edge count
grows linearly with the atom count — the same work as tiling copies far apart in one box.

Systems and statistics live in :mod:`mara_bench.timing.systems` (a dataset molecule: the statistics a run uses,
``pipeline.training_stats``; otherwise synthetic ones, ``systems.synthetic_stats``). Statistics change numbers, not
the amount of work; loss labels are zeros for the same reason.

Models, optimizer and training step are the run's (:func:`build_model`, :func:`train_step`): options from
``pipeline.check_config``, built by ``pipeline.build_backbone_model``, ``train.make_optimizer``,
``train.training_loss`` and ``train.clip_and_step``. See docs/timing.md.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from ..config import MARA_VARIANTS
from ..graph import GraphBatch
from ..run.cost import count_flops
from .measure import (
    is_oom,
    peak_memory_of,
    summarize,
    throughput,
    time_call_cpu_ms,
    time_call_ms,
)
from .systems import Molecule, load_molecule, make_batch, stats_for

# ------------------------------------------------------------------------------------------------ models


@dataclass
class Variant:
    name: str
    model: torch.nn.Module
    step_model: Any  # the model or its torch.compile wrapper
    optimizer: torch.optim.Optimizer


def set_mara_impl(model: torch.nn.Module, impl: str) -> int:
    """Switch every ``paper`` MARA inside ``model`` to implementation ``impl`` (mara.IMPLS); returns how many."""
    from ..nn.mara import MARA

    n = 0
    for mod in model.modules():
        if isinstance(mod, MARA) and mod.variant == "paper":
            mod.set_impl(impl)
            n += 1
    return n


def arms(variants: tuple[str, ...], impls: tuple[str, ...]) -> list[tuple[str, str, str | None]]:
    """(key, variant, MARA implementation) per timed model: ``paper`` once per implementation, others once."""
    out = []
    for v in variants:
        if v == "paper":
            out += [("paper" if i == impls[0] else f"paper/{i}", "paper", i) for i in impls]
        else:
            out.append((v, v, None))
    return out


def run_config_for(backbone: str, preset: str, variant: str, dtype: torch.dtype = torch.float32, mara_grid=(4, 8),
                   mara_hidden: int = 32, mara_heads: int = 1, model_overrides: dict[str, Any] | None = None,
                   seed: int = 0):
    """The :class:`RunConfig` of a run that trains this model (its dataset is never read here: timing brings its
    own systems). Options are resolved and checked from it exactly as for a run (``pipeline.check_config``)."""
    from ..config import RunConfig

    return RunConfig(backbone=backbone, mara=variant, mara_grid="{}x{}".format(*mara_grid), mara_hidden=mara_hidden,
                     mara_heads=mara_heads, preset=preset, seed=seed, dtype=str(dtype).removeprefix("torch."),
                     overrides=dict(model_overrides or {}))


def build_model(backbone: str, preset: str, variant: str, stats, dtype: torch.dtype, device: str,
                mara_grid=(4, 8), mara_hidden: int = 32, mara_heads: int = 1,
                model_overrides: dict[str, Any] | None = None, seed: int = 0) -> torch.nn.Module:
    """The model a run with these settings trains: options from ``pipeline.check_config``, built by
    ``pipeline.build_backbone_model`` (same seed, default-dtype scope, device and dtype)."""
    from ..backbone import MaraOptions
    from ..run.pipeline import build_backbone_model, check_config

    cfg = run_config_for(backbone, preset, variant, dtype, mara_grid, mara_hidden, mara_heads, model_overrides, seed)
    cls, model_opts, _ = check_config(cfg)
    return build_backbone_model(cls, model_opts, stats, MaraOptions.from_config(cfg), dtype, device, cfg.seed)


def inference_step(model, batch: GraphBatch):
    if isinstance(model, torch.nn.Module) and model.training:  # as MD and evaluation run it
        model.eval()
    out = model(batch, compute_forces=True, training=False)
    return out["energy"].detach(), out["forces"].detach()


def train_step(model, batch: GraphBatch, optimizer, train_opts: dict[str, Any]):
    """One training step as ``run.train`` takes it: the training loss (``train.training_loss`` with the stage-one
    weights, ``train.energy_loss``) against the batch's labels (zeros from ``make_batch``: the values do not change
    the work), backward, then ``train.clip_and_step`` (``train.grad_clip``, the optimizer step). The EMA update of
    the weights is not included."""
    from ..run.train import clip_and_step, loss_weights, training_loss

    if isinstance(model, torch.nn.Module) and not model.training:
        model.train()
    optimizer.zero_grad(set_to_none=True)
    out = model(batch, compute_forces=True, training=True)
    we, wf = loss_weights(train_opts, 0)
    loss = training_loss(out, batch, we, wf, train_opts.get("energy_loss", "per_atom"))
    loss.backward()
    clip_and_step(model, optimizer, train_opts)
    return loss.detach()


def _call(v: Variant, mode: str, batch: GraphBatch, train_opts: dict[str, Any]):
    if mode == "inference":
        return lambda: inference_step(v.step_model, batch)
    return lambda: train_step(v.step_model, batch, v.optimizer, train_opts)


# ------------------------------------------------------------------------------------------------ sweep


@dataclass
class SweepSettings:
    backbone: str = "mace"
    variants: tuple[str, ...] = MARA_VARIANTS
    preset: str = "quick"
    device: str = "cpu"
    dtype: str = "float32"
    sizes: tuple[int, ...] = (20, 200, 2000, 5000)
    repeats: int = 10
    warmup: int = 2
    compile: bool = False
    modes: tuple[str, ...] = ("inference", "train")
    molecule: str = "default"
    data_dir: str | None = None
    mara_grid: tuple[int, int] = (4, 8)
    mara_hidden: int = 32
    mara_heads: int = 1
    max_step_s: float | None = None  # skip a size when one warm-up step takes longer
    model_overrides: dict[str, Any] = field(default_factory=dict)
    mara_impls: tuple[str, ...] = ("folded",)  # paper is timed once per implementation (mara.IMPLS)
    flops: bool = True  # count FLOPs per variant and mode (one extra untimed call each)
    seed: int = 0  # models are built as a run with this seed builds them (pipeline.build_backbone_model)


def _row(s: SweepSettings, variant: str, mode: str, size: int, batch: GraphBatch, status="ok", note="",
         impl: str | None = None) -> dict:
    return {"backbone": s.backbone, "preset": s.preset, "variant": variant, "mode": mode, "mara_impl": impl,
            "device": str(s.device),
            "dtype": s.dtype, "compiled": bool(s.compile), "size_requested": int(size),
            "n_atoms": int(batch.positions.shape[0]), "n_edges": int(batch.edge_index.shape[1]),
            "n_graphs": int(batch.num_graphs), "status": status, "note": note, "repeats": 0, "warmup": s.warmup,
            "threads": torch.get_num_threads(), "median_ms": None, "q25_ms": None, "q75_ms": None, "iqr_ms": None,
            "min_ms": None, "mean_ms": None, "atoms_steps_per_s": None, "ns_per_day": None, "peak_mem_mb": None,
            "peak_mem_delta_mb": None, "peak_mem_kind": None, "overhead_vs_off": None, "overhead_q25": None,
            "overhead_q75": None,
            "compile_s": None, "cpu_median_ms": None, "cpu_overhead_vs_off": None, "times_ms": [], "cpu_times_ms": [],
            "flops": None, "gflops_per_s": None, "floor_ms": None, "flops_vs_off": None, "speedup_vs_reference": None,
            "cpu_speedup_vs_reference": None}


def _free(device: str) -> None:
    from .measure import release_memory

    release_memory(device)


def time_size(s: SweepSettings, mol: Molecule, size: int, progress=None,
              gemm_gflops: float | None = None) -> tuple[list[dict], str]:
    """All rows for one system size. Returns (rows, stats_kind). Out-of-memory → rows with status 'skipped'.

    Every variant (and every MARA implementation of ``paper``) is a separate model built from the same seed;
    repeats interleave all of them, so ratios (× off, × reference) are paired."""
    from ..config import torch_dtype
    from ..run.pipeline import check_config
    from ..run.train import make_optimizer

    dtype = torch_dtype(s.dtype)
    _, model_opts, train_opts = check_config(run_config_for(s.backbone, s.preset, "off", dtype,
                                                            model_overrides=s.model_overrides, seed=s.seed))
    r_max = float(model_opts["r_max"])  # with --set model.r_max the graphs follow the model
    batch_cpu, graphs = make_batch(mol, size, r_max, dtype)
    stats, stats_kind = stats_for(mol, graphs, r_max, train_opts, s.seed)
    batch = batch_cpu.to(s.device, dtype)
    arm_list = arms(s.variants, s.mara_impls)
    keys = [a[0] for a in arm_list]
    ref_key = next((k for k, _v, i in arm_list if i == "reference"), None)
    rows = {(k, m): _row(s, v, m, size, batch, impl=i) for k, v, i in arm_list for m in s.modes}
    live: dict[str, Variant] = {}
    times: dict[tuple[str, str], list[float]] = {k: [] for k in rows}
    cpu_times: dict[tuple[str, str], list[float]] = {k: [] for k in rows}

    def skip(keys, why):
        for k in keys:
            rows[k].update(status="skipped", note=why)
            times.pop(k, None)

    try:
        for k, v, impl in arm_list:
            model = build_model(s.backbone, s.preset, v, stats, dtype, s.device, s.mara_grid, s.mara_hidden,
                                s.mara_heads, s.model_overrides, s.seed)
            if impl is not None:
                set_mara_impl(model, impl)
            step_model = torch.compile(model) if s.compile else model
            live[k] = Variant(k, model, step_model, make_optimizer(model, train_opts))
        for v, var in live.items():  # warm-up (and compile) — never timed into the statistics
            for m in s.modes:
                fn = _call(var, m, batch, train_opts)
                for w in range(max(1, s.warmup)):
                    t0 = time.perf_counter()
                    try:
                        ms = time_call_ms(fn, s.device)
                    except RuntimeError as e:
                        if not s.compile or is_oom(e):
                            raise
                        first = (str(e).splitlines() or [type(e).__name__])[0][:80]
                        if m == "train":  # training on forces differentiates the force graph again (double
                            # backward), which torch.compile'd graphs do not support: report it, keep timing inference
                            skip([(v, m)], "skipped: torch.compile does not support the double backward of a "
                                           f"force-trained step ({first})")
                        else:  # the compiler itself failed (e.g. inductor's CPU code with several threads)
                            skip([(v, m)], f"skipped: torch.compile failed for this model on {s.device} ({first}); "
                                           "time it without --compile, or with --threads 1")
                        break
                    if w == 0 and s.compile:  # first call = compilation (+ one step)
                        rows[(v, m)]["compile_s"] = time.perf_counter() - t0
                    if s.max_step_s and ms / 1e3 > s.max_step_s:
                        raise TimeoutError(f"one {m} step took {ms / 1e3:.1f} s > --max-step-s {s.max_step_s:g}")
        if s.flops:  # one untimed counted call per variant and mode (deterministic: same batch, same ops)
            for (v, m), row in rows.items():
                if (v, m) in times:  # counted on the eager model (a compiled one does the same arithmetic)
                    eager = dataclasses.replace(live[v], step_model=live[v].model)
                    row["flops"] = count_flops(_call(eager, m, batch, train_opts))
        for r in range(s.repeats):  # interleaved: every repeat times every variant, order rotated per repeat
            k = r % len(keys)
            for v in keys[k:] + keys[:k]:
                for m in s.modes:
                    if (v, m) not in times:
                        continue
                    wall, cpu = time_call_cpu_ms(_call(live[v], m, batch, train_opts), s.device)
                    times[(v, m)].append(wall)
                    cpu_times[(v, m)].append(cpu)
            if progress is not None:
                progress.update(1)
        for (v, m), row in rows.items():  # peak memory: one extra call per variant and mode
            if (v, m) not in times:
                continue
            _free(s.device)
            peak = peak_memory_of(_call(live[v], m, batch, train_opts), s.device)
            row["peak_mem_mb"], row["peak_mem_delta_mb"], row["peak_mem_kind"] = peak
    except TimeoutError as e:
        skip(list(rows), f"skipped: {e}")
    except (RuntimeError, MemoryError) as e:
        if not is_oom(e):
            raise
        skip(list(rows), f"skipped: out of memory on {s.device} ({type(e).__name__})")
    finally:
        live.clear()
        _free(s.device)
    for (v, m), ms in times.items():
        row = rows[(v, m)]
        st = summarize(ms)
        row.update({k: st[k] for k in ("median_ms", "q25_ms", "q75_ms", "iqr_ms", "min_ms", "mean_ms")})
        row.update(repeats=len(ms), times_ms=[float(x) for x in ms])
        tp = throughput(st["median_ms"], row["n_atoms"])
        row["atoms_steps_per_s"] = tp["atoms_steps_per_s"]
        row["ns_per_day"] = tp["ns_per_day"] if m == "inference" else None
        base = times.get(("off", m))
        if base and len(base) == len(ms):
            ratios = [a / b for a, b in zip(ms, base, strict=True)]  # paired: same repeat, same process
            q = summarize(ratios)
            row.update(overhead_vs_off=q["median_ms"], overhead_q25=q["q25_ms"], overhead_q75=q["q75_ms"])
        if row["flops"] is not None:
            row["gflops_per_s"] = row["flops"] / (st["median_ms"] * 1e6)
            if gemm_gflops:
                row["floor_ms"] = row["flops"] / (gemm_gflops * 1e6)
            fbase = rows.get(("off", m), {}).get("flops")
            if fbase:
                row["flops_vs_off"] = row["flops"] / fbase
        ref = times.get((ref_key, m))
        if v != ref_key and row["variant"] == "paper" and ref and len(ref) == len(ms):
            row["speedup_vs_reference"] = summarize([b / a for a, b in zip(ms, ref, strict=True)])["median_ms"]
        cpu = cpu_times[(v, m)]
        if str(s.device).startswith("cuda"):  # host CPU time says nothing about GPU work
            continue
        row.update(cpu_times_ms=[float(x) for x in cpu], cpu_median_ms=summarize(cpu)["median_ms"])
        cbase = cpu_times.get(("off", m))
        if cbase and len(cbase) == len(cpu) and ("off", m) in times:
            row["cpu_overhead_vs_off"] = summarize([a / b for a, b in zip(cpu, cbase, strict=True)])["median_ms"]
        cref = cpu_times.get((ref_key, m))
        if row["speedup_vs_reference"] is not None and cref and len(cref) == len(cpu):
            row["cpu_speedup_vs_reference"] = summarize([b / a for a, b in zip(cpu, cref, strict=True)])["median_ms"]
    return list(rows.values()), stats_kind


def environment(device: str) -> dict[str, Any]:
    import os
    import platform
    import socket
    import sys

    from ..run import allocator
    from ..run.results import git_commit, package_versions

    env = {"git_commit": git_commit(), "packages": package_versions(), "python": sys.version.split()[0],
           "platform": platform.platform(), "host": socket.gethostname(), "device": str(device),
           "device_name": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
           "interop_threads": torch.get_num_interop_threads(), "cuda_version": torch.version.cuda,
           "omp_env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS")
                       if k in os.environ},
           "malloc": allocator.state()}  # the C library's allocator settings, as `time` applied them (run.allocator)
    if str(device).startswith("cuda") and torch.cuda.is_available():
        env["device_name"] = torch.cuda.get_device_name(torch.device(device))
    return env


def run_sweep(s: SweepSettings, command: str = "", progress: bool = True) -> dict[str, Any]:
    """Time every size of ``s``; return the results object (schema :data:`mara_bench.timing.measure.SCHEMA`)."""
    from tqdm import tqdm

    from .measure import SCHEMA, gemm_probe

    mol = load_molecule(s.molecule, s.data_dir)
    gemm = gemm_probe(s.device, s.dtype) if s.flops else None
    rows: list[dict] = []
    stats_kinds = set()
    bar = tqdm(total=len(s.sizes) * s.repeats, desc=f"time {s.backbone}", unit="rep", disable=not progress)
    try:
        for size in s.sizes:
            bar.set_postfix_str(f"{size} atoms")
            size_rows, kind = time_size(s, mol, size, progress=bar, gemm_gflops=gemm["gflops"] if gemm else None)
            rows += size_rows
            stats_kinds.add(kind)
            if any(r["status"] == "skipped" for r in size_rows):
                bar.update(max(0, s.repeats - max(r["repeats"] for r in size_rows)))
    finally:
        bar.close()
    settings = dataclasses.asdict(s)
    settings.update(molecule=mol.name, molecule_source=mol.source, molecule_atoms=mol.n_atoms,
                    molecule_frames=len(mol.frames), stats=",".join(sorted(stats_kinds)) or None,
                    fs_per_step=0.5, interleaved=True)
    env = environment(s.device)
    env["gemm"] = gemm  # the dense matmul rate the FLOP floors are computed with (timing.gemm_probe)
    return {"schema": SCHEMA, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": command,
            "settings": settings, "environment": env, "rows": rows}
