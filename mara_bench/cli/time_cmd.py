"""``mara_bench time``: ms/step, throughput, ns/day, peak memory and MARA overhead over a sweep of system sizes.

Inference (energy + forces) and one training step (loss + backward + optimizer step) per MARA variant, variants
interleaved in one process (every repeat times every variant), so the on/off and control/off ratios are paired.
Results go to <output-dir>/<stamp>.json and .csv; a table is printed. See docs/timing.md.
"""

from __future__ import annotations

import argparse

from ..errors import UserError
from .common import parse_csv


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("time", help="time inference and training steps vs system size, with MARA overhead",
                       description=__doc__)
    p.add_argument("--backbone", default="mace", help="backbone name (see 'mara_bench list')")
    p.add_argument("--mara", "--variants", dest="variants", default="off,scale,control,paper",
                   help="comma-separated MARA variants: off, scale, control, paper (= on) (default all four)")
    p.add_argument("--preset", default="quick", help="smoke, quick or paper (default quick)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    p.add_argument("--dtype", default="float32", help="float32 or float64 (default float32)")
    p.add_argument("--sizes", default=None,
                   help="comma-separated target atom counts; copies of the molecule are batched (default 20,200: a "
                        "quick look; --full: 20,200,2000,5000)")
    p.add_argument("--modes", default="inference,train", help="inference, train or both (default both)")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed repeats per variant and size (default 5; --full: 10)")
    p.add_argument("--full", action="store_true",
                   help="the long sweep: sizes 20,200,2000,5000 and 10 repeats (many minutes on a laptop CPU)")
    p.add_argument("--warmup", type=int, default=2, help="untimed warm-up calls per variant (default 2)")
    p.add_argument("--compile", action="store_true", help="torch.compile the models; compile time is reported apart")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: $MARA_BENCH_THREADS if set, else torch's choice)")
    p.add_argument("--molecule", default="default",
                   help="'default' (the default dataset), a dataset name, ase:NAME (ASE g2 molecule) or a npz/extxyz path")
    p.add_argument("--data-dir", default=None, help="offline data directory (default: $MARA_BENCH_DATA)")
    p.add_argument("--mara-grid", default="4x8", help="MARA S2 grid HxW (default 4x8)")
    p.add_argument("--mara-hidden", type=int, default=32, help="MARA hidden width (default 32)")
    p.add_argument("--mara-heads", type=int, default=1, help="MARA heads (default 1)")
    p.add_argument("--mara-impl", default="folded",
                   help="comma-separated implementations of the paper gate, each timed as its own model in the same "
                        "interleaved repeats: folded (default; on the CPU mostly a native C++ kernel), "
                        "folded-torch (the same in torch ops only), fused, matmul, reference (torch-harmonics "
                        "AttentionS2 on [E, C, H, W], release-style); e.g. --mara-impl folded,reference adds an "
                        "'x ref' column")
    p.add_argument("--no-flops", action="store_true",
                   help="skip the FLOP count (FlopCounterMode, one extra call per variant) and the GEMM probe")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="model.KEY=VALUE",
                   help="override a model preset value, e.g. --set model.num_channels=64")
    p.add_argument("--max-step-s", type=float, default=None,
                   help="skip a size (with a note) when one warm-up step takes longer than this many seconds")
    p.add_argument("--output-dir", default="results/timing", help="where <stamp>.json/.csv go (default results/timing)")
    p.add_argument("--plot", action="store_true", help="also write <stamp>.png (time vs atoms, log-log)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def parse_sizes(text: str) -> tuple[int, ...]:
    out = []
    for t in parse_csv(text, "--sizes"):
        try:
            n = int(t)
        except ValueError:
            raise UserError(f"bad --sizes entry '{t}': expected positive integers, e.g. --sizes 20,200,2000") from None
        if n < 1:
            raise UserError(f"bad --sizes entry '{t}': sizes must be >= 1 atom")
        out.append(n)
    return tuple(out)


QUICK_SIZES, FULL_SIZES = "20,200", "20,200,2000,5000"


def apply_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """Fill --sizes/--repeats: a quick look by default, the long sweep with --full (explicit values win)."""
    if args.sizes is None:
        args.sizes = FULL_SIZES if args.full else QUICK_SIZES
    if args.repeats is None:
        args.repeats = 10 if args.full else 5
    return args


def settings_from_args(args: argparse.Namespace):
    import os

    from ..config import DEVICES, DTYPES, PRESETS, normalize_mara, parse_grid, parse_override
    from ..errors import unknown
    from ..nn.mara import IMPLS
    from ..registry import backbone_entries
    from ..run.pipeline import resolve_device
    from ..timing.measure import MODES
    from ..timing.sweep import SweepSettings

    variants = tuple(dict.fromkeys(normalize_mara(v) for v in parse_csv(args.variants, "--mara")))
    impls = tuple(dict.fromkeys(parse_csv(args.mara_impl, "--mara-impl")))
    for i in impls:
        if i not in IMPLS:
            raise unknown("--mara-impl value", i, IMPLS)
    modes = tuple(parse_csv(args.modes, "--modes"))
    for m in modes:
        if m not in MODES:
            raise unknown("--modes value", m, MODES)
    if args.preset not in PRESETS:
        raise unknown("preset", args.preset, PRESETS)
    if args.dtype not in DTYPES:
        raise unknown("dtype", args.dtype, DTYPES)
    if args.backbone not in backbone_entries():
        raise unknown("backbone", args.backbone, backbone_entries())
    apply_defaults(args)
    if args.repeats < 1 or args.warmup < 0:
        raise UserError(f"--repeats must be >= 1 and --warmup >= 0 (got {args.repeats}, {args.warmup})")
    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads must be >= 1 (got {args.threads})")
    overrides = dict(parse_override(o) for o in args.overrides)
    bad = [k for k in overrides if not k.startswith("model.")]
    if bad:
        raise UserError(f"--set {bad[0]}: 'time' accepts only model.KEY=VALUE overrides")
    if args.device not in DEVICES and not str(args.device).startswith("cuda:"):  # the names a run accepts
        raise unknown("device", args.device, DEVICES)
    device = resolve_device(args.device)  # the run's: auto -> cuda or cpu; CUDA asked for but absent -> UserError
    return SweepSettings(
        backbone=args.backbone, variants=variants, preset=args.preset, device=device, dtype=args.dtype,
        sizes=parse_sizes(args.sizes), repeats=args.repeats, warmup=args.warmup, compile=args.compile, modes=modes,
        molecule=args.molecule, data_dir=args.data_dir or os.environ.get("MARA_BENCH_DATA") or None,
        mara_grid=parse_grid(args.mara_grid), mara_hidden=args.mara_hidden, mara_heads=args.mara_heads,
        max_step_s=args.max_step_s, model_overrides=overrides, mara_impls=impls, flops=not args.no_flops)


def main(args: argparse.Namespace) -> int:
    import sys
    import time

    from ..run import allocator
    from ..run.pipeline import apply_thread_env

    s = settings_from_args(args)
    apply_thread_env(s.device, args.threads)  # --threads, else $MARA_BENCH_THREADS (as run, md and sweeps do)
    allocator.configure()  # as run and md do: large tensors from the heap ($MARA_BENCH_MALLOC)
    from ..timing.sweep import run_sweep
    from ..timing.tables import floor_summary, format_table, plot_timing, write_results

    result = run_sweep(s, command=" ".join(["python -m mara_bench"] + sys.argv[1:]), progress=not args.quiet)
    stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-{s.backbone}-{s.preset}-{s.device.replace(':', '')}"
    j, c = write_results(result, args.output_dir, stamp)
    print(format_table(result["rows"]))
    gemm = result["environment"].get("gemm")
    if gemm:
        print(f"dense matmul rate (GEMM probe {gemm['n']}^3 {gemm['dtype']}, {gemm['threads']} threads): "
              f"{gemm['gflops']:.1f} GFLOP/s median, {gemm['best_gflops']:.1f} best")
        for line in floor_summary(result["rows"], gemm["gflops"]):
            print(line)
    print(f"threads={result['environment']['threads']} device={result['environment']['device_name']} "
          f"molecule={result['settings']['molecule']} stats={result['settings']['stats']}")
    print(f"wrote {j} and {c}")
    if args.plot:
        print(f"wrote {plot_timing(c, c.with_suffix('.png'))}")
    return 0
