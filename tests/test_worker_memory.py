"""The mining worker caps glibc's malloc arenas unless the user chose a number."""
from __future__ import annotations

import ctypes
import subprocess
import sys

import pytest

from maskmine.transforms.worker_memory import cap_malloc_arenas


def _glibc() -> bool:
    try:
        ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return True


def test_the_users_malloc_arena_max_wins(monkeypatch):
    monkeypatch.setenv("MALLOC_ARENA_MAX", "8")
    assert cap_malloc_arenas() is False


@pytest.mark.skipif(not _glibc(), reason="the C library is not glibc: there is no mallopt to call")
def test_glibc_takes_the_cap_in_a_fresh_process():
    """mallopt answers 1 when it accepts the setting (glibc's M_ARENA_MAX = -8); run apart, so
    the test process keeps its own allocator settings."""
    code = ("import os; os.environ.pop('MALLOC_ARENA_MAX', None); "
            "from maskmine.transforms.worker_memory import cap_malloc_arenas; print(cap_malloc_arenas())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "True"
