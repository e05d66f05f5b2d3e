"""A typed, int-keyed cache core (LRU, LFU) in Cython's pure-Python mode: the speed a compiled core would buy.

    python benchmarks/simulator.py --policies lru lfu   # its `typed core floor` rows (interpreted, and compiled
                                                        # into a temporary folder when Cython and a C compiler exist)

Not a simulator and not used by one: a measurement of the design that issue 10.6 asks about
(docs/results/simulator.md), on the same stream as the real code. It has the driver's group semantics without
prefetch (a layer's keys are requested at once, its residents are never its misses' victims, counters per layer,
collision misses), and its hits, misses, collision misses and evictions equal `simulate(trace, "lru")`'s and
`simulate(trace, "lfu")`'s (tests/eval/test_simulator_benchmark.py). Its structure is the proposed one, so the rate
includes the costs a real design would pay:
- `Books` (what `runtime.expert_cache.ExpertCache` would become): each ExpertKey gets a dense int id from one dict
  lookup; slots, collision stamps and the group's marks are ints indexed by id (typed memoryviews over
  `array.array` when compiled, plain lists when the same file runs interpreted: `_ints`);
- `LRUOrder` / `LFUOrder` (what `runtime.policies.lru.LRU` / `lfu.LFU` would become): a separate object, an
  intrusive doubly linked list over ids / an indexed binary heap of (uses, tick); the books call it through
  Python-visible methods with int arguments (`victims_ids`, `on_group_ids`), sharing the id arrays bound once, so
  any policy class could plug in without a C-level interface file;
- `Driver` (what `runtime.driver.CacheDriver.run_layer`'s lean path would become): called once per layer from the
  simulator's Python loop, it hands the misses to the simulator's own transport (`eval.simulate.ReplayClock`).
"""

from __future__ import annotations

from array import array

import cython


def _ints(size: int, fill: int):
    """`size` ints equal to `fill`: a C array (array.array, read through typed memoryviews) when compiled, a list when
    interpreted (Python indexes a list faster than an array.array, whose items are boxed on every read)."""
    return array("q", [fill]) * size if cython.compiled else [fill] * size


def _grown(old, size: int, fill: int):
    """New ints of `size` entries: `old`'s, then `fill` (an exported buffer cannot be resized in place)."""
    new = _ints(size, fill)
    for i in range(len(old)):
        new[i] = old[i]
    return new


@cython.cclass
class BoundArrays:
    """What every order reads of the books: their arrays, bound once by `Books` (`bind`, again after a grow), so that
    the calls between them pass ints only."""

    _mark: cython.longlong[:]
    _ids: cython.longlong[:]
    _misses: cython.longlong[:]
    _victims: cython.longlong[:]

    def bind(self, mark, ids, misses, victims) -> None:
        self._mark, self._ids, self._misses, self._victims = mark, ids, misses, victims


@cython.cclass
class LRUOrder(BoundArrays):
    """Ids oldest first in an intrusive doubly linked list (node 0 is the sentinel; ids start at 1)."""

    _prev: cython.longlong[:]
    _next: cython.longlong[:]

    def __init__(self) -> None:
        self._prev = _ints(1, 0)
        self._next = _ints(1, 0)

    def grow(self, capacity: int) -> None:
        self._prev = _grown(self._prev, capacity, 0)
        self._next = _grown(self._next, capacity, 0)

    @cython.cfunc
    @cython.inline
    @cython.boundscheck(False)
    @cython.wraparound(False)
    def _unlink(self, n: cython.longlong) -> cython.void:
        p: cython.longlong = self._prev[n]
        q: cython.longlong = self._next[n]
        self._next[p] = q
        self._prev[q] = p

    @cython.cfunc
    @cython.inline
    @cython.boundscheck(False)
    @cython.wraparound(False)
    def _append(self, n: cython.longlong) -> cython.void:
        last: cython.longlong = self._prev[0]
        self._next[last] = n
        self._prev[n] = last
        self._next[n] = 0
        self._prev[0] = n

    @cython.ccall
    @cython.boundscheck(False)
    @cython.wraparound(False)
    def victims_ids(self, count: cython.Py_ssize_t, stamp: cython.longlong) -> cython.Py_ssize_t:
        """The `count` oldest ids not marked with `stamp` (the group's own keys) into the victims array."""
        mark: cython.longlong[:] = self._mark
        out: cython.longlong[:] = self._victims
        found: cython.Py_ssize_t = 0
        n: cython.longlong = self._next[0]
        while found < count and n != 0:
            if mark[n] != stamp:
                out[found] = n
                found += 1
            n = self._next[n]
        return found

    @cython.ccall
    @cython.boundscheck(False)
    @cython.wraparound(False)
    def on_group_ids(
        self, num_keys: cython.Py_ssize_t, num_misses: cython.Py_ssize_t, num_victims: cython.Py_ssize_t
    ) -> cython.void:
        """Victims leave, misses join, then every key of the group moves to the back in request order."""
        ids: cython.longlong[:] = self._ids
        misses: cython.longlong[:] = self._misses
        victims: cython.longlong[:] = self._victims
        i: cython.Py_ssize_t
        for i in range(num_victims):
            self._unlink(victims[i])
        for i in range(num_misses):
            self._append(misses[i])
        for i in range(num_keys):
            self._unlink(ids[i])
            self._append(ids[i])


