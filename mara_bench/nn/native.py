"""Optional native kernels: the folded ``paper`` gate (``csrc/folded_gate.cpp``) and the streaming passes of the
gated messages' derivatives (``csrc/gated_messages.cpp``, used by :mod:`mara_bench.nn.functions`), one library.

After the per-edge scalars (one GEMM, :func:`mara_bench.nn.kernels._edge_scalars_one_head`), the folded gate is a
function of a few dozen numbers per edge: ρ from the edge vector (``MARA.distances``), the forms
(:func:`~mara_bench.nn.kernels._assemble_forms`), the per-grid-point pass (:func:`~mara_bench.nn.kernels._grid_pass`)
and the readout. PyTorch runs that as ~150 separate ops over [E, ≤ 14, K] tensors, and as many again in each
backward: per-op overhead and memory passes, not arithmetic. The C++ file does the same per edge, one edge per SIMD
lane: the forward, its vector-Jacobian product (VJP), and the VJP's own derivatives (force training's double
backward, by forward-mode differentiation of the VJP code on dual numbers). It is built at first use with the
system's C++ compiler (``c++ -O3 -march=native -shared``, a couple of seconds, no torch headers) into a cache folder
and called through ctypes on contiguous CPU tensors, so there is nothing to install.

The readable torch functions stay the reference and the fallback: without a compiler (a warning says so once), on
CUDA, under ``torch.compile`` or a dispatch mode (FLOP counting), for more than one head, with ``--mara-impl
folded-torch`` or with ``MARA_BENCH_NATIVE=0`` the gate runs in torch ops. The gated messages' passes follow the
same rules (``--mara-impl`` aside) and also leave strided tensors and more than two torch threads to torch
(:func:`streams`).

Cache: ``$MARA_BENCH_CACHE`` or ``$XDG_CACHE_HOME/mara_bench`` (default ``~/.cache/mara_bench``), one file per set
of sources, compiler and CPU; built into a temporary file and renamed, so concurrent processes do not see half a
library.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

import torch
from torch.autograd.function import once_differentiable

try:
    from torch.utils._python_dispatch import _get_current_dispatch_mode
except ImportError:  # pragma: no cover - older or newer torch: assume no dispatch mode
    _get_current_dispatch_mode = None

# the gate kernel and the streaming passes of the gated messages (nn/functions.py), built into one library
SOURCES = tuple(Path(__file__).with_name("csrc") / name for name in ("folded_gate.cpp", "gated_messages.cpp"))
# no -ffast-math: -fopenmp-simd and libmvec vectorise the loops and the exponentials without changing rounding rules
FLAGS = ["-O3", "-march=native", "-fopenmp-simd", "-fno-math-errno", "-shared", "-fPIC", "-std=c++17"]
LIBS = ["-lmvec", "-lm"]

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_tried = False


def enabled() -> bool:
    """False when ``MARA_BENCH_NATIVE`` is 0/false/off/no."""
    return os.environ.get("MARA_BENCH_NATIVE", "1").strip().lower() not in ("0", "false", "off", "no")


def _cache_dir() -> Path:
    if os.environ.get("MARA_BENCH_CACHE"):
        return Path(os.environ["MARA_BENCH_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mara_bench"


def _cpu_key() -> str:
    try:
        flags = next((ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")), "")
    except OSError:
        flags = ""
    return platform.machine() + flags


def _compiler() -> str | None:
    for cc in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if cc and shutil.which(cc):
            return cc
    return None


def _build(cc: str) -> Path:
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=60).stdout
    texts = [src.read_text() for src in SOURCES]
    key = hashlib.sha256("\0".join([*texts, cc, version, " ".join(FLAGS), _cpu_key()]).encode())
    out_dir = _cache_dir()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=out_dir, delete=True)
        probe.close()
    except OSError:  # no writable cache: a per-user folder under the temporary directory
        out_dir = Path(tempfile.gettempdir()) / f"mara_bench-{os.getuid() if hasattr(os, 'getuid') else 'user'}"
        out_dir.mkdir(parents=True, exist_ok=True)
    lib = out_dir / f"mara_native-{key.hexdigest()[:16]}.so"
    if lib.exists():
        return lib
    fd, tmp = tempfile.mkstemp(dir=out_dir, suffix=".so.tmp")
    os.close(fd)
    try:
        r = subprocess.run([cc, *FLAGS, "-o", tmp, *map(str, SOURCES), *LIBS], capture_output=True, text=True,
                           timeout=300)
        if r.returncode != 0:
            raise RuntimeError((r.stderr or r.stdout).strip().splitlines()[-1] if (r.stderr or r.stdout) else
                               f"{cc} exited with {r.returncode}")
        os.replace(tmp, lib)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return lib


def _declare(lib: ctypes.CDLL) -> None:
    p, pp = ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p)
    head = [ctypes.c_long, ctypes.c_int, p, p] + [ctypes.c_double] * 6
    for suffix in ("f32", "f64"):
        for name, rest in (("gate_forward", [pp, p]), ("gate_vjp", [pp, p, pp]),
                           ("gate_vjp_tangent", [pp, pp, p, p, pp])):
            fn = getattr(lib, f"{name}_{suffix}")
            fn.argtypes, fn.restype = head + rest, ctypes.c_int
        fn = getattr(lib, f"gated_pass_{suffix}")
        fn.argtypes, fn.restype = [ctypes.c_long, ctypes.c_long] + [p] * 8, None


def library() -> ctypes.CDLL | None:
    """The loaded kernel library, built on first call; None when disabled or when it cannot be built (warned once)."""
    global _lib, _tried
    if not enabled():
        return None
    if _tried:
        return _lib
    with _lock:
        if not _tried:
            try:
                cc = _compiler()
                if cc is None:
                    raise RuntimeError("no C++ compiler (c++, g++ or clang++) on PATH")
                lib = ctypes.CDLL(str(_build(cc)))
                _declare(lib)
                _lib = lib
            except Exception as e:  # noqa: BLE001 - any failure means: run the torch path, and say so once
                warnings.warn(f"MARA's native gate kernel is unavailable ({e}); the gate runs in torch ops "
                              "(same values, slower). Install a C++ compiler (g++ or clang++) to build it, or set "
                              "MARA_BENCH_NATIVE=0 to silence this.", stacklevel=2)
            _tried = True
    return _lib


def _dispatch_mode_active() -> bool:
    """A TorchDispatchMode (FlopCounterMode, the tests' op inspectors) sees torch ops only: take the torch path."""
    return _get_current_dispatch_mode is not None and _get_current_dispatch_mode() is not None


def usable(t: torch.Tensor) -> bool:
    """Whether the native gate can run on tensors like ``t``: CPU, float32/float64, not under torch.compile nor a
    dispatch mode (so FLOP counts see the torch ops: the kernel computes the same products), and built."""
    return (t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64) and enabled()
            and not torch.compiler.is_compiling() and not _dispatch_mode_active() and library() is not None)


