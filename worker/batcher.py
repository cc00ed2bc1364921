"""A dynamic batcher for the interactive queue (the idea of Triton's dynamic batching:
a maximum batch size plus a maximum queue delay).

The interactive worker runs a pool of threads; each /predict task decodes its image,
then hands the 28x28 pixels to the one batcher of the process. The batcher's thread
takes the first waiting request, keeps collecting for at most `max_wait_s` or until
`max_batch_size` images, runs them through the model in one forward pass (torch
releases the GIL) and wakes each caller with its own rows. Alone, a request waits
at most `max_wait_s`; under load, requests share forward passes.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

import numpy as np


class DynamicBatcher:
    def __init__(self, run: Callable[[np.ndarray], np.ndarray], max_batch_size: int,
                 max_wait_s: float) -> None:
        self.run = run
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.requests: queue.Queue[tuple[np.ndarray, Future]] = queue.Queue()
        self.batch_sizes: list[int] = []  # images per forward pass, for tests and tuning
        threading.Thread(target=self._loop, name="dynamic-batcher", daemon=True).start()

    def submit(self, pixels: np.ndarray, timeout: float | None = None) -> np.ndarray:
        """(n, 28, 28) pixels -> (n, 10) probabilities, run in a shared batch."""
        future: Future = Future()
        self.requests.put((pixels, future))
        return future.result(timeout)

    def _collect(self) -> list[tuple[np.ndarray, Future]]:
        batch = [self.requests.get()]
        count = len(batch[0][0])
        deadline = time.monotonic() + self.max_wait_s
        while count < self.max_batch_size:
            remaining = deadline - time.monotonic()
            try:
                # Past the deadline, still take whatever is already waiting.
                item = (self.requests.get(timeout=remaining) if remaining > 0
                        else self.requests.get_nowait())
            except queue.Empty:
                break
            batch.append(item)
            count += len(item[0])
        return batch

    def _loop(self) -> None:
        while True:
            batch = self._collect()
            try:
                probs = self.run(np.concatenate([pixels for pixels, _ in batch]))
            except BaseException as exc:  # hand the failure to every waiting caller
                for _, future in batch:
                    future.set_exception(exc)
                continue
            self.batch_sizes.append(len(probs))
            start = 0
            for pixels, future in batch:
                future.set_result(probs[start : start + len(pixels)])
                start += len(pixels)
