"""The one indexed binary heap of the heap-ranked evictions, LFU (runtime/policies/lfu.py), score-based
(runtime/policies/score.py) and Belady (runtime/policies/belady.py), and their shared policy base `HeapEviction`: the
victim is the evictable resident with the smallest (rank, tie).

    class MyEviction(HeapEviction):
        batched = True; batched_ids = True         # declared by each class itself (runtime/expert_cache.py)
        def __init__(self):
            super().__init__(add=1.0, reset=True)  # a group's use adds `add` to each id's rank (misses start at 0)
        def on_insert(self, key, prefetched):
            n = self._ids[key]; self._heap.rerank(n, 0.0); self._heap.insert(n)   # joins with tie = a new tick
        def on_access(self, key):
            self._heap.add(self._ids[key], 1.0)      # the rank grows, a resident's tie is a new tick

`IdHeap` is the order itself, over the cache's key ids (runtime/key_ids.py): per id its rank (a C double) and tie
(an int tick), a heap array of ids and each id's position in it, so a change of rank is a sift up or down in place
and an eviction takes its id out; no entry is ever outdated (the typed core floor's LFU, docs/results/simulator.md).
Compiled with the cache by `pip install -e .` (runtime/compiled.py) its arrays are C arrays, and the cache asks it by
id on the batched path (`victims_ids`, `on_group_ids`, over arrays bound once); the ExpertKey hooks convert a key to
its id once. Interpreted, the same source runs over lists: its sifts are Python loops, slower than the C sifts of the
`heapq` it replaced (docs/results/simulator.md measures both).

A group's rule is one of two: `add` (LFU, score): each id of the group adds `add` to its rank and takes a new tick,
its misses first restart at 0 (`reset`, LFU) or gain the sums waiting for keys the cache had not numbered yet
(`pending`, score); `set_future` (Belady; it numbers the future's keys itself, in one typed loop): the misses take a
new tick (insertion order), then each id's rank becomes minus its next request, read from the future at the clock
`now`. Score also hears each layer's routing by id (`on_routed_ids`, called by the cache inside the group:
runtime/expert_cache.py `hear_routing`), the same additions as a dict of probability-1 predictions.

Why growth waits: a rank that grows with a newer tie (every use under LFU and score) cannot move an id before any
other, so the heap keeps the (rank, tie) the id was sifted at (`_hrank`, `_htie`) and sifts it down only if it
reaches the top with a newer tie (`_top`). Each id keeps one place in the heap and its sifted key is a lower bound of
its current one, so the top, once current, is the exact minimum. Anything else (a lower rank, a new rank with the
same tie) is sifted at once. Ticks are unique, so the order is total: victims do not depend on the heap's shape.
"""

from __future__ import annotations

from array import array
from collections.abc import Collection, Container, Mapping, Sequence

import cython

from runtime.key_ids import KeyIds, float_array, grown, int_array
from specmd_predict.policies import EvictionPolicy
from specmd_predict.routing import ExpertKey

# which ids a take passes over: those stamped with the group's stamp, those with keys in a container, or outside it
SKIP_STAMPED = cython.declare(cython.int, 0)
SKIP_INSIDE = cython.declare(cython.int, 1)
SKIP_OUTSIDE = cython.declare(cython.int, 2)