def _ptrs(ts) -> ctypes.Array:
    return (ctypes.c_void_p * len(ts))(*(t.data_ptr() for t in ts))


def _call(name: str, consts, xs, *rest) -> None:
    """``rest``: tensors (one pointer each) or lists of tensors (an array of pointers)."""
    lib = library()
    assert lib is not None
    d = xs[0]
    fn = getattr(lib, f"{name}_{'f32' if d.dtype == torch.float32 else 'f64'}")
    u, lw, c, eps_t, eps_a, eps_o, scale, rho_eps = consts
    E, K = d.shape[0], u.shape[1]
    args = [_ptrs(r) if isinstance(r, (list, tuple)) else r.data_ptr() for r in rest]
    if fn(E, K, u.data_ptr(), lw.data_ptr(), c, eps_t, eps_a, eps_o, scale, rho_eps, _ptrs(xs), *args) != 0:
        raise MemoryError(f"MARA native kernel {name}: out of memory for {K} grid directions")


def gate_forward(consts, *xs) -> torch.Tensor:
    """α [E] of the folded ``paper`` gate (kernels.folded_gates from the per-edge scalars on): xs = (d [E, 3],
    z [E, 37], cw [98 + K + 1] = [cv, readout weights on the distinct directions, c0]), contiguous, one dtype;
    consts = (u [3, K] coordinate-major, log ω [K], C, eps_t, eps_a, eps_o, scale, RHO_EPS)."""
    y = torch.empty(xs[0].shape[0], dtype=xs[0].dtype)
    _call("gate_forward", consts, xs, y)
    return y


def gate_vjp(consts, *xs_and_gy) -> tuple[torch.Tensor, ...]:
    """(∂/∂d, ∂/∂z, ∂/∂cw) of Σ gα ⊙ α (∂/∂cw summed over the edges); arguments (d, z, cw, gα)."""
    *xs, gy = xs_and_gy
    outs = [torch.empty_like(x) for x in xs]
    _call("gate_vjp", consts, xs, gy, outs)
    return tuple(outs)


def gate_vjp_tangent(consts, xs, vs, gy) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Derivatives of the VJP in the direction ``vs`` of the inputs ``xs``: (J v [E], H v) with J the Jacobian of
    α and H the Hessian of Σ gα ⊙ α (H v: one tensor per input, the cw part summed over the edges). These are the
    VJP's own gradients for the cotangents vs: with respect to gα and to xs."""
    jv = torch.empty(xs[0].shape[0], dtype=xs[0].dtype)
    hv = [torch.empty_like(x) for x in xs]
    _call("gate_vjp_tangent", consts, xs, vs, gy, jv, hv)
    return jv, hv


