"""Process pools for making training data on every core."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor


def spawned_pool(workers: int, **options) -> ProcessPoolExecutor:
    """A pool of spawned, not forked, processes: a fork of a process running other
    threads (torch's, a test suite's) can inherit a lock one of them holds and wait on it
    for ever. Each process imports its task's module afresh, so a script that starts one
    needs the `if __name__ == "__main__":` guard (`digits` has it)."""
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               **options)
