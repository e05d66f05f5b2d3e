"""Belady's MIN (oracle): evict the resident whose next demand request is farthest in the future.

    make_eviction("belady", future=trace.flat_requests())   # simulator only: needs the whole request sequence

`future` is the exact sequence of demand requests the cache will see; each `on_access` consumes the next one
(a mismatch raises: the oracle was given another trace). Residents never requested again go first. Without
prefetching this is the lower bound on misses for every policy under the same pins.

A lazy max-heap of (next request, insertion order) makes `victim` O(log n); residents never requested again
tie, and the earliest inserted goes first, as a scan of the cache's residents in insertion order would pick.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Collection, Container, Sequence
from heapq import heapify, heappop, heappush

from specmd_predict.policies import EvictionPolicy
from specmd_predict.routing import ExpertKey

NEVER = float("inf")


class Belady(EvictionPolicy):
    name = "belady"
    batched = True  # ranks by stored next-request indexes: a group's keys only move their own

    def __init__(self, future: Sequence[ExpertKey] | None = None) -> None:
        if future is None:
            raise ValueError("belady is an oracle for the simulator: pass future=<the demand request sequence>")
        self._future = tuple(future)  # a tuple: a group compares its slice with its keys in one C call
        # index of the same key's next request, by one backward scan (one dict lookup per request)
        following: list[float] = [NEVER] * len(self._future)
        upcoming: dict[ExpertKey, int] = {}
        for i in range(len(self._future) - 1, -1, -1):
            key = self._future[i]
            following[i] = upcoming.get(key, NEVER)
            upcoming[key] = i
        self._following = following
        self._priority = [-i for i in following]  # the heap's first field, made once rather than per group
        self._positions: dict[ExpertKey, list[int]] | None = None  # key -> its request indexes, built on first need
        self._now = 0
        self._next: dict[ExpertKey, float] = {}
        self._inserted: dict[ExpertKey, int] = {}  # insertion tick of each resident
        self._tick = 0
        self._heap: list[tuple[float, int, ExpertKey]] = []  # (-next request, insertion tick, key), lazy

    def _next_from_now(self, key: ExpertKey) -> float:
        if self._positions is None:  # only a prefetched insert asks (a demand insert's request is the current one)
            positions: dict[ExpertKey, list[int]] = {}
            for i, k in enumerate(self._future):
                positions.setdefault(k, []).append(i)
            self._positions = positions
        idxs = self._positions.get(key)
        if not idxs:
            return NEVER
        i = bisect_left(idxs, self._now)
        return idxs[i] if i < len(idxs) else NEVER

    def _push(self, key: ExpertKey, nxt: float) -> None:
        self._next[key] = nxt
        heappush(self._heap, (-nxt, self._inserted[key], key))
        if len(self._heap) > 4 * len(self._next) + 64:  # drop outdated entries now and then
            self._heap = [(-n, self._inserted[k], k) for k, n in self._next.items()]
            heapify(self._heap)

    def on_insert(self, key: ExpertKey, prefetched: bool) -> None:
        self._tick += 1
        self._inserted[key] = self._tick
        # a demand insert is requested now: on_access, which comes next, pushes its following request
        self._push(key, self._next_from_now(key) if prefetched else self._now)

    def on_access(self, key: ExpertKey) -> None:
        now = self._now
        if now >= len(self._future) or self._future[now] != key:
            expected = self._future[now] if now < len(self._future) else "the end of the sequence"
            raise ValueError(f"belady: request {now} is {key}, but its future sequence has {expected}")
        self._push(key, self._following[now])
        self._now = now + 1

    def on_evict(self, key: ExpertKey) -> None:
        del self._next[key]
        del self._inserted[key]

    def victim(self, candidates: Collection[ExpertKey]) -> ExpertKey:
        heap, nxt, inserted = self._heap, self._next, self._inserted
        skipped = []
        try:
            while heap:
                entry = heap[0]
                key = entry[2]
                if nxt.get(key) != -entry[0] or inserted.get(key) != entry[1]:
                    heappop(heap)  # outdated entry
                    continue
                if key in candidates:
                    return key
                skipped.append(heappop(heap))
            raise ValueError("belady: no candidate is a resident it knows")
        finally:
            for entry in skipped:
                heappush(heap, entry)

    def victims(self, count: int, excluded: Container[ExpertKey]) -> list[ExpertKey]:
        # the chosen keys' entries are not put back: the cache evicts them at once
        heap, nxt, inserted = self._heap, self._next, self._inserted
        chosen: list[ExpertKey] = []
        skipped = []
        remaining = count
        while heap:
            entry = heappop(heap)
            key = entry[2]
            if nxt.get(key) != -entry[0] or inserted.get(key) != entry[1]:
                continue  # outdated entry
            if key in excluded:
                skipped.append(entry)
                continue
            chosen.append(key)
            remaining -= 1
            if not remaining:
                break
        for entry in skipped:
            heappush(heap, entry)
        return chosen

    def on_group(self, keys: Sequence[ExpertKey], misses: Sequence[ExpertKey], victims: Sequence[ExpertKey]) -> None:
        nxt, inserted = self._next, self._inserted
        for key in victims:
            del nxt[key], inserted[key]
        tick = self._tick
        inserted.update(
            zip(misses, range(tick + 1, tick + 1 + len(misses)), strict=True)
        )  # its next request is in this group
        self._tick = tick + len(misses)
        now, end = self._now, self._now + len(keys)
        window = self._future[now:end]
        if window != keys and window != tuple(keys):  # keys come as a tuple from traces (one C compare)
            for key in keys:  # the per-request check names the first request that differs
                self.on_access(key)
            return
        heap = self._heap
        nxt.update(zip(keys, self._following[now:end], strict=True))
        # the heap entries are made in C (zip), one push each
        for entry in zip(self._priority[now:end], map(inserted.__getitem__, keys), keys, strict=True):
            heappush(heap, entry)
        self._now = end
        if len(heap) > 4 * len(nxt) + 64:  # drop outdated entries now and then
            self._heap = [(-n, inserted[k], k) for k, n in nxt.items()]
            heapify(self._heap)
