"""run.allocator: glibc's malloc serves large tensors from its heap, so a new tensor reuses mapped pages."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import textwrap

import pytest

from mara_bench.errors import UserError
from mara_bench.run import allocator

GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"

# a fresh process: 32 steps that each make two 64 MiB tensors from a third and free them; report the minor page
# faults of each step and configure()'s answer
PROBE = textwrap.dedent("""
    import resource, torch
    from mara_bench.run import allocator
    state = allocator.configure()
    x = torch.ones(1 << 24)
    faults = []
    for _ in range(32):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        float((x * 2.0 + x)[-1])
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    assert allocator.state() == state and allocator.configure() == state  # applied once, then reported
    print(*faults)
    print(state)
""")
PAGES = (1 << 26) // 4096  # 16,384 pages of 4 KiB in one 64 MiB tensor


def _probe(**env_changes):
    env = {k: v for k, v in os.environ.items()  # nothing of the caller's that would make configure() stand aside
           if not k.startswith("MALLOC_") and k not in (allocator.ENV, "LD_PRELOAD", "GLIBC_TUNABLES")}
    env.update(env_changes)
    p = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    faults, state = p.stdout.strip().splitlines()[-2:]
    return [int(f) for f in faults.split()], state


@pytest.mark.skipif(not GLIBC, reason="the allocator settings apply to glibc's malloc only")
def test_tuned_reuses_pages_system_faults_them_in():
    # the heap grows for the first steps (and now and then later: freed blocks must coalesce before a block with
    # its alignment padding fits), then the pages are reused
    tuned, state = _probe()
    assert state.startswith("tuned (glibc"), state
    assert statistics.median(tuned[-16:]) < PAGES // 10, tuned  # most later steps fault nothing in
    system, state = _probe(MARA_BENCH_MALLOC="system")  # glibc's defaults: every new tensor is a fresh mmap
    assert state == "system (MARA_BENCH_MALLOC=system)" and min(system) > PAGES, system
    assert sum(tuned) < sum(system) / 3, (tuned, system)


@pytest.mark.skipif(not GLIBC, reason="the allocator settings apply to glibc's malloc only")
def test_users_own_glibc_settings_are_left_alone():
    faults, state = _probe(MALLOC_TOP_PAD_="0")
    assert state == "system (glibc malloc variables set in the environment)"
    assert min(faults) > PAGES  # glibc's defaults: every new tensor is a fresh mmap again


def test_preloaded_allocator_and_other_libc_are_left_alone(monkeypatch):
    monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("glibc", "2.36"))
    monkeypatch.setattr(allocator.sys, "platform", "linux")
    for k in [k for k in os.environ if k.startswith("MALLOC_")] + ["GLIBC_TUNABLES"]:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")
    assert allocator._reason_to_leave() == "system (jemalloc preloaded)"
    monkeypatch.setenv("LD_PRELOAD", "")
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=65536")
    assert allocator._reason_to_leave() == "system (glibc malloc variables set in the environment)"
    monkeypatch.delenv("GLIBC_TUNABLES")
    assert allocator._reason_to_leave() is None
    monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("musl", "1.2"))
    assert allocator._reason_to_leave() == "system (not glibc)"


def test_bad_value_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("MARA_BENCH_MALLOC", "fast")
    with pytest.raises(UserError, match=r"MARA_BENCH_MALLOC='fast' is not one of tuned, system"):
        allocator.configure()  # checked on every call, also after the first one applied
    monkeypatch.setenv("MARA_BENCH_MALLOC", " System ")
    assert allocator.requested() == "system"
    monkeypatch.delenv("MARA_BENCH_MALLOC")
    assert allocator.requested() == "tuned"


def test_cli_refuses_a_bad_value_with_exit_2(capsys, monkeypatch):
    from mara_bench.cli import main

    monkeypatch.setenv("MARA_BENCH_MALLOC", "jemalloc")
    assert main(["time", "--backbone", "mace", "--preset", "smoke", "--sizes", "12", "--quiet"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mara_bench time: error: MARA_BENCH_MALLOC='jemalloc'"), lines
