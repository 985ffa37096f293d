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
conv = torch.nn.Conv2d(3, 32, 3, padding=1)
conv(x).sum().backward()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    conv(x).sum().backward()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


class FakeLibc:
    """Records mallopt calls instead of changing this test process's allocator."""

    def __init__(self, accepts: bool = True):
        self.calls: list[tuple[int, int]] = []
        self.accepts = accepts

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append((param, value))
        return int(self.accepts)


@pytest.fixture
def fake_libc(monkeypatch) -> FakeLibc:
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
    assert fake_libc.calls == [(allocator.M_MMAP_THRESHOLD, allocator.MMAP_THRESHOLD),
                               (allocator.M_TRIM_THRESHOLD, allocator.TRIM_THRESHOLD)]


def test_a_refused_setting_reports_false(fake_libc):
    fake_libc.accepts = False
    assert not allocator.keep_freed_memory()


@pytest.mark.parametrize("name, value", [("MALLOC_TRIM_THRESHOLD_", "1000000"),
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
