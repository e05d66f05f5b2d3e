"""FIFO eviction: the evictable resident inserted first goes first; hits do not reorder.

    make_eviction("fifo")

The order is `IdList`, an intrusive doubly linked list over the cache's key ids (runtime/key_ids.py), oldest first;
LRU (runtime/policies/lru.py) is the same list with uses moving an id to the back. The cache's batched demand path
asks it by id (`victims_ids`, `on_group_ids`: ints only, over arrays bound once, compiled with the cache by
`pip install -e .`, runtime/compiled.py); the ExpertKey hooks convert a key to its id once.
"""

from __future__ import annotations

from collections.abc import Collection, Container, Iterator, Sequence

import cython

from runtime.key_ids import KeyIds, grown, int_array
from specmd_predict.policies import EvictionPolicy
from specmd_predict.routing import ExpertKey


@cython.cclass
class IdList:
    """Ids oldest first in an intrusive doubly linked list (node 0 is the sentinel: ids start at 1), with the ExpertKey
    view the per-request hooks use (`__iter__`, `move_to_end`) and the id-level batched interface the cache calls."""

    typed = cython.declare(cython.bint, visibility="readonly")  # its arrays are C arrays (the module is compiled)
    move_on_use = cython.declare(cython.bint, visibility="readonly")  # LRU: a group's keys move to the back
    _ids = cython.declare(dict)  # ExpertKey -> id (the cache's table)
    _keys = cython.declare(list)  # id -> ExpertKey
    _prev = cython.declare(cython.longlong[:])
    _next = cython.declare(cython.longlong[:])
    _size = cython.declare(cython.Py_ssize_t)
    # the cache's arrays, bound once (`bind`): group stamps by id, the group's ids, its misses, its victims (out)
    _mark = cython.declare(cython.longlong[:])
    _gids = cython.declare(cython.longlong[:])
    _gmisses = cython.declare(cython.longlong[:])
    _gvictims = cython.declare(cython.longlong[:])

    def __init__(self, table: KeyIds, move_on_use: bool) -> None:
        self.typed = cython.compiled
        self.move_on_use = move_on_use
        self._ids, self._keys = table.ids, table.keys
        self._prev = int_array(1, 0, self.typed)
        self._next = int_array(1, 0, self.typed)
        self._size = 0

    def grow(self, capacity: int) -> None:
        if capacity > len(self._prev):
            self._prev = grown(self._prev, capacity, 0, self.typed)
            self._next = grown(self._next, capacity, 0, self.typed)

    def bind(self, mark, gids, gmisses, gvictims) -> None:
        self._mark, self._gids, self._gmisses, self._gvictims = mark, gids, gmisses, gvictims

    # one id ---------------------------------------------------------------------------------------------------
    @cython.cfunc
    @cython.inline
    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.locals(n=cython.longlong, p=cython.longlong, q=cython.longlong)
    @cython.returns(cython.void)
    def _unlink(self, n: int) -> None:
        p = self._prev[n]
        q = self._next[n]
        self._next[p] = q
        self._prev[q] = p

    @cython.cfunc
    @cython.inline
    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.locals(n=cython.longlong, last=cython.longlong)
    @cython.returns(cython.void)
    def _append(self, n: int) -> None:
        last = self._prev[0]
        self._next[last] = n
        self._prev[n] = last
        self._next[n] = 0
        self._prev[0] = n

    # ExpertKey hooks (the per-request path): one id lookup each ----------------------------------------------
    def push(self, key: ExpertKey) -> None:
        """`key` (a resident with an id) joins at the back."""
        self._append(self._ids[key])
        self._size += 1

    def remove(self, key: ExpertKey) -> None:
        self._unlink(self._ids[key])
        self._size -= 1

    @cython.locals(n=cython.longlong)
    def move_to_end(self, key: ExpertKey) -> None:
        """`key` moves to the back (a use, under LRU)."""
        n = self._ids[key]
        self._unlink(n)
        self._append(n)

    @cython.locals(n=cython.longlong)
    def first_in(self, candidates: Collection[ExpertKey]):
        """The oldest key in `candidates`, or None."""
        keys = self._keys
        n = self._next[0]
        while n != 0:
            key = keys[n]
            if key in candidates:
                return key
            n = self._next[n]
        return None

    @cython.locals(n=cython.longlong, count=cython.Py_ssize_t)
    def first_outside(self, count: int, excluded: Container[ExpertKey]) -> list[ExpertKey]:
        """The `count` oldest keys not in `excluded`."""
        keys = self._keys
        chosen = []
        n = self._next[0]
        while n != 0 and len(chosen) < count:
            key = keys[n]
            if key not in excluded:
                chosen.append(key)
            n = self._next[n]
        return chosen

    def __iter__(self) -> Iterator[ExpertKey]:
        return iter(self.keys())

    @cython.locals(n=cython.longlong)
    def keys(self) -> list[ExpertKey]:
        """Every key, oldest first."""
        out = []
        n = self._next[0]
        while n != 0:
            out.append(self._keys[n])
            n = self._next[n]
        return out

    def __len__(self) -> int:
        return self._size

    # the id-level batched interface (the cache's request_group) -------------------------------------------------
    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.locals(count=cython.Py_ssize_t, stamp=cython.longlong, found=cython.Py_ssize_t, n=cython.longlong)
    def victims_ids(self, count: int, stamp: int) -> int:
        """The `count` oldest ids not stamped `stamp` (the group's own) into the bound victims array; how many."""
        found = 0
        n = self._next[0]
        while found < count and n != 0:
            if self._mark[n] != stamp:
                self._gvictims[found] = n
                found += 1
            n = self._next[n]
        return found

    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.locals(
        num_keys=cython.Py_ssize_t,
        num_misses=cython.Py_ssize_t,
        num_victims=cython.Py_ssize_t,
        i=cython.Py_ssize_t,
        n=cython.longlong,
        p=cython.longlong,
        q=cython.longlong,
        j=cython.Py_ssize_t,
    )
    def on_group_ids(self, num_keys: int, num_misses: int, num_victims: int) -> None:
        """Victims leave; FIFO: misses join at the back; LRU: the group's hits leave their places and every key of
        the group joins at the back in request order (as one by one). The list operations are written out: an
        interpreted call per id would cost more than the work."""
        # the arrays through `self`, not locals: compiled, a local memoryview costs two atomic updates of its
        # acquisition count, more than this loop's work on a decode group
        for i in range(num_victims):
            n = self._gvictims[i]
            p, q = self._prev[n], self._next[n]
            self._next[p] = q
            self._prev[q] = p
        self._size += num_misses - num_victims
        if self.move_on_use:
            j = 0  # the next miss (misses are a subsequence of the group, and not linked)
            for i in range(num_keys):
                n = self._gids[i]
                if j < num_misses and self._gmisses[j] == n:
                    j += 1
                    continue
                p, q = self._prev[n], self._next[n]
                self._next[p] = q
                self._prev[q] = p
            p = self._prev[0]  # the tail once the hits left
            for i in range(num_keys):  # the whole group joins at the back, in request order
                n = self._gids[i]
                self._next[p] = n
                self._prev[n] = p
                p = n
        else:
            p = self._prev[0]  # the tail
            for i in range(num_misses):  # the misses join at the back
                n = self._gmisses[i]
                self._next[p] = n
                self._prev[n] = p
                p = n
        self._next[p] = 0
        self._prev[0] = p


