"""Wall-clock and CPU time of a block of code.

On a machine shared with other work, wall-clock time grows with everyone else's load; the
CPU time this process used (summed over its threads) hardly does, so the report gives both.
"""

from __future__ import annotations

import time


class Stopwatch:
    wall: float = 0.0  # seconds, wall-clock
    cpu: float = 0.0  # seconds of CPU used by this process, all threads together

    def __enter__(self) -> Stopwatch:
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self._wall
        self.cpu = time.process_time() - self._cpu
