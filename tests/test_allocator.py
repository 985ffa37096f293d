"""common/allocator.py: training steps reuse freed memory on glibc, and user choices are left alone."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from common import allocator

ROOT = Path(__file__).resolve().parents[1]

# A few training-like steps (a conv forward and backward on a 64-image batch), then the page
# faults they took. Run in a fresh process: the allocator's settings are per process.
STEPS = """
import resource, sys, torch
from common.allocator import keep_freed_memory
torch.set_num_threads(1)
if sys.argv[1] == "kept":
    assert keep_freed_memory()
x = torch.rand(64, 3, 64, 64)
conv = torch.nn.Conv2d(3, 16, 3, padding=1)  # 17 MB outputs: under either threshold
conv(x).sum().backward()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    conv(x).sum().backward()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


class FakeLibc:
    """Records mallopt calls instead of changing this test process's allocator."""

    def __init__(self, accepts: bool = True, mmap_limit: int = 1 << 40) -> None:
        self.calls: list[tuple[int, int]] = []
        self.accepts = accepts
        self.mmap_limit = mmap_limit  # older glibc refuses mmap thresholds above 32 MiB

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append((param, value))
        return int(self.accepts and (param != -3 or value <= self.mmap_limit))


@pytest.fixture
def fake_libc(monkeypatch: pytest.MonkeyPatch) -> FakeLibc:
    libc = FakeLibc()
    monkeypatch.setattr(allocator, "_glibc", lambda: libc)
    monkeypatch.setattr(allocator, "_kept", False)
    for name in (*allocator.USER_SETTINGS, "GLIBC_TUNABLES", "LD_PRELOAD"):
        monkeypatch.delenv(name, raising=False)
    return libc


def _page_faults(mode: str) -> int:
    env = {k: v for k, v in os.environ.items()
           if k not in (*allocator.USER_SETTINGS, "GLIBC_TUNABLES", "LD_PRELOAD")}
    out = subprocess.run([sys.executable, "-c", STEPS, mode], cwd=ROOT, env=env, check=True,
                         capture_output=True, text=True).stdout
    return int(out.split()[-1])


@pytest.mark.skipif(allocator._glibc() is None, reason="the thresholds exist in glibc only")
def test_kept_memory_stops_the_page_faults_of_repeated_steps():
    kept, default = _page_faults("kept"), _page_faults("default")
    assert kept * 5 < default, (kept, default)


def test_raises_both_thresholds_once(fake_libc):
    assert allocator.keep_freed_memory()
    assert allocator.keep_freed_memory()
    # glibc's malloc.h: M_TRIM_THRESHOLD -1, M_MMAP_THRESHOLD -3 (-2 is M_TOP_PAD)
    assert sorted(fake_libc.calls) == [(-3, 64 << 20), (-1, 256 << 20)]


def test_falls_back_to_the_largest_threshold_an_older_glibc_accepts(fake_libc):
    fake_libc.mmap_limit = 32 << 20
    assert allocator.keep_freed_memory()
    assert fake_libc.calls[-2:] == [(-3, 64 << 20), (-3, 32 << 20)]


def test_a_refused_setting_reports_false(fake_libc):
    fake_libc.accepts = False
    assert not allocator.keep_freed_memory()


@pytest.mark.parametrize("name, value", [("MALLOC_TRIM_THRESHOLD_", "1000000"),
                                         ("MALLOC_MMAP_THRESHOLD_", "131072"),
                                         ("MALLOC_TOP_PAD_", "0"),
                                         ("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=4096"),
                                         ("LD_PRELOAD", "/usr/lib/libjemalloc.so.2")])
def test_leaves_a_users_allocator_choice_alone(fake_libc, monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    assert not allocator.keep_freed_memory()
    assert fake_libc.calls == []


def test_other_glibc_tunables_do_not_count_as_a_choice(fake_libc, monkeypatch):
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.cpu.hwcaps=-AVX512F")
    assert allocator.keep_freed_memory()


def test_does_nothing_outside_glibc(monkeypatch):
    monkeypatch.setattr(allocator, "_kept", False)

    def no_libc(_name):
        raise OSError("no C library")

    monkeypatch.setattr(allocator.ctypes, "CDLL", no_libc)
    assert allocator._glibc() is None
    assert not allocator.keep_freed_memory()


@pytest.mark.skipif(allocator._glibc() is None, reason="the thresholds exist in glibc only")
def test_training_keeps_freed_memory(tiny_run):
    """pipeline.py's training (the session's tiny run trained in this process) raised them."""
    if allocator._user_chose_allocator():
        pytest.skip("this test process runs with the user's own allocator settings")
    assert allocator._kept
