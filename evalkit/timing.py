"""Wall time split into named phases (data loading, prompts, model, saving, scoring) for run.json
and `evalkit bench --tasks`: where `evalkit run`'s time goes beyond the model itself."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager


class PhaseTimer:
    """Seconds per phase. A phase entered inside another pauses the outer one (saving a batch
    while the model call is still going is saving, not model time), so the phases never
    double-count and add up to at most the wall time."""

    def __init__(self) -> None:
        self.seconds: defaultdict[str, float] = defaultdict(float)
        self._stack: list[str] = []
        self._mark = 0.0

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        self._switch()
        self._stack.append(name)
        try:
            yield
        finally:
            self._switch()
            self._stack.pop()

    def _switch(self) -> None:
        now = time.perf_counter()
        if self._stack:
            self.seconds[self._stack[-1]] += now - self._mark
        self._mark = now

    def as_dict(self) -> dict[str, float]:
        return {f"{name}_s": round(value, 4) for name, value in self.seconds.items()}
