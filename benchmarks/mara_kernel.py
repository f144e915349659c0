"""Speed of the MARA ``paper`` gate: our paths (``--impl``: the folded default, or the readable token path) vs the
torch-harmonics ``AttentionS2`` reference.

Importable (the asv suite wraps :func:`time_forward_backward` / :func:`compare`) and runnable::

    .venv/bin/python benchmarks/mara_kernel.py --edges 2000 20000 --threads 2

Both paths compute the same gates (tests/nn/test_mara.py checks it); the timed work is forward + backward of
``sum(gates)`` w.r.t. the messages, the edge vectors and all parameters, in float32 on the CPU by default.
``--mode train`` times what force training needs instead: E = Σ α_e |m_e|², F = ∂E/∂d with ``create_graph``, then
the backward of |F|² (a double backward). ``--impl`` picks our implementation (``MARA.set_impl``; default folded).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from mara_bench.nn.mara import MARA, ReferenceMARA
from mara_bench.run import allocator


def make_inputs(edges: int, message_dim: int, dtype=torch.float32, device="cpu", seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(edges, message_dim, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)
    d = (torch.randn(edges, 3, generator=g, dtype=torch.float64) * 1.5).to(device=device, dtype=dtype)
    return m.requires_grad_(True), d.requires_grad_(True)


def build(message_dim: int, hidden: int = 32, grid=(4, 8), heads: int = 1, dtype=torch.float32, device="cpu",
          attention_impl: str = "folded"):
    """(our MARA with implementation ``attention_impl`` (mara.IMPLS), the ReferenceMARA sharing its weights)."""
    torch.manual_seed(0)
    mara = MARA(message_dim, "paper", hidden=hidden, grid=grid, heads=heads).to(device=device, dtype=dtype)
    mara.set_impl(attention_impl)
    return mara, ReferenceMARA(mara)


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def _train_like(fn, m, d) -> None:
    """Force-training pattern: E = Σ α|m|², F = ∂E/∂d (create_graph), backward of |F|² (double backward)."""
    energy = (fn(m, d) * m.square().sum(-1, keepdim=True)).sum()
    (forces,) = torch.autograd.grad(energy, d, create_graph=True)
    forces.square().sum().backward()


def _once(fn, m, d, clock: str = "wall", mode: str = "fwd_bwd") -> float:
    """One forward + backward (``mode="train"``: the force-training double backward). ``clock="cpu"`` counts this
    process's CPU seconds (all threads), which a busy shared machine disturbs much less than wall time."""
    tick = CLOCKS[clock]
    for t in (m, d):
        t.grad = None
    if m.is_cuda:
        torch.cuda.synchronize()
    t0 = tick()
    if mode == "train":
        _train_like(fn, m, d)
    else:
        fn(m, d).sum().backward()
    if m.is_cuda:
        torch.cuda.synchronize()
    return tick() - t0


def time_forward_backward(fn, m, d, repeats: int = 7, warmup: int = 2, clock: str = "wall") -> list[float]:
    """Seconds of ``fn(m, d).sum().backward()`` per repeat (after ``warmup`` untimed calls)."""
    for _ in range(warmup):
        _once(fn, m, d, clock)
    return [_once(fn, m, d, clock) for _ in range(repeats)]


def compare(edges: int, message_dim: int = 128, hidden: int = 32, grid=(4, 8), heads: int = 1, repeats: int = 7,
            dtype=torch.float32, device="cpu", attention_impl: str = "folded", clock: str = "wall",
            mode: str = "fwd_bwd") -> dict:
    """Median forward+backward seconds of ours and of the reference, and reference/ours.

    The two paths alternate call by call so that a load change on a shared machine hits both alike."""
    mara, ref = build(message_dim, hidden, grid, heads, dtype, device, attention_impl)
    m, d = make_inputs(edges, message_dim, dtype, device)
    fns = {"ours": mara.gates, "reference": ref}
    for fn in fns.values():
        _once(fn, m, d, mode=mode)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            times[k].append(_once(fn, m, d, clock, mode))
    ours, theirs = statistics.median(times["ours"]), statistics.median(times["reference"])
    return {"edges": edges, "message_dim": message_dim, "hidden": hidden, "grid": f"{grid[0]}x{grid[1]}",
            "heads": heads, "attention_impl": attention_impl, "clock": clock, "mode": mode, "ours_s": ours, "reference_s": theirs,
            "speedup": theirs / ours, "ratios": [b / a for a, b in zip(times["ours"], times["reference"], strict=True)]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--edges", type=int, nargs="+", default=[2000, 20000])
    p.add_argument("--message-dim", type=int, default=128)
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--grid", default="4x8")
    p.add_argument("--heads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--device", default="cpu")
    p.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                   help="wall seconds, or this process's CPU seconds (steadier on a shared machine)")
    p.add_argument("--impl", nargs="+", default=["folded"], choices=["folded", "folded-torch", "fused", "matmul", "sdpa"])
    p.add_argument("--mode", choices=["fwd_bwd", "train"], default="fwd_bwd",
                   help="fwd_bwd: backward of sum(gates); train: the force-training double backward")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    allocator.configure()  # as mara_bench time does (run.allocator)
    grid = tuple(int(x) for x in a.grid.lower().split("x"))
    dtype = getattr(torch, a.dtype)
    print(f"torch {torch.__version__}, {a.device}, {torch.get_num_threads()} threads, {a.dtype}, D={a.message_dim}, "
          f"C={a.hidden}, grid {a.grid}, heads {a.heads}, {a.clock} clock, median of {a.repeats}")
    for impl in a.impl:
        for e in a.edges:
            r = compare(e, a.message_dim, a.hidden, grid, a.heads, a.repeats, dtype, a.device, impl, a.clock, a.mode)
            print(f"E={e:>7} impl={impl:<6} {a.mode} ours {r['ours_s'] * 1e3:9.2f} ms   AttentionS2 reference "
                  f"{r['reference_s'] * 1e3:9.2f} ms   ratio {r['speedup']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
