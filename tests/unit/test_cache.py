import threading

from moderation_worker.cache import BoundedLRUCache


def test_least_recently_used_entries_are_evicted_by_size():
    cache: BoundedLRUCache[bytes] = BoundedLRUCache(10, sizeof=len)
    cache.put("a", b"xxxx")
    cache.put("b", b"xxxx")
    assert cache.get("a") == b"xxxx"  # a is now more recent than b
    cache.put("c", b"xxxx")
    assert cache.get("b") is None
    assert cache.get("a") == b"xxxx"
    assert cache.current_size == 8
    assert cache.stats.evictions == 1
    assert (cache.stats.hits, cache.stats.misses) == (2, 1)


def test_a_value_larger_than_the_bound_is_not_kept_and_a_zero_bound_disables():
    cache: BoundedLRUCache[bytes] = BoundedLRUCache(4, sizeof=len)
    cache.put("big", b"12345")
    assert cache.get("big") is None
    disabled: BoundedLRUCache[int] = BoundedLRUCache(0)
    disabled.put("k", 1)
    assert disabled.get("k") is None
    assert len(disabled) == 0


def test_concurrent_use_keeps_the_bound():
    cache: BoundedLRUCache[bytes] = BoundedLRUCache(100, sizeof=len)

    def hammer(start: int) -> None:
        for i in range(2000):
            cache.put((start, i), b"x" * 7)
            cache.get((start, i - 3))

    threads = [threading.Thread(target=hammer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert cache.current_size <= 100
    assert len(cache) == cache.current_size // 7
