"""The engine's image features by `ImageRef.key`: VQAv2 asks ~5 questions per image, so each
distinct image goes through the vision tower once per run while it fits."""

from __future__ import annotations

from collections import OrderedDict

import torch


class FeatureCache:
    """LRU map ImageRef.key -> image features [Q, D], bounded by total bytes.

    A batch keeps its own references to the features it uses, so an eviction never takes
    features away from the batch in flight.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: OrderedDict[str, torch.Tensor] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def get(self, key: str) -> torch.Tensor | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: str, value: torch.Tensor) -> None:
        if key in self._items:
            self.bytes -= self._nbytes(self._items.pop(key))
        self._items[key] = value
        self.bytes += self._nbytes(value)
        while self.bytes > self.max_bytes and len(self._items) > 1:
            _, old = self._items.popitem(last=False)
            self.bytes -= self._nbytes(old)

    def clear(self) -> None:
        self._items.clear()
        self.bytes = 0

    @staticmethod
    def _nbytes(t: torch.Tensor) -> int:
        return t.numel() * t.element_size()