# ------------------------------------------------------------------------------------------------ gated messages
# The passes run on one thread. With one or two torch threads they took 0.4x the time of torch's ops on a
# 1,498 x 10,240 float32 backward here (9 ms against 24 at one thread, 10 ms against 25 wall at two); with more
# threads torch's ops, which share the rows out, are left to do it.
STREAM_MAX_THREADS = 2


def streams(*ts: torch.Tensor | None) -> bool:
    """Whether the streaming passes of the gated messages (``csrc/gated_messages.cpp``) can run on these tensors
    (None entries ignored): where the gate kernel can (:func:`usable`), one device and dtype, contiguous, and at
    most ``STREAM_MAX_THREADS`` torch threads."""
    ts = [t for t in ts if t is not None]
    t = ts[0]
    return (torch.get_num_threads() <= STREAM_MAX_THREADS
            and all(x.device == t.device and x.dtype == t.dtype and x.is_contiguous() for x in ts) and usable(t))


def gated_pass(x, y, z=None, a=None, q=None, *, out2: bool = False, dot: bool = False):
    """(x ⊙ (1 + a) + q·z, q·y if ``out2``, Σ_d x y [E, 1] if ``dot``) for rows x, y, z [E, D] and a, q [E, 1], in
    one pass (``csrc/gated_messages.cpp``); a None input leaves its terms out (x None: the first output is q·z). Check
    :func:`streams` first."""
    lib = library()
    assert lib is not None
    ref = x if x is not None else z
    E, D = ref.shape
    fn = getattr(lib, f"gated_pass_{'f32' if ref.dtype == torch.float32 else 'f64'}")
    a = a if a is not None else ref.new_zeros(E, 1)
    out1 = torch.empty_like(ref)
    o2 = torch.empty_like(y) if out2 else None
    dt = ref.new_empty(E, 1) if dot else None

    def ptr(t):
        return None if t is None else t.data_ptr()

    fn(E, D, ptr(x), ptr(y), ptr(z), ptr(a), ptr(q), ptr(out1), ptr(o2), ptr(dt))
    return out1, o2, dt


# ------------------------------------------------------------------------------------------------ autograd
def gate(consts, d: torch.Tensor, z: torch.Tensor, cw: torch.Tensor) -> torch.Tensor:
    """α [E] by the kernel, differentiable twice: consts = (u [K, 3], log ω, C, eps_t, eps_a, eps_o, scale,
    RHO_EPS); d [E, 3], z [E, 37], cw [98 + K + 1] (kernels._edge_scalars_one_head, kernels._gate_constants)."""
    # contiguous before the Function, so that what it saves is on the graph (the double backward uses it)
    return _NativeGate.apply(consts, d.contiguous(), z.contiguous(), cw.contiguous())


class _NativeGate(torch.autograd.Function):
    """The folded gate α [E] from (d, z, cw) by the native kernel (``nn/csrc/folded_gate.cpp``): ``MARA.distances``,
    :func:`_assemble_forms`, :func:`_grid_pass` and the readout, per edge. Its backward is the kernel's
    vector-Jacobian product (:class:`_NativeGateVJP` when a second derivative may follow, i.e. under
    ``create_graph``)."""

    @staticmethod
    def forward(ctx, consts, *xs):  # xs contiguous (made so before apply, so that the saved tensors are on the graph)
        ctx.consts = _native_consts(consts, xs[0])
        ctx.save_for_backward(*xs)
        return gate_forward(ctx.consts, *xs)

    @staticmethod
    def backward(ctx, ga):
        xs = ctx.saved_tensors
        if torch.is_grad_enabled():
            return (None, *_NativeGateVJP.apply(ctx.consts, ga.contiguous(), *xs))
        return (None, *gate_vjp(ctx.consts, *xs, ga.contiguous()))


class _NativeGateVJP(torch.autograd.Function):
    """(gα, inputs) -> the kernel's VJP; its backward (force training's double backward) is the kernel's derivative
    of the VJP in the direction of the cotangents: J v for gα, H v for the inputs (H the Hessian of Σ gα·α)."""

    @staticmethod
    def forward(ctx, consts, ga, *xs):
        ctx.consts = consts
        ctx.save_for_backward(ga, *xs)
        return gate_vjp(consts, *xs, ga)

    @staticmethod
    @once_differentiable
    def backward(ctx, *cots):
        ga, *xs = ctx.saved_tensors
        vs = [torch.zeros_like(x) if v is None else v.contiguous() for x, v in zip(xs, cots, strict=True)]
        jv, hv = gate_vjp_tangent(ctx.consts, xs, vs, ga)
        return (None, jv, *hv)


def _native_consts(consts, like):
    """(u [3, K], log ω, C, eps_t, eps_a, eps_o, scale, RHO_EPS) in ``like``'s dtype, contiguous, for the kernel."""
    u, log_w, *numbers = consts  # u coordinate-major [3, K] for the kernel
    return (u.to(like.dtype).t().contiguous(), log_w.to(like.dtype).contiguous(), *numbers)
