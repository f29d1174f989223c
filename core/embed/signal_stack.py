"""The calling thread's alternate signal stack, kept as it was across a call into a library that sets one.

OpenVINO's ``compile_model`` (2026.4) leaves an alternate signal stack of its own (11,568 bytes) set on the
calling thread. Python's signal handlers run on that stack (CPython installs them with ``SA_ONSTACK``), so
once OpenVINO's memory behind it is released, the next signal that thread takes, such as ``SIGCHLD`` when
a subprocess ends, killed the process (``SIGSEGV``, ``si_code`` SI_KERNEL: the kernel could not write the
signal frame). It did so in ``scripts/bench_throughput.py``, after the OpenVINO runs, at the ``git``
subprocess that stamps the results. :func:`restored_signal_stack` puts the thread's previous setting back
(the library's own handlers then run on the thread's stack, as any handler without one does).
"""

from __future__ import annotations

import ctypes
import platform
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache


class _StackT(ctypes.Structure):
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


@cache
def _libc() -> ctypes.CDLL | None:
    if platform.system() != "Linux":
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def _read(libc: ctypes.CDLL) -> _StackT | None:
    stack = _StackT()
    return stack if libc.sigaltstack(None, ctypes.byref(stack)) == 0 else None


def current_signal_stack() -> tuple[int, int, int] | None:
    """The calling thread's alternate signal stack as (address, flags, size); None where unknown."""
    libc = _libc()
    stack = None if libc is None else _read(libc)
    return None if stack is None else (stack.ss_sp or 0, stack.ss_flags, stack.ss_size)


@contextmanager
def restored_signal_stack() -> Iterator[None]:
    """Run the block, then give the calling thread back the alternate signal stack it had before."""
    libc = _libc()
    before = None if libc is None else _read(libc)
    try:
        yield
    finally:
        if libc is not None and before is not None:
            libc.sigaltstack(ctypes.byref(before), None)
