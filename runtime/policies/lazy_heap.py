"""The lazy min-heap that LFU (runtime/policies/lfu.py) and score-based (runtime/policies/score.py) eviction share:
the victim is the evictable resident with the smallest (value, tick of its last change).

    class MyEviction(LazyHeapEviction):
        batched = True; batched_ids = True       # declared by each class itself (runtime/expert_cache.py)
        def __init__(self):
            super().__init__(fill=0)             # every id's value starts at `fill`
        def on_insert(self, key, prefetched):
            n = self._ids[key]; self._values[n] = 0; self._push(n)
        def on_access(self, key):
            n = self._ids[key]; self._values[n] += 1; self._touch(n)   # a value that only grows: just a new tick
        def _use_group(self, ids, num_keys, num_misses): ...            # each id's value after one demand use

Everything is kept by the cache's key ids (runtime/key_ids.py) in lists, and the heap holds (value, tick, id) tuples
on `heapq` (C): interpreted, a hand-written heap would be slower (docs/results/simulator.md). The cache asks by id on
its batched path (`victims_ids`, `on_group_ids`, over its arrays bound once); the ExpertKey hooks convert once.

Cost (why the structure looks like this): a change only updates two list entries (`_touch`); the heap is updated
lazily. A subclass lets a resident's value only grow between pushes (a value that drops must be `_push`ed at once),
and ticks only grow, so a resident's newest heap entry is a lower bound of its current (value, tick): `victim` pops
entries until the top one is current (an outdated top is pushed again at its current value, an entry older than the
id's newest is dropped). That is O(log n) per victim and per change that reaches the top.
"""

from __future__ import annotations

import heapq
from collections.abc import Collection, Container, Sequence

import cython

from runtime.key_ids import KeyIds, grown
from specmd_predict.policies import EvictionPolicy
from specmd_predict.routing import ExpertKey


class HeapVictims(EvictionPolicy):
    """The victim calls of a policy whose residents wait in `_heap` as (rank, tick, id) tuples, smallest first (this
    lazy heap; Belady's): all three ask the subclass's `_take(count, how, container, stamp)`, which pops up to `count`
    current entries that are not excluded: ids not stamped `stamp` (how 0), keys outside `container` (1) or in it
    (2)."""

    def victim(self, candidates: Collection[ExpertKey]) -> ExpertKey:
        chosen = self._take(1, 2, candidates, 0)
        if not chosen:
            raise ValueError(f"{self.name}: no candidate is a resident it knows")
        heapq.heappush(self._heap, chosen[0])  # valid until on_evict removes the id
        return self._keys[chosen[0][2]]

    def victims(self, count: int, excluded: Container[ExpertKey]) -> list[ExpertKey]:
        keys = self._keys
        return [keys[entry[2]] for entry in self._take(count, 1, excluded, 0)]

    @cython.locals(count=cython.Py_ssize_t, stamp=cython.longlong, i=cython.Py_ssize_t)
    def victims_ids(self, count: int, stamp: int) -> int:
        chosen = self._take(count, 0, None, stamp)
        out = self._gvictims
        for i in range(len(chosen)):
            out[i] = chosen[i][2]
        return len(chosen)


