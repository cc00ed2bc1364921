"""Faults injected on purpose, for tests and drills: off unless DIGITS_FAILPOINTS names one.

DIGITS_FAILPOINTS is a comma-separated list of NAME=PART: the fault fires while a worker
handles a chunk holding an item whose filename contains PART. No image is special in
the code: what fires, and on which names, is only ever what the environment says.

    worker_crash=PART   the worker process kills itself (SIGKILL), as an out-of-memory
                        kill or a segfault in a decoder would, before it writes anything
    worker_error=PART   the chunk raises a transient error (as a locked database would);
                        with PART ending in `:N`, only the first N times in a process
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterable

from shared.settings import get_settings

_fired: dict[str, int] = {}


class InjectedError(RuntimeError):
    """The transient error that `worker_error` raises."""


def _armed(name: str) -> tuple[str, int | None] | None:
    for entry in get_settings().failpoints.split(","):
        key, _, value = entry.strip().partition("=")
        if key == name and value:
            part, _, times = value.rpartition(":")
            if part and times.isdigit():
                return part, int(times)
            return value, None
    return None


def _hit(name: str, filenames: Iterable[str]) -> bool:
    armed = _armed(name)
    if armed is None:
        return False
    part, times = armed
    if not any(part in f for f in filenames):
        return False
    if times is not None:
        if _fired.get(name, 0) >= times:
            return False
        _fired[name] = _fired.get(name, 0) + 1
    return True


def worker_chunk(filenames: Iterable[str]) -> None:
    """Called by the worker with a chunk's filenames, after it has counted the delivery."""
    names = list(filenames)
    if _hit("worker_crash", names):
        os.kill(os.getpid(), signal.SIGKILL)
    if _hit("worker_error", names):
        raise InjectedError("injected by DIGITS_FAILPOINTS worker_error")
