"""Belady's MIN (oracle): evict the resident whose next demand request is farthest in the future.

    make_eviction("belady", future=trace.flat_requests())   # simulator only: needs the whole request sequence

`future` is the exact sequence of demand requests the cache will see; each `on_access` consumes the next one
(a mismatch raises: the oracle was given another trace). Residents never requested again go first. Without
prefetching this is the lower bound on misses for every policy under the same pins.

A lazy max-heap of (next request, insertion order, id) on `heapq` makes `victim` O(log n); residents never requested
again tie, and the earliest inserted goes first, as a scan of the cache's residents in insertion order would pick.
Every key of `future` is numbered in the policy's key table (runtime/key_ids.py) up front, so the cache's batched path
asks by id (`victims_ids`, `on_group_ids`) and a group is checked against the future as a slice of ids.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from heapq import heapify, heappop, heappush

import cython

from runtime.key_ids import KeyIds, grown
from runtime.policies.lazy_heap import HeapVictims
from specmd_predict.routing import ExpertKey

NEVER = float("inf")


class Belady(HeapVictims):  # victim / victims / victims_ids over its _take
    name = "belady"
    batched = True  # ranks by stored next-request indexes: a group's keys only move their own
    batched_ids = True
    typed = False  # its lists are Python lists (the cache's bound arrays may be C arrays)

    def __init__(self, future: Sequence[ExpertKey] | None = None) -> None:
        if future is None:
            raise ValueError("belady is an oracle for the simulator: pass future=<the demand request sequence>")
        self._future = tuple(future)  # a tuple: a group compares its slice with its keys in one C call
        self.key_ids = table = KeyIds()  # numbered now; the cache adopts the table (and sizes its arrays to it)
        self._ids, self._keys = table.ids, table.keys
        self._future_ids = [table.number(key) for key in self._future]
        self.id_order = self
        # index of the same key's next request, by one backward scan
        following: list[float] = [NEVER] * len(self._future)
        upcoming: dict[int, int] = {}
        for i in range(len(self._future_ids) - 1, -1, -1):
            n = self._future_ids[i]
            following[i] = upcoming.get(n, NEVER)
            upcoming[n] = i
        self._following = following
        self._priority = [-i for i in following]  # the heap's first field, made once rather than per group
        self._positions: dict[ExpertKey, list[int]] | None = None  # key -> its request indexes, built on first need
        self._now = 0
        self._next_of: list[float] = [NEVER] * len(table)  # id -> its next request (residents)
        self._inserted: list[int] = [0] * len(table)  # id -> insertion tick; 0: not resident
        self._num_resident = 0
        self._tick = 0
        self._heap: list[tuple[float, int, int]] = []  # (-next request, insertion tick, id), lazy
        self._mark = self._gids = self._gmisses = self._gvictims = None

    @property
    def _next(self) -> _ByKey:
        """Each resident's next request, by ExpertKey (a view over the list by id)."""
        return _ByKey(self._next_of, self._ids)

    # the cache's side of the table ------------------------------------------------------------------------------
    def grow(self, capacity: int) -> None:
        if capacity > len(self._inserted):
            self._next_of = grown(self._next_of, capacity, NEVER, False)
            self._inserted = grown(self._inserted, capacity, 0, False)

    def bind(self, mark, gids, gmisses, gvictims) -> None:
        self._mark, self._gids, self._gmisses, self._gvictims = mark, gids, gmisses, gvictims

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

    def _push(self, n: int, nxt: float) -> None:
        self._next_of[n] = nxt
        heappush(self._heap, (-nxt, self._inserted[n], n))
        self._compact()

    def _compact(self) -> None:
        if len(self._heap) > 4 * self._num_resident + 64:  # drop outdated entries now and then
            nxt = self._next_of
            self._heap = [(-nxt[n], t, n) for n, t in enumerate(self._inserted) if t]
            heapify(self._heap)

    def on_insert(self, key: ExpertKey, prefetched: bool) -> None:
        n = self._ids[key]
        self._tick += 1
        self._inserted[n] = self._tick
        self._num_resident += 1
        # a demand insert is requested now: on_access, which comes next, pushes its following request
        self._push(n, self._next_from_now(key) if prefetched else self._now)

    def on_access(self, key: ExpertKey) -> None:
        now = self._now
        if now >= len(self._future) or self._future[now] != key:
            expected = self._future[now] if now < len(self._future) else "the end of the sequence"
            raise ValueError(f"belady: request {now} is {key}, but its future sequence has {expected}")
        self._push(self._ids[key], self._following[now])
        self._now = now + 1

    def on_evict(self, key: ExpertKey) -> None:
        self._inserted[self._ids[key]] = 0
        self._num_resident -= 1

    @cython.locals(count=cython.Py_ssize_t, how=cython.int, found=cython.Py_ssize_t, n=cython.Py_ssize_t)
    def _take(self, count: int, how: int, container, stamp: int) -> list:
        """Up to `count` residents, farthest next request first: ids not stamped `stamp` (how 0), keys outside
        `container` (1) or in it (2). Their entries leave the heap (the cache evicts them at once)."""
        heap, nxt, inserted, keys, mark = self._heap, self._next_of, self._inserted, self._keys, self._mark
        chosen = []
        skipped = []
        found = 0
        while heap:
            entry = heappop(heap)
            n = entry[2]
            if inserted[n] != entry[1] or nxt[n] != -entry[0]:
                continue  # outdated entry
            if how == 0:
                excluded = mark[n] == stamp
            elif how == 1:
                excluded = keys[n] in container
            else:
                excluded = keys[n] not in container
            if excluded:
                skipped.append(entry)
                continue
            chosen.append(entry)
            found += 1
            if found == count:
                break
        for entry in skipped:
            heappush(heap, entry)
        return chosen

    @cython.locals(i=cython.Py_ssize_t, n=cython.Py_ssize_t, now=cython.Py_ssize_t, end=cython.Py_ssize_t)
    def _group(self, ids: list, misses: list, victims: list) -> None:
        inserted = self._inserted
        for n in victims:
            inserted[n] = 0
        tick = self._tick
        for n in misses:  # its next request is in this group
            tick += 1
            inserted[n] = tick
        self._tick = tick
        self._num_resident += len(misses) - len(victims)
        now = self._now
        end = now + len(ids)
        if self._future_ids[now:end] != ids:
            keys = self._keys
            for n in ids:  # the per-request check names the first request that differs
                self.on_access(keys[n])
            return
        heap, nxt, following, priority = self._heap, self._next_of, self._following, self._priority
        for i in range(len(ids)):
            n = ids[i]
            nxt[n] = following[now + i]
            heappush(heap, (priority[now + i], inserted[n], n))
        self._now = end
        self._compact()

    def on_group(self, keys: Sequence[ExpertKey], misses: Sequence[ExpertKey], victims: Sequence[ExpertKey]) -> None:
        ids = self._ids
        self._group([ids[k] for k in keys], [ids[k] for k in misses], [ids[k] for k in victims])

    @cython.locals(num_keys=cython.Py_ssize_t, num_misses=cython.Py_ssize_t, num_victims=cython.Py_ssize_t)
    def on_group_ids(self, num_keys: int, num_misses: int, num_victims: int) -> None:
        self._group(list(self._gids[:num_keys]), list(self._gmisses[:num_misses]), list(self._gvictims[:num_victims]))


class _ByKey:
    """`view[key]` is `values[ids[key]]`: a list by id read by ExpertKey."""

    __slots__ = ("values", "ids")

    def __init__(self, values: list, ids: dict) -> None:
        self.values, self.ids = values, ids

    def __getitem__(self, key: ExpertKey):
        return self.values[self.ids[key]]