@cython.cclass
class LFUOrder(BoundArrays):
    """LFU as runtime.policies.lfu ranks it (fewest uses since insertion, ties to the oldest change: the smallest
    (uses, tick)), in an indexed binary min-heap of ids: a use sifts its id down in place, no lazy entries."""

    _heap: cython.longlong[:]  # heap position -> id
    _pos: cython.longlong[:]  # id -> heap position, -1 when absent
    _uses: cython.longlong[:]
    _tick: cython.longlong[:]
    _stash: cython.longlong[:]  # the group's own ids popped while looking for victims
    _size: cython.Py_ssize_t
    _clock: cython.longlong

    def __init__(self) -> None:
        self._heap, self._pos, self._uses, self._tick, self._stash = (_ints(1, f) for f in (0, -1, 0, 0, 0))
        self._size = self._clock = 0

    def grow(self, capacity: int) -> None:
        self._heap = _grown(self._heap, capacity, 0)
        self._pos = _grown(self._pos, capacity, -1)
        self._uses = _grown(self._uses, capacity, 0)
        self._tick = _grown(self._tick, capacity, 0)
        self._stash = _grown(self._stash, capacity, 0)

    @cython.cfunc
    @cython.inline
    @cython.boundscheck(False)
    @cython.wraparound(False)
    def _less(self, a: cython.longlong, b: cython.longlong) -> cython.bint:
        if self._uses[a] != self._uses[b]:
            return self._uses[a] < self._uses[b]
        return self._tick[a] < self._tick[b]

    @cython.cfunc
    @cython.boundscheck(False)
    @cython.wraparound(False)
    def _place(self, i: cython.Py_ssize_t, n: cython.longlong) -> cython.void:
        self._heap[i] = n
        self._pos[n] = i

    @cython.cfunc
    @cython.boundscheck(False)
    @cython.wraparound(False)
    def _up(self, i: cython.Py_ssize_t) -> cython.void:
        n: cython.longlong = self._heap[i]
        parent: cython.Py_ssize_t
        while i > 0:
            parent = (i - 1) >> 1
            if not self._less(n, self._heap[parent]):
                break
            self._place(i, self._heap[parent])
            i = parent
        self._place(i, n)

    @cython.cfunc
    @cython.boundscheck(False)
    @cython.wraparound(False)
    def _down(self, i: cython.Py_ssize_t) -> cython.void:
        n: cython.longlong = self._heap[i]
        child: cython.Py_ssize_t
        while True:
            child = 2 * i + 1
            if child >= self._size:
                break
            if child + 1 < self._size and self._less(self._heap[child + 1], self._heap[child]):
                child += 1
            if not self._less(self._heap[child], n):
                break
            self._place(i, self._heap[child])
            i = child
        self._place(i, n)

    @cython.cfunc
    def _push(self, n: cython.longlong) -> cython.void:
        self._size += 1
        self._place(self._size - 1, n)
        self._up(self._size - 1)

    @cython.cfunc
    def _pop(self) -> cython.longlong:
        top: cython.longlong = self._heap[0]
        self._size -= 1
        self._pos[top] = -1
        if self._size:
            self._place(0, self._heap[self._size])
            self._down(0)
        return top

    @cython.ccall
    def victims_ids(self, count: cython.Py_ssize_t, stamp: cython.longlong) -> cython.Py_ssize_t:
        """The `count` smallest ids not marked with `stamp`; they leave the heap (the books evict them)."""
        found: cython.Py_ssize_t = 0
        stashed: cython.Py_ssize_t = 0
        n: cython.longlong
        while found < count and self._size:
            n = self._pop()
            if self._mark[n] == stamp:
                self._stash[stashed] = n
                stashed += 1
            else:
                self._victims[found] = n
                found += 1
        for i in range(stashed):
            self._push(self._stash[i])
        return found

    @cython.ccall
    def on_group_ids(
        self, num_keys: cython.Py_ssize_t, num_misses: cython.Py_ssize_t, num_victims: cython.Py_ssize_t
    ) -> cython.void:
        """Misses start at no use; every key of the group gets one use and a new tick, in request order."""
        i: cython.Py_ssize_t
        n: cython.longlong
        for i in range(num_misses):
            self._uses[self._misses[i]] = 0
        for i in range(num_keys):
            n = self._ids[i]
            self._clock += 1
            self._uses[n] += 1
            self._tick[n] = self._clock
            if self._pos[n] < 0:
                self._push(n)
            else:
                self._down(self._pos[n])