@cython.final  # its C methods are called directly (no subclass overrides them)
@cython.cclass
class IdHeap:
    """Ids in a binary min-heap by (rank, tie) with their positions (module doc); `now` is the future's clock
    (`set_future`)."""

    typed = cython.declare(cython.bint, visibility="readonly")  # its arrays are C arrays (the module is compiled)
    now = cython.declare(cython.Py_ssize_t, visibility="public")  # the index of the next request (set_future)
    _name = cython.declare(str)  # the policy's, for the errors
    _table = cython.declare(object)  # the KeyIds it ranks (set_future numbers the future's keys in it)
    _future_rule = cython.declare(cython.bint)
    _add = cython.declare(cython.double)
    _reset = cython.declare(cython.bint)
    _pending = cython.declare(object)  # ExpertKey -> a sum for its rank at its first insert (score), or None
    _ids = cython.declare(dict)  # ExpertKey -> id (the cache's table)
    _keys = cython.declare(list)  # id -> ExpertKey
    _rank = cython.declare(cython.double[::1])  # id -> its rank now
    _tie = cython.declare(cython.longlong[::1])  # id -> its tie now (a tick)
    _hrank = cython.declare(cython.double[::1])  # id -> the rank it was sifted at (<= _rank while it waits)
    _htie = cython.declare(cython.longlong[::1])  # id -> the tie it was sifted at
    _pos = cython.declare(cython.longlong[::1])  # id -> its index in `_heap` plus one; 0: not in the heap
    _heap = cython.declare(cython.longlong[::1])  # the heap's ids, smallest (rank, tie) first
    _chosen = cython.declare(cython.longlong[::1])  # a take's ids (scratch)
    _skipped = cython.declare(cython.longlong[::1])  # the ids a take passed over (scratch)
    _size = cython.declare(cython.Py_ssize_t)
    _tick = cython.declare(cython.longlong)
    _future = cython.declare(cython.longlong[::1])  # request index -> id (set_future)
    future_ids = cython.declare(object, visibility="readonly")  # the same, as the array (or list) object
    _following = cython.declare(cython.double[::1])  # request index -> the index of the same id's next request
    _num_future = cython.declare(cython.Py_ssize_t)
    # the cache's arrays, bound once (`bind`): group stamps by id, the group's ids, its misses, its victims (out)
    _mark = cython.declare(cython.longlong[:])
    _gids = cython.declare(cython.longlong[:])
    _gmisses = cython.declare(cython.longlong[:])
    _gvictims = cython.declare(cython.longlong[:])

    def __init__(self, table: KeyIds, name: str, add: float = 0.0, reset: bool = False, pending=None) -> None:
        self.typed = cython.compiled
        self._name = name
        self._future_rule = False
        self._add, self._reset, self._pending = add, reset, pending
        self._table, self._ids, self._keys = table, table.ids, table.keys
        self.future_ids = None
        self._size = 0
        self._tick = 0
        self.now = 0
        self._num_future = 0
        self._rank = float_array(0, 0.0, self.typed)
        self._hrank = float_array(0, 0.0, self.typed)
        self._tie = int_array(0, 0, self.typed)
        self._htie = int_array(0, 0, self.typed)
        self._pos = int_array(0, 0, self.typed)
        self._heap = int_array(0, 0, self.typed)
        self._chosen = int_array(0, 0, self.typed)
        self._skipped = int_array(0, 0, self.typed)
        self.grow(max(1, len(table)))

    # the cache's side -------------------------------------------------------------------------------------------
    def grow(self, capacity: int) -> None:
        """Room for ids below `capacity` (the cache's arrays' length)."""
        typed = self.typed
        if capacity > len(self._pos):
            self._rank = grown(self._rank, capacity, 0.0, typed, "d")
            self._hrank = grown(self._hrank, capacity, 0.0, typed, "d")
            self._tie = grown(self._tie, capacity, 0, typed)
            self._htie = grown(self._htie, capacity, 0, typed)
            self._pos = grown(self._pos, capacity, 0, typed)
            self._heap = grown(self._heap, capacity, 0, typed)
            self._chosen = grown(self._chosen, capacity, 0, typed)
            self._skipped = grown(self._skipped, capacity, 0, typed)

    def bind(self, mark, gids, gmisses, gvictims) -> None:
        self._mark, self._gids, self._gmisses, self._gvictims = mark, gids, gmisses, gvictims

    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.locals(i=cython.Py_ssize_t, n=cython.longlong, size=cython.Py_ssize_t, never=cython.double, ids=dict)
    @cython.locals(future=cython.longlong[::1], following=cython.double[::1], upcoming=cython.double[::1])
    def set_future(self, future_keys: Sequence[ExpertKey]) -> None:
        """The group rule becomes Belady's: request i is `future_keys[i]`, numbered here in this heap's table (a key
        it has not numbered gets its id now; compiled, one typed loop, no list of ids in between); each request's
        following one of the same id is found by one backward scan (inf: never again)."""
        size = len(future_keys)
        never = float("inf")
        self._future_rule = True
        ids, number = self._ids, self._table.number
        self.future_ids = future = int_array(size, 0, self.typed)
        i = 0
        for key in future_keys:
            found = ids.get(key)
            future[i] = number(key) if found is None else found
            i += 1
        self.grow(len(self._keys))
        self._future = future
        self._following = following = float_array(size, never, self.typed)
        upcoming = float_array(len(self._pos), never, self.typed)  # id -> its next request after i
        for i in range(size - 1, -1, -1):
            n = future[i]
            following[i] = upcoming[n]
            upcoming[n] = i
        self._num_future = size

    @cython.locals(i=cython.Py_ssize_t)
    def following(self, i: int) -> float:
        """The index of request i's id's next request (inf: never again)."""
        return self._following[i]

    # sifting ----------------------------------------------------------------------------------------------------
    # the sifts read the arrays through `self` (compiled: direct C reads; a local copy of a typed memoryview would
    # count references on every call)
    @cython.cfunc
    @cython.inline
    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.locals(i=cython.Py_ssize_t, top=cython.Py_ssize_t, parent=cython.Py_ssize_t, n=cython.longlong)
    @cython.locals(p=cython.longlong, r=cython.double, t=cython.longlong)
    @cython.returns(cython.void)
    def _up(self, i: int, top: int) -> None:
        """The id at index `i` moves up past every parent after it, up to index `top`."""
        n = self._heap[i]
        r, t = self._hrank[n], self._htie[n]
        while i > top:
            parent = (i - 1) >> 1
            p = self._heap[parent]
            if self._hrank[p] < r or (self._hrank[p] == r and self._htie[p] < t):
                break
            self._heap[i] = p
            self._pos[p] = i + 1
            i = parent
        self._heap[i] = n
        self._pos[n] = i + 1

    @cython.cfunc
    @cython.inline
    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.locals(i=cython.Py_ssize_t, start=cython.Py_ssize_t, c=cython.Py_ssize_t, size=cython.Py_ssize_t)
    @cython.locals(n=cython.longlong, a=cython.longlong, b=cython.longlong, ra=cython.double, rb=cython.double)
    @cython.returns(cython.void)
    def _down(self, i: int) -> None:
        """The id at index `i` moves down: the smaller child moves up into the hole down to a leaf, then the id moves up
        from there as far as it belongs (heapq's way: one comparison per level; an id moving down mostly goes deep)."""
        size = self._size
        start = i
        n = self._heap[i]
        c = 2 * i + 1
        while c < size:
            a = self._heap[c]
            if c + 1 < size:
                b = self._heap[c + 1]
                ra, rb = self._hrank[a], self._hrank[b]
                if rb < ra or (rb == ra and self._htie[b] < self._htie[a]):
                    c += 1
                    a = b
            self._heap[i] = a
            self._pos[a] = i + 1
            i = c
            c = 2 * i + 1
        self._heap[i] = n
        self._up(i, start)

    @cython.cfunc
    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.locals(n=cython.longlong, i=cython.Py_ssize_t, p=cython.longlong, r=cython.double, t=cython.longlong)
    @cython.locals(lower=cython.bint)
    @cython.returns(cython.void)
    def _place(self, n: int) -> None:
        """`n` at its current (rank, tie): sifted where it is, or added. A key lower than the one it was sifted at
        can only move up (Belady's hits, every one): its parent is the one comparison; any other goes down."""
        r, t = self._rank[n], self._tie[n]
        i = self._pos[n] - 1
        if i < 0:
            self._hrank[n] = r
            self._htie[n] = t
            i = self._size
            self._size += 1
            self._heap[i] = n
            self._up(i, 0)
            return
        lower = r < self._hrank[n] or (r == self._hrank[n] and t < self._htie[n])
        self._hrank[n] = r
        self._htie[n] = t
        if i > 0:
            p = self._heap[(i - 1) >> 1]
            if r < self._hrank[p] or (r == self._hrank[p] and t < self._htie[p]):
                self._up(i, 0)
                return
        if not lower:
            self._down(i)

    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.cfunc
    @cython.locals(n=cython.longlong)
    @cython.returns(cython.void)
    def _changed(self, n: int) -> None:
        """`n`'s rank or tie changed (it is in the heap): sifted now, unless it grew with a newer tie (it waits)."""
        if self._tie[n] == self._htie[n] or (
            self._rank[n] < self._hrank[n] or (self._rank[n] == self._hrank[n] and self._tie[n] < self._htie[n])
        ):
            self._place(n)

    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.cfunc
    @cython.locals(n=cython.longlong, i=cython.Py_ssize_t, last=cython.longlong)
    @cython.returns(cython.void)
    def _remove(self, n: int) -> None:
        i = self._pos[n] - 1
        if i < 0:
            return
        self._pos[n] = 0
        self._size -= 1
        if i == self._size:
            return
        self._heap[i] = self._heap[self._size]
        self._pos[self._heap[i]] = i + 1
        self._place(self._heap[i])  # the last id, in the hole: up or down from there

    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.cfunc
    @cython.locals(n=cython.longlong)
    @cython.returns(cython.longlong)
    def _top(self) -> int:
        """The smallest id (0 if empty), after sifting down the ones that reach the top with a newer tie."""
        while self._size:
            n = self._heap[0]
            if self._tie[n] == self._htie[n]:
                return n
            self._hrank[n] = self._rank[n]
            self._htie[n] = self._tie[n]
            self._down(0)
        return 0

    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.locals(
        count=cython.Py_ssize_t,
        how=cython.int,
        stamp=cython.longlong,
        found=cython.Py_ssize_t,
        skipped=cython.Py_ssize_t,
        i=cython.Py_ssize_t,
        n=cython.longlong,
        excluded=cython.bint,
    )
    @cython.cfunc
    @cython.returns(cython.Py_ssize_t)
    def _take(self, count: int, how: int, container, stamp: int) -> int:
        """Up to `count` smallest ids out of the heap into `_chosen`, passing over (and keeping) ids stamped `stamp`
        (how SKIP_STAMPED), keys in `container` (SKIP_INSIDE) or outside it (SKIP_OUTSIDE); how many."""
        found = skipped = 0
        while found < count and self._size:
            n = self._top()
            self._pos[n] = 0  # out of the heap: the last id fills the root and moves down
            self._size -= 1
            if self._size:
                self._heap[0] = self._heap[self._size]
                self._down(0)
            if how == SKIP_STAMPED:
                excluded = self._mark[n] == stamp
            elif how == SKIP_INSIDE:
                excluded = self._keys[n] in container
            else:
                excluded = self._keys[n] not in container
            if excluded:
                self._skipped[skipped] = n
                skipped += 1
            else:
                self._chosen[found] = n
                found += 1
        for i in range(skipped):
            self._place(self._skipped[i])
        return found

    # one id (the ExpertKey hooks' path) ---------------------------------------------------------------------------
    @cython.cfunc
    @cython.inline
    @cython.locals(n=cython.longlong)
    @cython.returns(cython.void)
    def _room(self, n: int) -> None:
        """Arrays long enough for id `n` (a policy used without a cache, or ids numbered after its arrays)."""
        if n >= len(self._pos):
            self.grow(2 * n + 2)

    @cython.locals(n=cython.longlong)
    def insert(self, n: int) -> None:
        """`n` joins at its current rank with a new tick as its tie."""
        self._room(n)
        self._tick += 1
        self._tie[n] = self._tick
        self._place(n)

    @cython.locals(n=cython.longlong, delta=cython.double)
    def add(self, n: int, delta: float) -> None:
        """`n`'s rank grows by `delta` (or drops, if negative); in the heap, its tie becomes a new tick."""
        self._room(n)
        self._rank[n] += delta
        if self._pos[n]:
            self._tick += 1
            self._tie[n] = self._tick
            self._changed(n)

    @cython.locals(n=cython.longlong, rank=cython.double)
    def rerank(self, n: int, rank: float) -> None:
        """`n`'s rank becomes `rank`, its tie unchanged."""
        self._room(n)
        self._rank[n] = rank
        if self._pos[n]:
            self._changed(n)

    @cython.locals(n=cython.longlong)
    def advance(self, n: int) -> None:
        """Request `now` (of id `n`) is made: `n`'s rank becomes minus its next request, the clock moves on."""
        self.rerank(n, -self._following[self.now])
        self.now += 1

    @cython.locals(p=cython.double, n=cython.longlong)
    def add_all(self, amounts: Mapping, pending: dict) -> None:
        """`add` for every (ExpertKey, amount) of `amounts`; a key without an id gets it into `pending` (a sum)."""
        ids = self._ids
        for key, amount in amounts.items():
            p = float(amount)
            found = ids.get(key)
            if found is None:
                pending[key] = pending.get(key, 0.0) + p
                continue
            n = found
            self._room(n)
            self._rank[n] += p
            if self._pos[n]:
                self._tick += 1
                self._tie[n] = self._tick
                self._changed(n)

    @cython.locals(n=cython.longlong)
    def rank_of(self, n: int) -> float:
        return self._rank[n] if n < len(self._rank) else 0.0

    @cython.locals(n=cython.longlong)
    def tie_of(self, n: int) -> int:
        return self._tie[n] if n < len(self._tie) else 0

    @cython.locals(n=cython.longlong)
    def remove(self, n: int) -> None:
        """`n` leaves the heap (no-op if it is not in it)."""
        if n < len(self._pos):
            self._remove(n)

    @cython.locals(n=cython.longlong)
    def __contains__(self, n: int) -> bool:
        return 0 <= n < len(self._pos) and self._pos[n] != 0

    def __len__(self) -> int:
        return self._size

    @cython.locals(count=cython.Py_ssize_t, how=cython.int, found=cython.Py_ssize_t, i=cython.Py_ssize_t)
    def take(self, count: int, how: int, container: Container, keep: bool) -> list[int]:
        """The `count` smallest ids whose keys are in `container` (how 1) or outside it (how 2), smallest first; they
        leave the heap unless `keep` (the cache evicts them at once; victim() keeps its one until on_evict)."""
        found = self._take(count, SKIP_OUTSIDE if how == 1 else SKIP_INSIDE, container, 0)
        chosen = [self._chosen[i] for i in range(found)]
        if keep:
            for i in range(found):
                self._place(self._chosen[i])
        return chosen

    # the id-level batched interface (the cache's request_group) -------------------------------------------------
    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.locals(count=cython.Py_ssize_t, stamp=cython.longlong, found=cython.Py_ssize_t, i=cython.Py_ssize_t)
    def victims_ids(self, count: int, stamp: int) -> int:
        """The `count` smallest ids not stamped `stamp` (the group's own) into the bound victims array, out of the
        heap; how many."""
        found = self._take(count, SKIP_STAMPED, None, stamp)
        for i in range(found):
            self._gvictims[i] = self._chosen[i]
        return found

    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.locals(num_keys=cython.Py_ssize_t, i=cython.Py_ssize_t, n=cython.longlong)
    def on_routed_ids(self, num_keys: int) -> None:
        """The group's ids (the bound array, numbered by the cache) are the layer's routing, heard as probability-1
        predictions: `add_all(dict.fromkeys(group, 1.0))` by id. A key the cache numbered just now adds its 1 to its
        rank here instead of to `_pending` (its first insert adds the rest: the same sum, 1 + p = p + 1 exactly)."""
        for i in range(num_keys):
            n = self._gids[i]
            self._rank[n] += 1.0
            if self._pos[n]:
                self._tick += 1
                self._tie[n] = self._tick
                self._changed(n)

    def on_group_ids(self, num_keys: int, num_misses: int, num_victims: int) -> None:
        """A group's use, read from the bound arrays (module doc: the group rules)."""
        self._group(self._gids, num_keys, self._gmisses, num_misses, self._gvictims, num_victims)

    def group(self, ids: Sequence[int], misses: Sequence[int], victims: Sequence[int]) -> None:
        """The same from sequences of ids (the ExpertKey batched path)."""
        if self.typed:
            self._group(array("q", ids), len(ids), array("q", misses), len(misses), array("q", victims), len(victims))
        else:
            self._group(list(ids), len(ids), list(misses), len(misses), list(victims), len(victims))

    @cython.cfunc
    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.locals(
        num_keys=cython.Py_ssize_t,
        num_misses=cython.Py_ssize_t,
        num_victims=cython.Py_ssize_t,
        gids=cython.longlong[:],
        gmisses=cython.longlong[:],
        gvictims=cython.longlong[:],
        i=cython.Py_ssize_t,
        n=cython.longlong,
        tick=cython.longlong,
        now=cython.Py_ssize_t,
        add=cython.double,
        rank=cython.double[:],
        tie=cython.longlong[:],
        pos=cython.longlong[:],
        future=cython.longlong[:],
        following=cython.double[:],
    )
    @cython.returns(cython.void)
    def _group(self, gids, num_keys, gmisses, num_misses, gvictims, num_victims) -> None:
        """Victims leave, then the group rule (module doc). The loops are written out: an interpreted call per id
        would cost more than the work."""
        rank, tie, pos = self._rank, self._tie, self._pos
        for i in range(num_victims):
            if pos[gvictims[i]]:  # victims_ids took its victims out already
                self._remove(gvictims[i])
        tick = self._tick
        if self._future_rule:
            now = self.now
            future, following = self._future, self._following
            if now + num_keys > self._num_future:
                self._future_mismatch(gids, num_keys)
            for i in range(num_keys):
                if future[now + i] != gids[i]:
                    self._future_mismatch(gids, num_keys)
            for i in range(num_misses):  # inserted in request order
                tick += 1
                tie[gmisses[i]] = tick
            self._tick = tick
            for i in range(num_keys):
                n = gids[i]
                rank[n] = -following[now + i]
                self._place(n)  # the same tie: sifted now
            self.now = now + num_keys
            return
        if self._reset:
            for i in range(num_misses):
                rank[gmisses[i]] = 0.0
        elif self._pending:
            for i in range(num_misses):
                n = gmisses[i]
                rank[n] += self._pending.pop(self._keys[n], 0.0)
        add = self._add
        for i in range(num_keys):
            n = gids[i]
            rank[n] += add
            tick += 1
            tie[n] = tick
            if pos[n] == 0:
                self._place(n)  # a miss joins
            elif add < 0.0:
                self._changed(n)
        self._tick = tick

    @cython.locals(num_keys=cython.Py_ssize_t, i=cython.Py_ssize_t, now=cython.Py_ssize_t)
    def _future_mismatch(self, gids, num_keys: int) -> None:
        """Raise for the first request of the group that the future does not hold."""
        now = self.now
        for i in range(num_keys):
            if now + i >= self._num_future:
                expected = "the end of the sequence"
            elif self._future[now + i] != gids[i]:
                expected = self._keys[self._future[now + i]]
            else:
                continue
            raise ValueError(
                f"{self._name}: request {now + i} is {self._keys[gids[i]]}, but its future sequence has {expected}"
            )


