"""The MARA ``paper`` gate, forward + backward: our folded path (``ours``: its grid pass in the native C++ kernel;
``ours_torch``: the same in torch ops, ``--mara-impl folded-torch``) vs the torch-harmonics AttentionS2 reference.

Wraps ``benchmarks/mara_kernel.py`` (loaded by path: it is a script next to this package, not a module of it).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ._common import threads

EDGES = [2000, 20000]
MESSAGE_DIM = 128


def _kernel_module():
    path = Path(__file__).resolve().parents[1] / "mara_kernel.py"
    if not path.exists():
        raise NotImplementedError(f"{path} not found")
    spec = importlib.util.spec_from_file_location("mara_bench_kernel_script", path)
    mod = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(mod)
    except ImportError as e:
        raise NotImplementedError(f"MARA kernel benchmark unavailable: {e}") from None
    return mod


class MaraKernel:
    params = [EDGES, ["ours", "ours_torch", "attention_s2"]]
    param_names = ["edges", "impl"]
    timeout = 300
    number = 1
    repeat = (3, 10, 30.0)

    def setup(self, edges, impl):
        threads()
        k = _kernel_module()
        mara, ref = k.build(MESSAGE_DIM)
        if impl == "ours_torch":
            mara.set_impl("folded-torch")
        self.fn = ref if impl == "attention_s2" else mara.gates
        self.m, self.d = k.make_inputs(edges, MESSAGE_DIM)
        self.time_fwd_bwd(edges, impl)  # warm-up

    def time_fwd_bwd(self, edges, impl):
        self.m.grad = self.d.grad = None
        self.fn(self.m, self.d).sum().backward()

    def peakmem_fwd_bwd(self, edges, impl):
        self.time_fwd_bwd(edges, impl)


class MaraKernelRatio:
    """AttentionS2 reference time / our time (median of 3, same process): > 1 means ours is faster.
    At 2,000 edges only (20,000 would add ~40 s per run; both absolute times are in MaraKernel)."""

    params = [[2000]]
    param_names = ["edges"]
    timeout = 300
    unit = "ratio"

    def setup(self, edges):
        threads()
        self.k = _kernel_module()

    def track_speedup_vs_attention_s2(self, edges):
        return float(self.k.compare(edges, MESSAGE_DIM, repeats=3)["speedup"])
