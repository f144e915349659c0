"""The floor of MARA's work on the message tensors, part by part: W_h's two products and the gating passes over
[E, D] messages, each timed alone on the exact shapes (docs/mara.md, "End to end", fifth round).

    .venv/bin/python benchmarks/mara_floor.py --edges 1498 --dims 10240 4096 --hidden 32 --threads 1

MACE paper size (aspirin × 5, both interaction layers) is the default. Every part is the median process CPU time of
``--repeats`` calls, with the allocator set as ``mara_bench time`` sets it; the memory rates put the gating passes
in context. What MARA adds to a step cannot go below the sum of these parts.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from mara_bench.nn import native
from mara_bench.run import allocator
from mara_bench.timing.measure import time_call_cpu_ms


def _ms(fn, repeats: int) -> float:
    """Median process CPU ms of ``repeats`` calls after 3 warm-up calls (``time``'s clock)."""
    for _ in range(3):
        fn()
    return statistics.median(time_call_cpu_ms(fn)[1] for _ in range(repeats))


def parts(E: int, D: int, C: int, repeats: int) -> dict[str, float]:
    """ms CPU of each part for one message width D."""
    g = torch.Generator().manual_seed(0)
    m, grad = torch.randn(E, D, generator=g), torch.randn(E, D, generator=g)
    w, b, gh = torch.randn(C, D, generator=g), torch.randn(C, generator=g), torch.randn(E, C, generator=g)
    a, out = torch.rand(E, 1, generator=g), torch.empty(E, D)
    r = {
        "W_h forward [E, D] x [D, C]": _ms(lambda: torch.nn.functional.linear(m, w, b), repeats),
        "W_h backward [E, C] x [C, D], into a buffer": _ms(lambda: torch.mm(gh, w, out=out), repeats),
        "W_h backward, new tensor": _ms(lambda: gh @ w, repeats),
        "gating m + a*m (one pass)": _ms(lambda: torch.addcmul(m, m, a), repeats),
        "copy (read + write, memory rate)": _ms(lambda: out.copy_(m), repeats),
    }
    if native.streams(grad, m, a):
        r["gating backward, one C++ pass"] = _ms(lambda: native.gated_pass(grad, m, a=a, dot=True), repeats)
    return r


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--edges", type=int, default=1498)
    p.add_argument("--dims", type=int, nargs="+", default=[10240, 4096], help="message widths D, one per layer")
    p.add_argument("--hidden", type=int, default=32, help="MARA's hidden width C")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=15)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    print(f"allocator: {allocator.configure()}; {torch.get_num_threads()} threads, float32, E={a.edges}, C={a.hidden}")
    total: dict[str, float] = {}
    for D in a.dims:
        r = parts(a.edges, D, a.hidden, a.repeats)
        mb = a.edges * D * 4 / 1e6
        print(f"D={D} ({mb:.0f} MB per [E, D] tensor; W_h forward + backward {4 * a.edges * D * a.hidden / 1e9:.2f} GFLOP)")
        for k, v in r.items():
            print(f"  {k:46s} {v:8.2f} ms")
            total[k] = total.get(k, 0.0) + v
        print(f"  memory rate (copy)                             {2 * mb / r['copy (read + write, memory rate)']:8.1f} GB/s")
    print("all layers:")
    for k, v in total.items():
        print(f"  {k:46s} {v:8.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