class HeapEviction(EvictionPolicy):
    """Base of the heap-ranked evictions (module doc): the heap is `id_order`, which the cache adopts with the key
    table; subclasses rank ids through `self._heap` in their hooks."""

    def __init__(self, add: float = 0.0, reset: bool = False, pending: dict | None = None) -> None:
        self.key_ids = KeyIds()  # the cache adopts this table: the ids `id_order` is asked about
        self._ids, self._keys = self.key_ids.ids, self.key_ids.keys
        self._heap = self.id_order = IdHeap(self.key_ids, self.name, add, reset, pending)

    def on_evict(self, key: ExpertKey) -> None:
        self._heap.remove(self._ids[key])

    def victim(self, candidates: Collection[ExpertKey]) -> ExpertKey:
        chosen = self._heap.take(1, 1, candidates, True)
        if not chosen:
            raise ValueError(f"{self.name}: no candidate is a resident it knows")
        return self._keys[chosen[0]]

    def victims(self, count: int, excluded: Container[ExpertKey]) -> list[ExpertKey]:
        keys = self._keys
        return [keys[n] for n in self._heap.take(count, 2, excluded, False)]

    def on_group(self, keys: Sequence[ExpertKey], misses: Sequence[ExpertKey], victims: Sequence[ExpertKey]) -> None:
        ids = self._ids
        self._heap.group([ids[k] for k in keys], [ids[k] for k in misses], [ids[k] for k in victims])
