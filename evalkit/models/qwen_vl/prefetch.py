"""Image decode and preprocessing off the main thread, ahead of the model.

JPEG decode and the bicubic resize to 448 px take several milliseconds per image per core; run
inline between model calls they add straight to the wall time. The engine hands the images of
its next batch to `PixelPrefetcher.prefetch` before it runs the current one, so a small thread
pool (PIL releases the GIL while it decodes and resizes) prepares them while the model computes.
Pending work is keyed by `ImageRef.key`: an image is decoded once however many requests (or
batches) ask for it, and a batch that was not foreseen (a different batch size after an
out-of-memory) just decodes what was not prefetched.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor

import torch

from evalkit.task import ImageRef


def default_workers(device: torch.device) -> int:
    """Threads for image work: the cores torch's own threads leave over, at most 8. On a CPU
    whose cores all run torch's threads that is 0 (decode inline): a decode thread there only
    takes turns with the model (measured: 1.11x slower on the 2-core dev VM, ab_engine.py)."""
    spare = (os.cpu_count() or 1) - (1 if device.type == "cuda" else torch.get_num_threads())
    return max(0, min(8, spare))


class PixelPrefetcher:
    """ImageRef -> pixels [3, S, S] through a thread pool; `get` returns what `prefetch` started,
    or transforms the image there and then. Errors (ImageError) surface from `get`."""

    def __init__(self, transform: Callable[[ImageRef], torch.Tensor], workers: int):
        self.transform = transform
        self.workers = workers
        self._pool: ThreadPoolExecutor | None = None
        self._pending: dict[str, Future[torch.Tensor]] = {}
        self.submitted = 0  # images handed to the pool (each key once while pending)

    def prefetch(self, refs: Iterable[ImageRef]) -> None:
        """Start decoding `refs` (skipping keys already pending) in the background."""
        if self.workers <= 0:
            return
        for ref in refs:
            if ref.key not in self._pending:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="evalkit-images")
                self._pending[ref.key] = self._pool.submit(self.transform, ref)
                self.submitted += 1

    def get(self, ref: ImageRef) -> torch.Tensor:
        """The pixels of `ref`: the prefetched result (waited for) or a transform now."""
        future = self._pending.pop(ref.key, None)
        return future.result() if future is not None else self.transform(ref)

    def discard(self, keys: Iterable[str]) -> None:
        """Forget pending work for `keys` (their features came from the cache after all)."""
        for key in keys:
            future = self._pending.pop(key, None)
            if future is not None:
                future.cancel()

    def clear(self) -> None:
        self.discard(list(self._pending))

    def close(self) -> None:
        self.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
