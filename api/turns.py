"""Turns for other requests during a long loop.

`digits api` serves each process's requests on one gevent event loop (DIGITS_API_WORKER),
which switches requests only when one waits on I/O: a loop of pure Python over an
upload's files or a page of results held up every /predict call in its process for
tens of milliseconds (docs/scaling.md, "The interactive lane"). A turn is a sleep of
a microsecond: under gevent the greenlet comes back only after the event loop's next
iteration, which reads every socket that is ready (a sleep of 0 lets other greenlets
run but need not poll for I/O, so callers waiting on a socket were not let in); for
the gthread worker's threads, a moment without the GIL.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
EVERY = 64
TURN_S = 1e-6


def turn() -> None:
    """A turn for the process's other requests."""
    time.sleep(TURN_S)


def taking_turns(items: Iterable[T], every: int = EVERY) -> Iterator[T]:
    """The items, with a turn for the process's other requests every `every` of them."""
    for n, item in enumerate(items, 1):
        yield item
        if n % every == 0:
            turn()