@cython.cclass
class Books:
    """Residency by int id, per-layer demand counters and collision misses; a group of one layer at a time."""

    _id: dict  # ExpertKey -> id
    _keys: list  # id -> ExpertKey
    _slot: cython.longlong[:]  # id -> slot, -1 when not resident
    _mark: cython.longlong[:]  # id -> stamp of the last group that requested it
    _evicted_in: cython.longlong[:]  # id -> pass of its last eviction
    _ids: cython.longlong[:]  # the current group's ids, in request order
    _misses: cython.longlong[:]
    _victims: cython.longlong[:]
    _free: list
    _policy: object
    _capacity: cython.Py_ssize_t
    _num_slots: cython.Py_ssize_t
    _stamp: cython.longlong
    _pass: cython.longlong
    _evictions: cython.Py_ssize_t
    _layer_hits: list
    _layer_misses: list
    _layer_collisions: list

    def __init__(self, num_slots: int, policy, num_layers: int) -> None:
        self._id, self._keys = {}, [None]
        self._capacity = 1
        self._slot, self._mark, self._evicted_in = _ints(1, -1), _ints(1, 0), _ints(1, -1)
        self._num_slots = num_slots
        self._ids, self._misses, self._victims = (_ints(num_slots, 0) for _ in range(3))
        self._free = list(range(num_slots - 1, -1, -1))  # pop() hands out slot 0 first, as ExpertCache does
        self._policy = policy
        policy.bind(self._mark, self._ids, self._misses, self._victims)
        self._stamp = self._pass = self._evictions = 0
        self._layer_hits = [0] * num_layers
        self._layer_misses = [0] * num_layers
        self._layer_collisions = [0] * num_layers

    def start_pass(self) -> None:
        self._pass += 1

    def counters(self) -> dict:
        return {
            "hits": sum(self._layer_hits),
            "misses": sum(self._layer_misses),
            "collision_misses": sum(self._layer_collisions),
            "evictions": self._evictions,
        }

    @cython.cfunc
    def _new_id(self, key) -> cython.longlong:
        n: cython.Py_ssize_t = len(self._keys)
        if n >= self._capacity:  # double the arrays; the policy grows and rebinds
            self._capacity *= 2
            self._slot = _grown(self._slot, self._capacity, -1)
            self._mark = _grown(self._mark, self._capacity, 0)
            self._evicted_in = _grown(self._evicted_in, self._capacity, -1)
            self._policy.grow(self._capacity)
            self._policy.bind(self._mark, self._ids, self._misses, self._victims)
        self._id[key] = n
        self._keys.append(key)
        return n

    @cython.ccall
    @cython.boundscheck(False)
    @cython.wraparound(False)
    def request_group(self, keys: tuple) -> list:
        """One layer's distinct keys (at most num_slots): the misses as (key, slot) to copy into, in order."""
        num_keys: cython.Py_ssize_t = len(keys)
        if num_keys > self._num_slots:
            raise ValueError(f"{num_keys} keys in one group, more than the {self._num_slots} slots")
        i: cython.Py_ssize_t
        n: cython.longlong
        num_misses: cython.Py_ssize_t = 0
        collisions: cython.Py_ssize_t = 0
        self._stamp += 1
        stamp: cython.longlong = self._stamp
        ids: cython.longlong[:] = self._ids
        misses: cython.longlong[:] = self._misses
        get = self._id.get
        for i in range(num_keys):
            key = keys[i]
            found = get(key)
            n = self._new_id(key) if found is None else found
            ids[i] = n
            self._mark[n] = stamp
            if self._slot[n] < 0:
                misses[num_misses] = n
                num_misses += 1
                if self._evicted_in[n] == self._pass:
                    collisions += 1
        layer = keys[0][0]
        self._layer_hits[layer] += num_keys - num_misses
        placed: list = []
        num_evict: cython.Py_ssize_t = 0
        if num_misses:
            self._layer_misses[layer] += num_misses
            if collisions:
                self._layer_collisions[layer] += collisions
            free = self._free
            num_evict = num_misses - len(free)
            if num_evict > 0:
                if self._policy.victims_ids(num_evict, stamp) != num_evict:
                    raise RuntimeError("the policy found too few victims")
                slots = free[::-1]
                free.clear()
                for i in range(num_evict):
                    n = self._victims[i]
                    slots.append(self._slot[n])
                    self._slot[n] = -1
                    self._evicted_in[n] = self._pass
                self._evictions += num_evict
            else:
                num_evict = 0
                slots = [free.pop() for _ in range(num_misses)]
            for i in range(num_misses):
                n = misses[i]
                slot: cython.longlong = slots[i]
                self._slot[n] = slot
                placed.append((self._keys[n], slot))
        self._policy.on_group_ids(num_keys, num_misses, num_evict)
        return placed


@cython.cclass
class Driver:
    """The per-layer call of the simulator's loop: request the group, hand the misses to the transport."""

    _books: Books

    def __init__(self, books: Books) -> None:
        self._books = books

    def run_layer(self, layer: int, keys: tuple, transport) -> None:
        misses = self._books.request_group(keys)
        if misses:
            transport.demand(layer, misses)