class LazyHeapEviction(HeapVictims):
    """Base of the value-ranked evictions; subclasses keep `_values` (by id) and call `_push` / `_touch` (module doc).
    It is its own `id_order`."""

    typed = False  # the lists below are Python lists (the cache's bound arrays may be C arrays)

    def __init__(self, fill: float | int = 0) -> None:
        self.key_ids = KeyIds()  # the cache adopts this table: the ids `id_order` is asked about
        self._ids, self._keys = self.key_ids.ids, self.key_ids.keys
        self.id_order = self
        self._fill = fill
        self._values: list = [fill]  # id -> current value (the subclass's: uses, score, ...)
        self._version: list[int] = [0]  # id -> tick of the last change of its value; 0: not resident
        self._pushed: list[int] = [0]  # id -> tick of its newest heap entry
        self._num_resident = 0
        self._heap: list[tuple] = []  # (value, tick, id), lazy
        self._tick = 0
        self._mark = self._gids = self._gmisses = self._gvictims = None

    # the cache's side of the table ------------------------------------------------------------------------------
    def grow(self, capacity: int) -> None:
        if capacity > len(self._version):
            self._values = grown(self._values, capacity, self._fill, False)
            self._version = grown(self._version, capacity, 0, False)
            self._pushed = grown(self._pushed, capacity, 0, False)

    def bind(self, mark, gids, gmisses, gvictims) -> None:
        self._mark, self._gids, self._gmisses, self._gvictims = mark, gids, gmisses, gvictims

    # one id -----------------------------------------------------------------------------------------------------
    @cython.locals(n=cython.Py_ssize_t, tick=cython.longlong)
    def _push(self, n: int) -> None:
        """Put `n` in the heap at its current value now (an insertion, or a value that dropped)."""
        if not self._version[n]:
            self._num_resident += 1
        self._tick += 1
        tick = self._tick
        self._version[n] = self._pushed[n] = tick
        heapq.heappush(self._heap, (self._values[n], tick, n))
        self._compact()

    @cython.locals(n=cython.Py_ssize_t)
    def _touch(self, n: int) -> None:
        """`n`'s value grew: a new tick, its heap entry is fixed when it reaches the top."""
        self._tick += 1
        self._version[n] = self._tick

    def _compact(self) -> None:
        if len(self._heap) > 4 * self._num_resident + 64:  # drop outdated entries now and then
            values, version = self._values, self._version
            self._heap = [(values[n], t, n) for n, t in enumerate(version) if t]
            heapq.heapify(self._heap)
            self._pushed[:] = version

    @cython.locals(n=cython.Py_ssize_t)
    def _drop(self, n: int) -> None:
        """`n` left the cache."""
        self._version[n] = self._pushed[n] = 0
        self._num_resident -= 1

    def on_evict(self, key: ExpertKey) -> None:
        self._drop(self._ids[key])

    # victims ----------------------------------------------------------------------------------------------------
    @cython.locals(count=cython.Py_ssize_t, how=cython.int, found=cython.Py_ssize_t, n=cython.Py_ssize_t)
    def _take(self, count: int, how: int, container, stamp: int) -> list:
        """Up to `count` of the smallest residents: ids not stamped `stamp` (how 0), keys outside `container` (1) or
        in it (2). Their entries leave the heap (the cache evicts them at once; victim() puts its one back)."""
        heap, values, version, pushed, keys, mark = (
            self._heap,
            self._values,
            self._version,
            self._pushed,
            self._keys,
            self._mark,
        )
        heappop = heapq.heappop
        chosen = []
        skipped = []
        found = 0
        while heap:
            entry = heap[0]
            n = entry[2]
            tick = entry[1]
            if pushed[n] != tick:
                heappop(heap)  # an older entry of a resident, or of an evicted id
                continue
            now_tick = version[n]
            if now_tick != tick:
                pushed[n] = now_tick
                heapq.heapreplace(heap, (values[n], now_tick, n))  # outdated: back in at its current place
                continue
            entry = heappop(heap)
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
            heapq.heappush(heap, entry)
        return chosen

    # a group ----------------------------------------------------------------------------------------------------
    def _use_group(self, ids: list, misses: list) -> None:
        """Each of `ids`' values after one demand use (`misses`: the ones inserted now)."""
        raise NotImplementedError

    @cython.locals(i=cython.Py_ssize_t, tick=cython.longlong, n=cython.Py_ssize_t)
    def _group(self, ids: list, misses: list, victims: list) -> None:
        version, pushed = self._version, self._pushed
        for n in victims:
            version[n] = pushed[n] = 0
        self._num_resident += len(misses) - len(victims)
        self._use_group(ids, misses)
        tick = self._tick
        for n in ids:
            tick += 1
            version[n] = tick
        self._tick = tick
        values, heap = self._values, self._heap
        heappush = heapq.heappush
        for n in misses:  # pushed at their value after this group's use: exact, never re-pushed for it
            tick = pushed[n] = version[n]
            heappush(heap, (values[n], tick, n))
        self._compact()

    def on_group(self, keys: Sequence[ExpertKey], misses: Sequence[ExpertKey], victims: Sequence[ExpertKey]) -> None:
        ids = self._ids
        self._group([ids[k] for k in keys], [ids[k] for k in misses], [ids[k] for k in victims])

    @cython.locals(num_keys=cython.Py_ssize_t, num_misses=cython.Py_ssize_t, num_victims=cython.Py_ssize_t)
    def on_group_ids(self, num_keys: int, num_misses: int, num_victims: int) -> None:
        self._group(list(self._gids[:num_keys]), list(self._gmisses[:num_misses]), list(self._gvictims[:num_victims]))