class FIFO(EvictionPolicy):
    name = "fifo"
    batched = True  # a group's own keys only move themselves in the order
    batched_ids = True  # and the cache may ask `id_order` by id (runtime/expert_cache.py)
    move_on_use = False

    def __init__(self) -> None:
        self.key_ids = KeyIds()  # the cache adopts this table: the ids `id_order` is asked about
        self._order = self.id_order = IdList(self.key_ids, self.move_on_use)

    def on_insert(self, key: ExpertKey, prefetched: bool) -> None:
        self._order.push(key)

    def on_evict(self, key: ExpertKey) -> None:
        self._order.remove(key)

    def victim(self, candidates: Collection[ExpertKey]) -> ExpertKey:
        key = self._order.first_in(candidates)
        if key is None:
            raise ValueError(f"{self.name.upper()}: no candidate is a resident it knows")
        return key

    def victims(self, count: int, excluded: Container[ExpertKey]) -> list[ExpertKey]:
        # the first `count` of the order outside `excluded`: what `count` victim() calls would take one by one
        return self._order.first_outside(count, excluded)

    def on_group(self, keys: Sequence[ExpertKey], misses: Sequence[ExpertKey], victims: Sequence[ExpertKey]) -> None:
        order = self._order
        for key in victims:
            order.remove(key)
        for key in misses:
            order.push(key)
        if self.move_on_use:
            for key in keys:  # hits and misses interleaved by id, as they were requested
                order.move_to_end(key)
