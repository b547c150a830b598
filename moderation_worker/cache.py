"""Thread-safe LRU caches for repeated images.

Two caches, both keyed by what determines their content:
- vision features, keyed by image (sha256 of bytes + preprocessing) and model, bounded in bytes;
- verdict scores, keyed by image, policy pack hash and model, bounded in entries (each is small).
Built on cachetools' LRUCache, which evicts by a size function; a lock makes them safe to share
between the fetch threads and the scoring thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from cachetools import LRUCache

V = TypeVar("V")


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0


class _SizedLRU(LRUCache):
    def __init__(self, maxsize: int, getsizeof: Callable[[object], int], on_evict: Callable[[], None]):
        super().__init__(maxsize=maxsize, getsizeof=getsizeof)
        self._on_evict = on_evict

    def popitem(self):  # called by cachetools only to evict
        item = super().popitem()
        self._on_evict()
        return item


class BoundedLRUCache(Generic[V]):
    """An LRU map bounded by the sum of ``sizeof(value)``; a value larger than the bound is not kept."""

    def __init__(self, max_size: int, sizeof: Callable[[V], int] = lambda _v: 1) -> None:
        self.max_size = max_size
        self.stats = CacheStats()
        self._lock = threading.Lock()
        self._sizeof = sizeof
        self._data: _SizedLRU | None = (
            _SizedLRU(max_size, sizeof, self._count_eviction) if max_size > 0 else None
        )

    def _count_eviction(self) -> None:
        self.stats.evictions += 1

    def get(self, key: Hashable) -> V | None:
        with self._lock:
            value = self._data.get(key) if self._data is not None else None
            if value is None:
                self.stats.misses += 1
            else:
                self.stats.hits += 1
            return value

    def put(self, key: Hashable, value: V) -> None:
        if self._data is None or self._sizeof(value) > self.max_size:
            return
        with self._lock:
            self._data[key] = value

    @property
    def current_size(self) -> int:
        """Bytes (or entries) held now."""
        with self._lock:
            return int(self._data.currsize) if self._data is not None else 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._data) if self._data is not None else 0


def make_feature_cache(max_bytes: int) -> BoundedLRUCache:
    """Vision features bounded by their tensors' bytes (``.nbytes``); they live on the model's device,
    so on a GPU this budget is GPU memory."""
    return BoundedLRUCache(max_bytes, sizeof=lambda features: features.nbytes)
