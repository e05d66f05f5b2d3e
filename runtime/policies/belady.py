"""Belady's MIN (oracle): evict the resident whose next demand request is farthest in the future.

    make_eviction("belady", future=trace.flat_requests())   # simulator only: needs the whole request sequence

`future` is the exact sequence of demand requests the cache will see; each `on_access` consumes the next one
(a mismatch raises: the oracle was given another trace). Residents never requested again go first. Without
prefetching this is the lower bound on misses for every policy under the same pins.

The ranks live in the shared indexed heap over key ids (runtime/policies/id_heap.py), ranked by (minus the next
request, insertion tick): `victim` is O(log n); residents never requested again tie, and the earliest inserted goes
first, as a scan of the cache's residents in insertion order would pick. Every key of `future` is numbered in the
policy's key table (runtime/key_ids.py) up front and handed to the heap (`set_future`), so the cache's batched path
asks by id (`victims_ids`, `on_group_ids`) and a group is checked against the future id by id.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

from runtime.policies.id_heap import HeapEviction
from specmd_predict.routing import ExpertKey

NEVER = float("inf")


class Belady(HeapEviction):
    name = "belady"
    batched = True  # ranks by stored next-request indexes: a group's keys only move their own
    batched_ids = True

    def __init__(self, future: Sequence[ExpertKey] | None = None) -> None:
        if future is None:
            raise ValueError("belady is an oracle for the simulator: pass future=<the demand request sequence>")
        super().__init__()
        # numbered now, in one typed loop: the cache adopts the table (and sizes its arrays to it); ids start at 1
        self._heap.set_future(future if isinstance(future, list | tuple) else tuple(future))
        self._num_future = len(self._heap.future_ids)
        self._positions: dict[int, list[int]] | None = None  # id -> its request indexes, built on first need

    @property
    def _next(self) -> _NextByKey:
        """Each resident's next request, by ExpertKey."""
        return _NextByKey(self._heap, self._ids)

    def _next_from_now(self, key: ExpertKey) -> float:
        if self._positions is None:  # only a prefetched insert asks (a demand insert's request is the current one)
            positions: dict[int, list[int]] = {}
            for i, n in enumerate(self._heap.future_ids):
                positions.setdefault(n, []).append(i)
            self._positions = positions
        idxs = self._positions.get(self._ids.get(key))
        if not idxs:
            return NEVER
        i = bisect_left(idxs, self._heap.now)
        return idxs[i] if i < len(idxs) else NEVER

    def on_insert(self, key: ExpertKey, prefetched: bool) -> None:
        n = self._ids[key]
        # a demand insert is requested now: on_access, which comes next, ranks it by its following request
        self._heap.rerank(n, -(self._next_from_now(key) if prefetched else self._heap.now))
        self._heap.insert(n)  # its tie: the insertion order

    def on_access(self, key: ExpertKey) -> None:
        heap = self._heap
        now = heap.now
        n = self._ids.get(key)
        if now >= self._num_future or heap.future_ids[now] != n:
            expected = self._keys[heap.future_ids[now]] if now < self._num_future else "the end of the sequence"
            raise ValueError(f"belady: request {now} is {key}, but its future sequence has {expected}")
        heap.advance(n)


class _NextByKey:
    """`view[key]` is the next request of resident `key` (minus its rank in the heap)."""

    __slots__ = ("heap", "ids")

    def __init__(self, heap, ids: dict) -> None:
        self.heap, self.ids = heap, ids

    def __getitem__(self, key: ExpertKey) -> float:
        return -self.heap.rank_of(self.ids[key])
