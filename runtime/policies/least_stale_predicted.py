"""Least-Stale with predicted next use (this project's evictor, ../shared/DESIGN.md section 4).

    make_eviction("least-stale-predicted", num_layers=16, threshold=0.5)
    make_eviction("least-stale-predicted", num_layers=16, split=True)   # stale victims first, as Least-Stale

The victim is the resident whose *predicted next-use time* (in layers) is farthest, ties to the least recently
used. With `split=True` it keeps Least-Stale's stale/current split (../shared/DESIGN.md section 4: stale victims
first, the farthest inside the chosen group). The default has no split because the next-use time below already
says what the split stands for (a current expert of a layer behind the clock waits for the next pass) and the
split overrides it where it is wrong (a current expert needed again only many passes later stays, a stale one
needed later in this pass goes): on the embedded model's validation trace, with no prefetch, dropping it raised the
hit rate at 5 / 10 / 25% capacity from 0.117 / 0.426 / 0.937 to 0.198 / 0.530 / 0.947 (Belady 0.261 / 0.636 /
0.964; 20 sequences), and it holds on the FLAME-MoE routing (README, "Real routing").
At clock (pass p, layer l), resident (j, e),
L layers, f = the expert's recent share of passes that used it (an exponential moving average over passes
with half-life `half_life` passes, so it follows a sequence's topic; floored at `min_frequency`), and
W(f) = L (g(f) - 1) the extra wait of an expert whose next use is g(f) passes away:
- j >= l with a forwarded probability (cache.predictions()) >= `threshold`, or prefetched in this pass
  (the prefetcher's top-k choice is itself the prediction): this pass, t = j - l;
- j >= l with a lower forwarded probability p: the expected wait, p (j - l) + (1 - p) t_later with
  t_later = (L - l + j) + W(f), the wait if it is not used in this pass;
- j >= l with a forwarded probability for other experts of layer j but none for this one: t_later;
- j >= l with nothing forwarded for layer j (beyond the predictor's horizon): first chance this pass,
  t = (j - l) + W(f);
- j < l: its layer is behind us, t = (L - l + j) + W(f).
g(f) is calibrated online (`_calibrate`): the frequency predicts g_hat = 1/f passes, and every reuse of an
expert checks that prediction against the gap that followed (capped at how long a resident stays: Little's
law, residents / evictions per pass, since a longer gap is a miss either way). The least-squares line
g = a + b g_hat over those reuses gives g(f) = max(a, 1 - b) + b / f, b in [MIN_TRUST, 1]: b = 1, a = 0 is the
plain 1/f (where frequencies are borne out); b near 0 where they say little about the next use within a
resident's stay (near-uniform routing, small caches), so the order falls back to the layer distance of the
next chance (least-stale-reverse's order, the current layer's unrouted experts first).
Drivers forward layer l's routing at layer start (`uses_current_routing`: requested experts 1, others 0).
Ties go to the least recently used. Predictions are cleared at each pass start (they describe one pass). From a pass
start to its first layer the clock is (p, -1): every layer is ahead, so the next token's layer-0 prefetch made there
(runtime/pass_start.py) is a use later in this pass like any other (it used to count as a layer behind the clock).
Trust in forecasts is calibrated online (`_calibrate_trust`, `calibrate_trust=True`): the probability forwarded for a
resident of a later layer is read as the measured share of such forecasts (same probability bin, same "chosen by the
prefetcher" or not) that the pass then used, and a prefetcher's choice counts as that share instead of 1. So a
predictor whose choices are mostly wrong (router reuse on random weights) no longer has its guesses kept as sure uses
while the working set goes.
A prefetcher's choice of a resident also counts in its frequency as a request of weight `proposal_weight` (0.25;
a demand use counts 1, once per pass): evicting an expert that the prefetcher keeps choosing costs a copy each
time it is chosen again (bytes, no stall), evicting one it never chooses costs a miss at its next use. Without it,
experts that router reuse proposes every pass but the model never uses were evicted as "never used" and copied
back the next pass (churn: examples/router_reuse_churn.py's random OLMoE at 25% copied 1.36 MB per token against
fld's 0.78; 1.07 with the weight; docs/results/least_stale.md). A chosen expert then used in the same pass counts
by what its use cost (`_top_up`): 1 if it waited for the copy (late, or a miss after an eviction), and if the copy
came in time, w + s (1 - w), s the share of its layer's prefetched uses that were late (measured online via
`on_late`): w where copies land at once (the runtime on a CPU), near 1 where they mostly come late (specmd-eval's
timed copies). A constant 1 cost the churn example 0.09 of hit rate at 5% and 10%; a constant w cost specmd-eval
up to 0.008 with router-reuse prefetch (docs/results/least_stale.md).

Learned next use: once the driver has forwarded a predictor's next-use table (`cache.next_use(layer, next_LE)`,
which calls `EvictionPolicy.on_next_use`), the victim is the resident with the largest entry of the latest table,
ties to the least recently used, with no stale/current split: the split is the heuristic's stand-in for "not
needed again in this pass", which the table measures directly, across pass boundaries (on the embedded model's
validation trace the split cost the learned order about half of its gain; docs/results/least_stale.md). A table
orders the victims until the next one comes: between tables the clock moves by whole layer-steps, which brings
every entry equally closer and keeps the order. `least-stale-predicted-heuristic` is the same policy ignoring
tables, for reports that show both.
A table's waits are calibrated online the way the frequency's are (`_calibrate_table`): every reuse of a key checks
the extra passes x the table predicted after its previous use against the realized extra passes y (capped at how
long a resident stays); with the least-squares line y = a + b x, an entry v at layer j from a table made at layer l
is read as o + L a + b (v - o), o the layer-steps to its next chance to be used (j - l ahead, L - l + j behind).
a = 0, b = 1 is the table as given; b near its floor (the waits say little about reuse within a resident's stay:
small caches) leaves the order of the next chance, least-stale-reverse's. Where it helps and where it does not:
docs/results/least_stale.md.
With a prefetcher, a resident's eviction only costs a miss if its next use is one the prefetcher does not foresee.
`recall_weighting=True` divides the entries of layer j by 1 - r_j, r_j the prefetcher's measured recall at that
layer (the share of its first uses in a pass that the prefetcher had chosen in time): if each use is foreseen with
probability r_j, the first unforeseen one comes after 1 / (1 - r_j) uses on average. Experts of well-predicted
layers go first; those of a layer the prefetcher covers poorly (the next token's layer 0) stay. In the runtime's
own counters (embedded model, the default bank, copies landing at once) this turned a loss to least-stale-reverse
into a win at 10% and 25% (docs/results/least_stale.md).
In table mode a prefetcher's choice for a later layer of this pass is a sure use whatever its calibrated trust, for
the rest of the pass (its later forecasts stay in the chosen bins): keeping it costs its slot until its layer passes,
evicting it for a farther choice costs a miss no later prefetch can undo when its layer is next; read as an expected
wait, a low trust put it above every sure use (the runtime's bank at 5%, 3 layers ahead in 12 slots: 321 misses
against least-stale-reverse's 299, now 299; docs/results/least_stale.md).
A table made in an earlier pass still orders the victims after a pass start; a sure use then counts from the
table's clock ((p - p_table) L + j - l_table layer-steps), and a probability q forwarded after that table (the
next token's layer 0) mixes in as q a + (1 - q) max(entry, a + L), a those layer-steps.
Once a table has come, every hook also keeps a flat per-(j, e) array of the residents' table entries (-inf for
the others) and their ticks, so that a victim is one argmax over it (O(L E) in C) rather than Python per resident.

Cost (why the structure looks like this): t - l only depends on the layer j, the key's frequency, its
forwarded probability and whether j is behind l or predicted. So per (stale/current, layer) the residents sit
(without the split, all in the stale groups: one set per layer) in lazy-deletion heaps ordered the way t orders
them inside one layer (floored frequency by recency, others by frequency, p >= threshold by recency,
p < threshold by (1 - p)(L + extra)); each layer's best (its head) is cached, only layers that changed since the last
victim are recomputed, and the victim is the best of the L heads. victim() is O(changed layers x log n + L) instead of
a scan of every resident. Without the split, a clock jump or a pass start keeps every head it provably keeps (at a new
value), the previous layer's accesses get their entries at layer start, and probability entries no victim reads at
this clock (layers behind it, the current layer's sure uses) are not made: at 4,096 slots of a 48 x 128 trace that
took the heuristic victim() from 28.4 to 18.8 us (benchmarks/policies.py, README).
A new entry marks its layer for recomputation only where it can change the head: a touched key with a probability in
a layer not behind the clock (a prefetch into the next layer: `_refresh` stashes it) only if it was the head, a
probability entry only if it beats the head's value (ties by recency); forwarded probabilities are read for residents
only (router reuse forwards the whole next layer). With the same victims, that cut the runtime's
head recomputations by a third at 5% (docs/results/simulator.md, "host cost").
By id: every per-key state is an array indexed by the key ids of the cache's table (runtime/key_ids.py: the policy
makes the table, the cache adopts it), and every heap is a `_Heap` of C entries (a double, two int64s, the id) instead
of heapq over tuples. The cache asks it by id on the batched path (`batched_ids`: `victims_ids` is victim() per
eviction, `on_group_ids` the group's on_insert/on_access in its order; `routes_ids`: the layer's routing is heard as
`on_routed_ids`, no dict of probability-1 predictions), which spares the per-request cache and driver work
(tests/runtime/test_batched_requests.py: same residents and counters as the per-request path, layer by layer). The
ExpertKey hooks of the interface turn a key into its id once and run the same code.
tests/runtime/test_fast_policies.py checks it victim by victim against the plain scan
(with and without the split, and with tables); tests/runtime/test_least_stale_predicted.py checks the calibration.
Compiled (`pip install -e .`; runtime/compiled.py lists this module), the state and the hooks live in `_Core`, an
extension type with typed attributes and C arrays, `_Group` and `_Heap` are extension types too, and the private
helpers are C functions; interpreted, the same source runs over lists. Same victims either way; the rates:
docs/results/simulator.md.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Container, Mapping, Sequence

import cython
import numpy as np
import torch
from cython.cimports.libc.math import log  # C's log compiled (math.log interpreted: the same libm call)

from runtime.key_ids import KeyIds, float_array, grown, int_array
from specmd_predict.policies import EvictionPolicy
from specmd_predict.routing import ExpertKey

# C constants when compiled (a Python global would be a module-dict lookup, and a comparison with a C integer a boxing)
STALE = cython.declare(cython.int, 0)
CURRENT = cython.declare(cython.int, 1)
MIN_TRUST = 0.01  # the calibration slope's floor: the wait stays strictly decreasing in the frequency
TRUST_BINS = 10  # forecasts are calibrated per probability bin (x2: chosen by the prefetcher or not)
# how a resident not used since it came in arrived (0: used since, or not resident)
PREFETCHED = cython.declare(cython.int, 1)
MISSED = cython.declare(cython.int, 2)
TRUST_PRIOR = 4.0  # pseudo-observations at the stated probability (1 for a prefetch choice) per bin
# a group's floor and frequency heaps are rebuilt without their outdated entries once they hold more than this many
# per resident (plus the slack): smaller heaps make shorter sifts, rebuilding costs a pass over them (under callgrind,
# benchmarks/simulator.py's stream on 4 sequences: 4 x + 64 -> 347 M instructions, 2 x + 16 -> 336 M, x + 8 -> 337 M)
COMPACT_FACTOR = cython.declare(cython.Py_ssize_t, 2)
COMPACT_SLACK = cython.declare(cython.Py_ssize_t, 16)
DECAY_TABLE = cython.declare(cython.Py_ssize_t, 64)  # powers of the decay kept in a table (`_Core._decay_to`)
INFINITY = cython.declare(cython.double, math.inf)  # (a C constant: `math.inf` is a module attribute lookup)
NEVER = cython.declare(cython.longlong, -(1 << 62))  # "no pass yet" in the per-id pass arrays (never a pass number)
# which residents victim() may choose: not stamped with the group's stamp (the cache's id path), not in a container
# of ExpertKeys (victims()), or in one (victim(candidates))
SKIP_STAMPED = cython.declare(cython.int, 0)
SKIP_INSIDE = cython.declare(cython.int, 1)
KEEP_INSIDE = cython.declare(cython.int, 2)


def _observe(sums: list[float], x: float, y: float) -> None:
    """Add one (x, y) observation to a calibration's sums [n, sum x, sum y, sum x^2, sum x y]."""
    sums[0] += 1.0
    sums[1] += x
    sums[2] += y
    sums[3] += x * x
    sums[4] += x * y


def _fit_line(sums: list[float]) -> tuple[float, float] | None:
    """The least-squares line y = a + b x over a calibration's sums, as (b clipped to [MIN_TRUST, 1], a); None
    while there are too few observations or x does not vary."""
    n, sx, sy, sxx, sxy = sums
    if n <= 1.0:
        return None
    var = sxx - sx * sx / n
    if var <= 1e-12 * max(sxx, 1.0):
        return None
    slope = min(1.0, max(MIN_TRUST, (sxy - sx * sy / n) / var))
    return slope, (sy - slope * sx) / n


@cython.final  # its C methods are called directly (no subclass overrides them)
@cython.cclass
class _Heap:
    """A binary min-heap of entries (a, b, c, n) ordered by (a, b, c): a a C double, b and c int64, n the id carried
    along. Lazy as heapq's lists of tuples were: the reader checks an entry against the key's state. Every heap here
    orders by a unique tick (or version) before n, so the order is total and the top does not depend on the shape.
    `append` adds without ordering (a stash: a plain array)."""

    a = cython.declare(cython.double[::1])
    b = cython.declare(cython.longlong[::1])
    c = cython.declare(cython.longlong[::1])
    n = cython.declare(cython.longlong[::1])
    size = cython.declare(cython.Py_ssize_t, visibility="readonly")
    _typed = cython.declare(cython.bint)

    def __init__(self) -> None:
        self._typed = cython.compiled
        self.size = 0
        self.a = float_array(8, 0.0, self._typed)
        self.b = int_array(8, 0, self._typed)
        self.c = int_array(8, 0, self._typed)
        self.n = int_array(8, 0, self._typed)

    @cython.cfunc
    def _grow(self) -> None:
        size = 2 * len(self.n)
        self.a = grown(self.a, size, 0.0, self._typed, "d")
        self.b = grown(self.b, size, 0, self._typed)
        self.c = grown(self.c, size, 0, self._typed)
        self.n = grown(self.n, size, 0, self._typed)

    @cython.cfunc
    @cython.inline
    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.locals(i=cython.Py_ssize_t, j=cython.Py_ssize_t)
    @cython.returns(cython.bint)
    @cython.exceptval(check=False)  # (pure C: nothing to raise)
    def _less(self, i: int, j: int) -> bool:
        if self.a[i] != self.a[j]:
            return self.a[i] < self.a[j]
        if self.b[i] != self.b[j]:
            return self.b[i] < self.b[j]
        return self.c[i] < self.c[j]

    @cython.cfunc
    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.locals(a=cython.double, b=cython.longlong, c=cython.longlong, n=cython.longlong, i=cython.Py_ssize_t)
    def append(self, a: float, b: int, c: int, n: int) -> None:
        if self.size == len(self.n):
            self._grow()
        i = self.size
        self._put(i, a, b, c, n)
        self.size = i + 1

    @cython.cfunc
    @cython.inline
    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.locals(i=cython.Py_ssize_t, a=cython.double, b=cython.longlong, c=cython.longlong, n=cython.longlong)
    @cython.returns(cython.void)
    @cython.exceptval(check=False)  # (pure C: nothing to raise)
    def _put(self, i: int, a: float, b: int, c: int, n: int) -> None:
        """The entry (a, b, c, n) at place i."""
        self.a[i] = a
        self.b[i] = b
        self.c[i] = c
        self.n[i] = n

    @cython.cfunc
    @cython.inline
    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.locals(i=cython.Py_ssize_t, j=cython.Py_ssize_t)
    @cython.returns(cython.void)
    @cython.exceptval(check=False)  # (pure C: nothing to raise)
    def _move(self, i: int, j: int) -> None:
        """Entry j to place i (a sift moves entries into the hole instead of swapping)."""
        self.a[i] = self.a[j]
        self.b[i] = self.b[j]
        self.c[i] = self.c[j]
        self.n[i] = self.n[j]

    @cython.cfunc
    @cython.inline
    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.locals(i=cython.Py_ssize_t, a=cython.double, b=cython.longlong, c=cython.longlong)
    @cython.returns(cython.bint)
    @cython.exceptval(check=False)  # (pure C: nothing to raise)
    def _before(self, a: float, b: int, c: int, i: int) -> bool:
        """Whether the entry (a, b, c) orders before entry i."""
        if a != self.a[i]:
            return a < self.a[i]
        if b != self.b[i]:
            return b < self.b[i]
        return c < self.c[i]

    @cython.cfunc
    @cython.inline
    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.locals(a=cython.double, b=cython.longlong, c=cython.longlong, n=cython.longlong)
    @cython.locals(i=cython.Py_ssize_t, parent=cython.Py_ssize_t)
    @cython.returns(cython.void)
    @cython.exceptval(check=False)  # (pure C: nothing to raise)
    def _rise(self, i: int, a: float, b: int, c: int, n: int) -> None:
        """Fill the hole at i with the entry (a, b, c, n), the hole first moving up past the parents it orders
        before."""
        while i > 0:
            parent = (i - 1) >> 1
            if not self._before(a, b, c, parent):
                break
            self._move(i, parent)
            i = parent
        self._put(i, a, b, c, n)

    @cython.ccall  # (C calls from the policy; Python calls from tests/runtime/test_fast_policies.py)
    @cython.locals(a=cython.double, b=cython.longlong, c=cython.longlong, n=cython.longlong, i=cython.Py_ssize_t)
    def push(self, a: float, b: int, c: int, n: int) -> None:
        if self.size == len(self.n):
            self._grow()
        i = self.size
        self.size = i + 1
        self._rise(i, a, b, c, n)

    @cython.cfunc
    @cython.inline
    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.locals(size=cython.Py_ssize_t, i=cython.Py_ssize_t, child=cython.Py_ssize_t)
    @cython.returns(cython.Py_ssize_t)
    @cython.exceptval(check=False)  # (pure C: nothing to raise)
    def _sink(self, i: int, size: int) -> int:
        """Move the hole at i down to a leaf along the smaller children (of the first `size` entries); where it ends."""
        while True:
            child = 2 * i + 1
            if child >= size:
                return i
            if child + 1 < size and self._less(child + 1, child):
                child += 1
            self._move(i, child)
            i = child

    @cython.ccall
    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.locals(size=cython.Py_ssize_t)
    @cython.returns(cython.void)
    @cython.exceptval(check=False)  # (pure C: nothing to raise)
    def pop(self) -> None:
        """Drop the top entry: its hole goes down to a leaf along the smaller children (one comparison per level, as
        heapq does), then the last entry fills it, rising to its place (a level or so)."""
        size = self.size - 1
        self.size = size
        if size > 0:
            self._rise(self._sink(0, size), self.a[size], self.b[size], self.c[size], self.n[size])

    @cython.ccall
    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.locals(i=cython.Py_ssize_t, j=cython.Py_ssize_t, child=cython.Py_ssize_t, size=cython.Py_ssize_t)
    @cython.locals(a=cython.double, b=cython.longlong, c=cython.longlong, n=cython.longlong)
    def heapify(self) -> None:
        size = self.size
        for i in range(size // 2 - 1, -1, -1):  # each subtree's root moves down past its smaller children
            a, b, c, n = self.a[i], self.b[i], self.c[i], self.n[i]
            j = i
            while True:
                child = 2 * j + 1
                if child >= size:
                    break
                if child + 1 < size and self._less(child + 1, child):
                    child += 1
                if self._before(a, b, c, child):
                    break
                self._move(j, child)
                j = child
            self._put(j, a, b, c, n)

    @cython.cfunc
    @cython.returns(cython.void)
    @cython.exceptval(check=False)  # (pure C: nothing to raise)
    def clear(self) -> None:
        self.size = 0

    def top(self) -> tuple[float, int, int, int]:
        """The top entry (a, b, c, n), for tests and debugging."""
        return self.a[0], self.b[0], self.c[0], self.n[0]


@cython.final
@cython.cclass
class _IdSet:
    """A set of ids with O(1) add, discard and membership, and a dense array of its ids to iterate (in no meaningful
    order; discard moves the last id into the gap, so a backward walk may discard what it visits)."""

    ids = cython.declare(cython.longlong[::1])
    size = cython.declare(cython.Py_ssize_t)
    _pos = cython.declare(cython.longlong[::1])  # id -> its index in `ids` plus one; 0: absent
    _typed = cython.declare(cython.bint)

    def __init__(self) -> None:
        self._typed = cython.compiled
        self.size = 0
        self.ids = int_array(0, 0, self._typed)
        self._pos = int_array(0, 0, self._typed)

    def grow(self, capacity: int) -> None:
        self.ids = grown(self.ids, capacity, 0, self._typed)
        self._pos = grown(self._pos, capacity, 0, self._typed)

    @cython.cfunc
    @cython.inline
    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.locals(n=cython.longlong)
    @cython.returns(cython.void)
    @cython.exceptval(check=False)  # (pure C: nothing to raise)
    def add(self, n: int) -> None:
        if not self._pos[n]:
            self.ids[self.size] = n
            self.size += 1
            self._pos[n] = self.size

    @cython.cfunc
    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.locals(n=cython.longlong, p=cython.longlong, last=cython.longlong)
    @cython.returns(cython.void)
    @cython.exceptval(check=False)  # (pure C: nothing to raise)
    def discard(self, n: int) -> None:
        p = self._pos[n]
        if p:
            last = self.ids[self.size - 1]
            self.ids[p - 1] = last
            self._pos[last] = p
            self.size -= 1
            self._pos[n] = 0

    @cython.cfunc
    @cython.inline
    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.locals(n=cython.longlong)
    @cython.returns(cython.bint)
    @cython.exceptval(check=False)  # (pure C: nothing to raise)
    def has(self, n: int) -> bool:
        return n < len(self._pos) and self._pos[n] != 0

    @cython.cfunc
    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.locals(i=cython.Py_ssize_t)
    @cython.returns(cython.void)
    @cython.exceptval(check=False)  # (pure C: nothing to raise)
    def clear(self) -> None:
        for i in range(self.size):
            self._pos[self.ids[i]] = 0
        self.size = 0

    @cython.cfunc
    @cython.locals(i=cython.Py_ssize_t)
    def update(self, other) -> None:
        src = cython.declare(_IdSet, other)
        for i in range(src.size):
            self.add(src.ids[i])


@cython.final
@cython.cclass
class _Group:
    """The residents of one layer in one state (stale or current), as lazy heaps (an entry is valid while it
    carries the key's current tick, and for p-entries its current probability stamp). Its head is kept by the policy
    (`_Core._head_version` and the arrays beside it)."""

    floor = cython.declare(_Heap)  # (0, tick, 0, id): frequency at the floor, every extra equal -> least recent first
    freq = cython.declare(_Heap)  # (log-frequency score, tick, 0, id): lowest frequency (largest extra) first
    due = cython.declare(_Heap)  # (0, tick, pstamp, id): p >= threshold, t = j - l
    partial = cython.declare(_Heap)  # (-(1 - p)(L + extra), tick, pstamp, id): p < threshold
    stash_floor = cython.declare(_Heap)  # floor / freq entries set aside while skipping keys with a probability
    stash_freq = cython.declare(_Heap)
    count = cython.declare(cython.Py_ssize_t, visibility="public")  # residents in this group

    def __init__(self) -> None:
        self.floor, self.freq, self.due, self.partial = _Heap(), _Heap(), _Heap(), _Heap()
        self.stash_floor, self.stash_freq = _Heap(), _Heap()
        self.count = 0


@cython.cclass
class _Core:
    """least-stale-predicted's state and hooks by key id (the policy class below adds the name, the constructor and
    the ExpertKey hooks): a compiled extension type when the module is compiled (runtime/compiled.py), so the hot
    hooks read typed attributes and C arrays instead of dicts keyed by ExpertKey; interpreted, a plain base class."""

    typed = cython.declare(cython.bint, visibility="readonly")  # its arrays are C arrays (the module is compiled)
    proposal_weight = cython.declare(cython.double, visibility="public")
    recall_weighting = cython.declare(cython.bint, visibility="public")
    num_layers = cython.declare(object, visibility="readonly")  # as given (None: the layers seen so far)
    _fixed_layers = cython.declare(cython.Py_ssize_t)  # num_layers as a C int, 0 for None
    split = cython.declare(cython.bint, visibility="public")
    _touched = cython.declare(cython.Py_ssize_t, visibility="public")
    _all_due = cython.declare(cython.bint, visibility="public")
    threshold = cython.declare(cython.double, visibility="public")
    decay = cython.declare(cython.double, visibility="public")
    _log_decay = cython.declare(cython.double, visibility="public")
    min_frequency = cython.declare(cython.double, visibility="public")
    _seen_layers = cython.declare(cython.Py_ssize_t, visibility="public")
    _pass = cython.declare(cython.longlong, visibility="public")
    _layer = cython.declare(cython.longlong, visibility="public")
    _tick = cython.declare(cython.longlong, visibility="public")
    _stamp = cython.declare(cython.longlong, visibility="public")
    # the key table (the cache adopts it) and per-id state, in arrays of `_cap` entries
    _table_ids = cython.declare(object)
    _ids = cython.declare(dict)  # ExpertKey -> id
    _keys = cython.declare(list)  # id -> ExpertKey
    _cap = cython.declare(cython.Py_ssize_t)
    _layer_cap = cython.declare(cython.Py_ssize_t)  # the per-layer sets' room
    _decay_pow = cython.declare(cython.double[::1])  # decay ** k for k < DECAY_TABLE (`_decay_to`)
    _lay = cython.declare(cython.longlong[::1])  # id -> its layer (-1: not read yet)
    _exp = cython.declare(cython.longlong[::1])  # id -> its expert
    _last = cython.declare(cython.longlong[::1])  # id -> its tick while resident, 0 otherwise
    _last_pass = cython.declare(cython.longlong[::1])  # id -> the pass of its last touch (read with the split)
    _pstamp = cython.declare(cython.longlong[::1])  # id -> the stamp of its probability entry, 0: none
    _ema = cython.declare(cython.double[::1])  # share of recent passes that used the expert, as of _used
    _used = cython.declare(cython.longlong[::1])  # the latest pass that requested it (frequency's clock), or NEVER
    _demand = cython.declare(cython.longlong[::1])  # the latest pass that used it (demand), or NEVER
    _prob = cython.declare(cython.double[::1])  # its forwarded probability in this pass (where _has_prob)
    _has_prob = cython.declare(cython.longlong[::1])
    _arrival = cython.declare(cython.longlong[::1])  # PREFETCHED / MISSED: copied in and not used since; else 0
    _pending = cython.declare(_IdSet)  # accessed ids whose heap entry is not made yet (`_flush`)
    _num_resident = cython.declare(cython.Py_ssize_t)
    _prob_ids = cython.declare(_IdSet)  # the ids with a forwarded probability in this pass
    _skipped = cython.declare(list)  # `_refresh`'s scratch: entries passed over, restored before it returns
    _new_layers = cython.declare(_IdSet)  # `_predict`'s scratch: layers just predicted
    _ps = cython.declare(cython.double[::1])  # scratch: a group's probabilities (1 for its routing)
    # the cache's arrays, bound once (`bind`): group stamps by id, the group's ids, its misses, its victims (out)
    _stamped = cython.declare(cython.longlong[:])
    _gids = cython.declare(cython.longlong[:])
    _gmisses = cython.declare(cython.longlong[:])
    _gvictims = cython.declare(cython.longlong[:])
    # which residents victim() may choose now (SKIP_STAMPED / SKIP_INSIDE / KEEP_INSIDE)
    _cmode = cython.declare(cython.int)
    _cstamp = cython.declare(cython.longlong)
    _cobj = cython.declare(object)
    _proposed = cython.declare(set, visibility="public")
    _predicted = cython.declare(_IdSet)  # layers with any forwarded probability in this pass
    _ending = cython.declare(_IdSet)  # scratch: the predicted layers of the pass that ends (on_pass_start)
    _groups = cython.declare(tuple, visibility="public")
    _prob_pending = cython.declare(_IdSet)
    _prob_deferred = cython.declare(_IdSet)
    _dirty_stale = cython.declare(_IdSet)  # layers whose head must be recomputed, per state
    _dirty_current = cython.declare(_IdSet)
    # each group's head (its best resident), at 2 j + state for layer j: version 0 is none (versions are unique: a new
    # head, or the same at a new value, gets a new one); top -v (v = t + l), the key's tick, its id. In C arrays
    # rather than on the groups, so that victim() takes the best of the heads in a scan of L values (`_best_head`)
    _head_version = cython.declare(cython.longlong[::1])
    _head_top = cython.declare(cython.double[::1])
    _head_tick = cython.declare(cython.longlong[::1])
    _head_key = cython.declare(cython.longlong[::1])
    _version = cython.declare(cython.longlong, visibility="public")
    _table = cython.declare(object, visibility="public")
    _table_layer = cython.declare(cython.longlong, visibility="public")
    _table_pass = cython.declare(cython.longlong, visibility="public")
    _due = cython.declare(set, visibility="public")
    _flat_shape = cython.declare(object, visibility="public")
    _flat_value = cython.declare(object, visibility="public")
    _flat_tick = cython.declare(object, visibility="public")
    _flat_ids = cython.declare(list, visibility="public")
    _outside = cython.declare(set, visibility="public")
    _calibration_decay = cython.declare(cython.double, visibility="public")
    _n = cython.declare(cython.double, visibility="public")  # the frequency calibration's sums (`_calibrate`)
    _sx = cython.declare(cython.double, visibility="public")
    _sy = cython.declare(cython.double, visibility="public")
    _sxx = cython.declare(cython.double, visibility="public")
    _sxy = cython.declare(cython.double, visibility="public")
    _slope = cython.declare(cython.double, visibility="public")
    _shift = cython.declare(cython.double, visibility="public")
    _table_sums = cython.declare(list, visibility="public")
    _table_slope = cython.declare(cython.double, visibility="public")
    _table_shift = cython.declare(cython.double, visibility="public")
    _predicted_extra = cython.declare(dict, visibility="public")
    _just_used = cython.declare(list, visibility="public")
    _evictions = cython.declare(cython.longlong, visibility="public")
    _eviction_rate = cython.declare(cython.double, visibility="public")
    _memory = cython.declare(cython.double, visibility="public")
    calibrate_trust = cython.declare(cython.bint, visibility="public")
    _forecast = cython.declare(dict, visibility="public")
    # the trust and recall calibrations' state (`_calibrate_trust`) in C arrays: per bin, and per layer (with the
    # number of layers counted so far, and as of the last pass start); read from Python as lists (properties below)
    _bin_n = cython.declare(cython.double[::1])
    _bin_used = cython.declare(cython.double[::1])
    _bin_prior = cython.declare(cython.double[::1])
    _bin_trust = cython.declare(cython.double[::1])
    _layer_recall_n = cython.declare(cython.double[::1])
    _layer_recall_hit = cython.declare(cython.double[::1])
    _layer_uncovered = cython.declare(cython.double[::1])
    _layer_copied_n = cython.declare(cython.double[::1])
    _layer_copied_late = cython.declare(cython.double[::1])
    _layer_late_share = cython.declare(cython.double[::1])
    _recall_len = cython.declare(cython.Py_ssize_t)
    _copied_len = cython.declare(cython.Py_ssize_t)
    _uncovered_len = cython.declare(cython.Py_ssize_t)
    _late_share_len = cython.declare(cython.Py_ssize_t)
    _late = cython.declare(set, visibility="public")

    # ids ---------------------------------------------------------------------------------------------------------
    def _start_ids(self, table: KeyIds) -> None:
        self.typed = cython.compiled
        self._table_ids, self._ids, self._keys = table, table.ids, table.keys
        self._cap = 0
        typed = self.typed
        self._lay = int_array(0, -1, typed)
        self._exp = int_array(0, -1, typed)
        self._last = int_array(0, 0, typed)
        self._last_pass = int_array(0, NEVER, typed)
        self._pstamp = int_array(0, 0, typed)
        self._ema = float_array(0, 0.0, typed)
        self._used = int_array(0, NEVER, typed)
        self._demand = int_array(0, NEVER, typed)
        self._prob = float_array(0, 0.0, typed)
        self._has_prob = int_array(0, 0, typed)
        self._arrival = int_array(0, 0, typed)
        self._ps = float_array(0, 1.0, typed)
        self._num_resident = 0
        self._prob_ids, self._pending = _IdSet(), _IdSet()
        self._skipped, self._new_layers = [], _IdSet()
        self._prob_pending, self._prob_deferred = _IdSet(), _IdSet()  # (see the constructor)
        # per layer: those with a forwarded probability in this pass (and a scratch copy), those whose head must be
        # recomputed, per state
        self._predicted, self._ending, self._dirty_stale, self._dirty_current = _IdSet(), _IdSet(), _IdSet(), _IdSet()
        self._new_layers.grow(8)
        self._layer_cap = 0
        self._head_version, self._head_top = int_array(0, 0, typed), float_array(0, 0.0, typed)
        self._head_tick, self._head_key = int_array(0, 0, typed), int_array(0, 0, typed)
        self._layer_recall_n, self._layer_recall_hit = float_array(0, 0.0, typed), float_array(0, 0.0, typed)
        self._layer_uncovered, self._layer_late_share = float_array(0, 0.0, typed), float_array(0, 0.0, typed)
        self._layer_copied_n, self._layer_copied_late = float_array(0, 0.0, typed), float_array(0, 0.0, typed)
        self._recall_len = self._copied_len = self._uncovered_len = self._late_share_len = 0
        self._bin_n = float_array(2 * TRUST_BINS, 0.0, typed)
        self._bin_used = float_array(2 * TRUST_BINS, 0.0, typed)
        prior = [(b + 0.5) / TRUST_BINS for b in range(TRUST_BINS)] + [1.0] * TRUST_BINS
        self._bin_prior = array("d", prior) if typed else prior
        self._bin_trust = array("d", prior) if typed else list(prior)  # calibrated probability per bin
        self.grow(max(64, len(table)))

    def grow(self, capacity: int) -> None:
        """Room for ids below `capacity` (the cache's arrays' length; the cache calls it as they grow)."""
        if capacity <= self._cap:
            return
        typed = self.typed
        self._lay = grown(self._lay, capacity, -1, typed)
        self._exp = grown(self._exp, capacity, -1, typed)
        self._last = grown(self._last, capacity, 0, typed)
        self._last_pass = grown(self._last_pass, capacity, NEVER, typed)
        self._pstamp = grown(self._pstamp, capacity, 0, typed)
        self._ema = grown(self._ema, capacity, 0.0, typed, "d")
        self._used = grown(self._used, capacity, NEVER, typed)
        self._demand = grown(self._demand, capacity, NEVER, typed)
        self._prob = grown(self._prob, capacity, 0.0, typed, "d")
        self._has_prob = grown(self._has_prob, capacity, 0, typed)
        self._arrival = grown(self._arrival, capacity, 0, typed)
        self._pending.grow(capacity)
        self._ps = grown(self._ps, capacity, 1.0, typed, "d")
        self._prob_pending.grow(capacity)
        self._prob_ids.grow(capacity)
        self._prob_deferred.grow(capacity)
        self._cap = capacity

    def bind(self, mark, gids, gmisses, gvictims) -> None:
        self._stamped, self._gids, self._gmisses, self._gvictims = mark, gids, gmisses, gvictims

    @cython.cfunc
    @cython.locals(n=cython.longlong)
    @cython.returns(cython.longlong)
    def _number(self, key) -> int:
        """`key`'s id (numbered in the shared table if new), its layer and expert known."""
        found = self._ids.get(key)
        n = self._table_ids.number(key) if found is None else found
        if n >= self._cap:
            self.grow(max(2 * self._cap, n + 1))
        if self._lay[n] < 0:
            self._lay[n] = key[0]
            self._exp[n] = key[1]
        return n

    @cython.cfunc
    @cython.inline
    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.locals(n=cython.longlong)
    def _know(self, n: int) -> None:
        """An id the cache numbered: its layer and expert, read once."""
        if n >= self._cap:
            self.grow(max(2 * self._cap, n + 1))
        if self._lay[n] < 0:
            key = self._keys[n]
            self._lay[n] = key[0]
            self._exp[n] = key[1]

    @cython.cfunc
    @cython.inline
    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.locals(n=cython.longlong)
    @cython.returns(cython.bint)
    def _candidate(self, n: int) -> bool:
        """Whether victim() may choose resident `n` now."""
        if self._cmode == SKIP_STAMPED:
            return self._last[n] != 0 and self._stamped[n] != self._cstamp
        if self._cmode == SKIP_INSIDE:
            return self._last[n] != 0 and self._keys[n] not in self._cobj
        return self._keys[n] in self._cobj

    # layers ----------------------------------------------------------------------------------------------
    @cython.locals(i=cython.Py_ssize_t)
    def _prob_id_list(self) -> list[int]:
        """The ids with a forwarded probability in this pass (table mode's loops)."""
        return [self._prob_ids.ids[i] for i in range(self._prob_ids.size)]

    @cython.cfunc
    @cython.inline
    @cython.returns(_IdSet)
    @cython.locals(state=cython.int)
    def _dirty(self, state: int) -> _IdSet:
        return self._dirty_current if state == CURRENT else self._dirty_stale

    @cython.cfunc
    @cython.inline
    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.returns(_Group)
    @cython.locals(state=cython.Py_ssize_t, j=cython.Py_ssize_t)
    def _group(self, state: int, j: int) -> _Group:
        """Layer j's group in `state` (unchecked casts: the groups lists hold only _Groups)."""
        return cython.cast(_Group, cython.cast(list, self._groups[state])[j])

    @cython.cfunc
    @cython.locals(d=_IdSet, j=cython.Py_ssize_t, state=cython.int, low=cython.Py_ssize_t, high=cython.Py_ssize_t)
    def _dirty_range(self, state: int, low: int, high: int) -> None:
        d = self._dirty(state)
        for j in range(low, high):
            d.add(j)

    @cython.locals(d=_IdSet)
    def _grow(self, num_layers: int) -> None:
        if num_layers > self._layer_cap:  # room in the per-layer sets (a few at a time, not one per layer)
            self._layer_cap = cap = max(num_layers, 2 * self._layer_cap, 8)
            for d in (self._dirty_stale, self._dirty_current, self._predicted, self._ending):
                d.grow(cap)
            typed = self.typed
            self._head_version = grown(self._head_version, 2 * cap, 0, typed)
            self._head_top = grown(self._head_top, 2 * cap, 0.0, typed, "d")
            self._head_tick = grown(self._head_tick, 2 * cap, 0, typed)
            self._head_key = grown(self._head_key, 2 * cap, 0, typed)
            self._layer_recall_n = grown(self._layer_recall_n, cap, 0.0, typed, "d")
            self._layer_recall_hit = grown(self._layer_recall_hit, cap, 0.0, typed, "d")
            self._layer_uncovered = grown(self._layer_uncovered, cap, 0.0, typed, "d")
            self._layer_copied_n = grown(self._layer_copied_n, cap, 0.0, typed, "d")
            self._layer_copied_late = grown(self._layer_copied_late, cap, 0.0, typed, "d")
            self._layer_late_share = grown(self._layer_late_share, cap, 0.0, typed, "d")
        for state in (STALE, CURRENT):
            groups = self._groups[state]
            while len(groups) < num_layers:
                groups.append(_Group())
                d = self._dirty(state)
                d.add(len(groups) - 1)

    def _see_layer(self, layer: int) -> None:
        if layer >= self._seen_layers:
            if self.num_layers is None and (self._prob_pending.size or self._prob_deferred.size):
                # their entries depend on L: make them with the L they were marked at
                self._flush_probabilities(False)
            self._seen_layers = layer + 1
            self._grow(layer + 1)
            if self.num_layers is None:  # L changed: every head value changes
                self._dirty_all()

    def _dirty_all(self) -> None:
        for state in (STALE, CURRENT):
            self._dirty_range(state, 0, len(self._groups[state]))

    def _start_decay(self) -> None:
        """The first powers of the frequency's decay per pass (`_decay_to`), once `decay` is set."""
        self._decay_pow = float_array(DECAY_TABLE, 1.0, cython.compiled)
        for k in range(DECAY_TABLE):
            self._decay_pow[k] = self._power(k)

    @cython.cfunc
    @cython.locals(k=cython.longlong)
    @cython.returns(cython.double)
    @cython.exceptval(check=False)  # (pure C: nothing to raise)
    def _power(self, k: int) -> float:
        return self.decay**k

    @cython.cfunc
    @cython.inline
    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.locals(k=cython.longlong)
    @cython.returns(cython.double)
    @cython.exceptval(check=False)  # (pure C: nothing to raise)
    def _decay_to(self, k: int) -> float:
        """decay ** k: a gap of a few passes from the table of first powers (each made as `_power` makes it, the
        same value), a longer one computed (a power per access and per head was 5% of the simulator's work)."""
        if 0 <= k < DECAY_TABLE:
            return self._decay_pow[k]
        return self._power(k)

    @cython.cfunc
    @cython.returns(cython.Py_ssize_t)
    @cython.exceptval(check=False)  # (pure C: nothing to raise)
    def _num_layers(self) -> int:
        return self._fixed_layers or self._seen_layers

    def _set_layers(self, num_layers: int | None) -> None:
        self.num_layers = num_layers
        self._fixed_layers = num_layers or 0

    @cython.cfunc
    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.locals(g=_Group, heap=_Heap, i=cython.Py_ssize_t, kept=cython.Py_ssize_t)
    def _compact(self, g: _Group) -> None:
        """Drop a group's outdated floor / frequency entries (now and then: they pile up as keys are touched)."""
        for heap in (g.floor, g.freq):
            kept = 0
            for i in range(heap.size):
                if self._last[heap.n[i]] == heap.b[i]:
                    heap._move(kept, i)
                    kept += 1
            heap.size = kept
            heap.heapify()

    # hooks -----------------------------------------------------------------------------------------------
    @cython.locals(g=_Group, cur=_Group, stale=_Group, i=cython.Py_ssize_t, n=cython.longlong)
    @cython.locals(ending=_IdSet, predicted=_IdSet, j=cython.Py_ssize_t, state=cython.int)
    def on_pass_start(self, pass_id: int) -> None:
        self._calibrate_trust(pass_id)
        self._calibrate(pass_id)
        self._just_used.clear()  # first uses with no table after them (none came at their layer)
        self._proposed.clear()
        groups = self._groups
        ending_layer, ending, predicted = self._layer, self._ending, self._predicted
        ending.clear()
        for i in range(predicted.size):  # only predicted layers hold probability entries or a stash
            j = predicted.ids[i]
            ending.add(j)
            for state in range(2):  # STALE, CURRENT
                g = self._group(state, j)
                g.due.clear()
                g.partial.clear()
                if g.stash_floor.size or g.stash_freq.size:
                    self._unstash(g)
        if self._flat_value is not None:  # the residents' entries as the table gives them: the ending pass's sure
            value = self._flat_value  # uses and forecasts no longer apply
            np.copyto(value, self._table, where=value > -np.inf)
        self._due.clear()
        for i in range(self._prob_ids.size):
            self._has_prob[self._prob_ids.ids[i]] = 0
        self._prob_ids.clear()
        self._prob_pending.clear()
        self._prob_deferred.clear()
        predicted.clear()
        for j in range(len(groups[STALE])):
            stale = self._group(STALE, j)
            if self.split:  # (without it the CURRENT groups stay empty)
                cur = self._group(CURRENT, j)
                if not (cur.count or cur.floor.size or cur.freq.size):
                    continue
                # every current resident is stale now; its heap entries keep their order keys
                self._carry(cur.floor, stale.floor)
                self._carry(cur.freq, stale.freq)
                stale.count += cur.count
                cur.count = 0
            if stale.floor.size + stale.freq.size > COMPACT_FACTOR * stale.count + COMPACT_SLACK:
                self._compact(stale)  # drop outdated entries now and then
        self._flush(STALE)  # accessed in the pass that ends: stale from now on
        self._pass = pass_id
        # the clock is (pass, -1) until its first layer starts: every layer is ahead, and a prefetch made at the pass
        # start (the next token's layer 0) is a use later in this pass like any other
        self._layer = -1
        if self.split:
            for state in (STALE, CURRENT):
                for j in range(len(groups[state])):
                    self._head_version[2 * j + state] = 0
                self._dirty_range(state, 0, len(groups[state]))
        else:  # (no victim() reads the CURRENT groups)
            self._revalue_heads(0, len(groups[STALE]), ending_layer, ending)

    @cython.cfunc
    @cython.locals(g=_Group, heap=_Heap, n=cython.longlong, u=cython.longlong, f=cython.double, offset=cython.longlong)
    @cython.locals(num_layers=cython.Py_ssize_t, layer=cython.longlong, ending_layer=cython.longlong)
    @cython.locals(low=cython.Py_ssize_t, high=cython.Py_ssize_t, j=cython.Py_ssize_t, dirty=_IdSet, predicted=_IdSet)
    @cython.locals(ending=_IdSet, now=cython.longlong, floor=cython.double, shift=cython.double, slope=cython.double)
    @cython.locals(h=cython.Py_ssize_t)
    def _revalue_heads(self, low: int, high: int, ending_layer: int = -1, ending=None) -> None:
        """Without the split, when the clock moves over layers low..high-1 (a layer jump, or a pass start with its
        `ending_layer` and `ending` predicted layers): a layer's head stays its head, at a new value, where that is
        sure; the others are marked changed (recomputed at the next victim()).

        A layer behind the clock, or ahead of it without predictions, has its head taken over all its residents'
        frequency entries, in the same order (the wait is decreasing in the frequency; at a pass start every frequency
        decays by the same factor, unless a key of the frequency heap decays to the floor, where ties by recency may
        reorder: recomputed). Only the offset (L + j behind, j ahead) and the frequency change, so the kept heads
        get their new value by `_refresh`'s formula instead of L recomputations: those were most of the cost of the
        first victim() of every pass (a pass start, then the jump back to layer 0)."""
        groups, dirty = self._groups[STALE], self._dirty_stale
        now, floor = self._pass, self.min_frequency
        num_layers, shift, slope, layer, predicted = (
            self._num_layers(),
            self._shift,
            self._slope,
            self._layer,
            self._predicted,
        )
        for j in range(low, high):
            g = groups[j]
            h = 2 * j  # (STALE)
            if (
                not self._head_version[h]
                or dirty.has(j)
                or predicted.has(j)
                # computed over fewer keys (predicted, not behind)
                or (ending is not None and j >= ending_layer and ending.has(j))
            ):
                self._head_version[h] = 0
                dirty.add(j)
                continue
            heap = g.freq
            if heap.size:  # its lowest frequency must stay above the floor (else: recomputed)
                n = heap.n[0]
                if self._last[n] != heap.b[0] or self._ema[n] * self._decay_to(now - self._used[n]) <= floor:
                    self._head_version[h] = 0
                    dirty.add(j)
                    continue
            n = self._head_key[h]
            u = self._used[n]
            f = self._ema[n] * self._decay_to(now - u) if u != NEVER else 0.0  # never used yet (prefetched): the floor
            offset = num_layers + j if j < layer else j
            self._version += 1
            self._head_version[h] = self._version
            self._head_top[h] = -(offset + num_layers * (shift + slope / (floor if floor > f else f)))

    @cython.locals(layer=cython.longlong, previous=cython.longlong, n=cython.longlong, pending=_IdSet)
    @cython.locals(i=cython.Py_ssize_t)
    def on_layer_start(self, layer: int) -> None:
        previous = self._layer
        self._layer = layer
        if layer >= self._seen_layers:
            self._see_layer(layer)
        if self._pending.size and not self.split:
            # The previous layer's accesses get their heap entries now, once per key and layer-step (a key is used
            # at most once per pass in decode): the same entries a later victim() or the pass start would make
            # (made from the key's last tick; a later access marks it again), but victim() then only pays for the
            # keys accessed since its layer started, not for every access since the last eviction.
            self._flush(STALE)
        if layer == previous + 1:  # the usual sweep: one layer moved behind the clock (none at a pass's first)
            if previous >= 0:
                self._dirty_stale.add(previous)
                self._dirty_current.add(previous)
        elif layer != previous:  # layers that moved behind (or ahead) of the clock change their next-use formula
            low, high = max(min(layer, previous), 0), max(layer, previous)  # (-1 is the pass start: no layer)
            self._dirty_range(CURRENT, low, high)
            if self.split:
                self._dirty_range(STALE, low, high)
            else:  # most keep their head (at a new value), e.g. all but the last at a pass's first layer start
                self._revalue_heads(low, high)
            if layer < previous:  # entries set aside (deferred, or of layers behind the clock) may be read again
                self._prob_pending.update(self._prob_deferred)
                self._prob_deferred.clear()
                for i in range(self._prob_ids.size):
                    n = self._prob_ids.ids[i]
                    if low <= self._lay[n] < high and self._last[n]:
                        self._prob_pending.add(n)
        pending = self._prob_pending
        if layer > previous and pending.size:  # no victim() reads the entries of layers behind the clock
            for i in range(pending.size - 1, -1, -1):
                n = pending.ids[i]
                if self._lay[n] < layer:
                    pending.discard(n)

    def on_predictions(self, probabilities: Mapping[ExpertKey, float]) -> None:
        count = len(probabilities)
        ids, ps = int_array(count, 0, self.typed), float_array(count, 0.0, self.typed)
        for i, (key, p) in enumerate(probabilities.items()):
            ids[i] = self._number(key)
            ps[i] = p
        self._predict(ids, ps, count)

    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.locals(num_keys=cython.Py_ssize_t, i=cython.Py_ssize_t, n=cython.longlong)
    def on_routed_ids(self, num_keys: int) -> None:
        """The group's ids (the bound array, numbered by the cache) are the layer's routing, heard as probability-1
        predictions: on_predictions(dict.fromkeys(group, 1.0)) by id."""
        for i in range(num_keys):
            n = self._gids[i]
            self._know(n)
            self._ps[i] = 1.0
        self._predict(self._gids, self._ps, num_keys)

    @cython.cfunc
    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.locals(ids=cython.longlong[:], ps=cython.double[:], count=cython.Py_ssize_t, i=cython.Py_ssize_t)
    @cython.locals(n=cython.longlong, j=cython.longlong, top=cython.longlong, p=cython.double, threshold=cython.double)
    @cython.locals(new=_IdSet, k=cython.Py_ssize_t)
    def _predict(self, ids, ps, count: int) -> None:
        """Forwarded probabilities `ps[i]` for ids `ids[i]` (i < count, distinct ids; `ps` may be rewritten)."""
        # only residents get entries (a key that comes in later is marked by `_place`)
        if self.calibrate_trust:
            self._trusted(ids, ps, count)
        new, top = self._new_layers, -1  # (a scratch set: a new one per call would feed the cyclic GC)
        for i in range(count):
            n = ids[i]
            self._prob[n] = ps[i]
            if not self._has_prob[n]:
                self._has_prob[n] = 1
                self._prob_ids.add(n)
            j = self._lay[n]
            if j != top and not self._predicted.has(j) and not new.has(j):
                if j >= len(new.ids):
                    new.grow(max(2 * len(new.ids), j + 1))
                new.add(j)
                if j > top:
                    top = j
        if new.size:
            if top >= self._seen_layers:
                self._see_layer(top)
            for k in range(new.size):
                j = new.ids[k]
                self._predicted.add(j)
                self._dirty_current.add(j)
                if self.split:
                    self._dirty_stale.add(j)
            if not self.split:
                self._predict_heads(new, ids, ps, count)
            new.clear()
        for i in range(count):  # residents' entries are made at the next victim()
            n = ids[i]
            if self._last[n]:
                self._prob_pending.add(n)
        if self._table is not None:  # table mode: a sure use later in this pass overrides the table's entry
            threshold, due, forecast = self.threshold, self._due, self._forecast
            for i in range(count):
                n, p = ids[i], ps[i]
                if p >= threshold or forecast.get(n, 0) >= TRUST_BINS:  # sure, or the prefetcher chose it (_expect)
                    due.add(n)
                elif n in due:
                    due.discard(n)
                if self._last[n]:  # every forecast sets its entry (`_entry`: the expected wait)
                    self._mark_due(n)

    @cython.cfunc
    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.locals(ids=cython.longlong[:], ps=cython.double[:], count=cython.Py_ssize_t, i=cython.Py_ssize_t)
    @cython.locals(n=cython.longlong, layer=cython.longlong, num_layers=cython.Py_ssize_t)
    @cython.locals(f=cython.double, dirty=_IdSet, j=cython.Py_ssize_t, k=cython.Py_ssize_t, partial=cython.bint)
    @cython.locals(threshold=cython.double, shift=cython.double, slope=cython.double, floor=cython.double, new=_IdSet)
    @cython.locals(h=cython.Py_ssize_t)
    def _predict_heads(self, new: _IdSet, ids, ps, count: int) -> None:
        """Without the split, layers that just got their first forwarded probabilities: a head stays the head, at a
        new value, where that is sure. Behind the clock nothing changes. Ahead of it, the offset becomes L + j and keys
        with a probability leave the frequency order (a head not among them stays the best of the rest); sure uses
        (p >= threshold) rank below every frequency entry (t = j - l), so only a probability below the threshold (a
        partial entry) can take the head: such layers are recomputed. Most layer starts forward only the layer's
        routed experts (p = 1), so this spares recomputing the current layer's head at each of them."""
        dirty, layer, threshold = self._dirty_stale, self._layer, self.threshold
        num_layers, shift, slope, floor = self._num_layers(), self._shift, self._slope, self.min_frequency
        for k in range(new.size):
            j = new.ids[k]
            if j < layer:
                continue
            h = 2 * j  # (STALE)
            if not self._head_version[h] or dirty.has(j) or self._has_prob[self._head_key[h]]:
                dirty.add(j)
                continue
            partial = False  # a probability below the threshold in layer j
            for i in range(count):
                if ps[i] < threshold and self._lay[ids[i]] == j:
                    partial = True
                    break
            if partial:
                dirty.add(j)
                continue
            f = self._frequency(self._head_key[h])
            self._version += 1
            self._head_version[h] = self._version
            self._head_top[h] = -(num_layers + j + num_layers * (shift + slope / (floor if floor > f else f)))

    def on_next_use(self, layer: int, next_LE: torch.Tensor) -> None:
        """A learned next-use table: next_LE[j, e] = expected layer-steps until (j, e) is used. It orders every
        victim until the next table comes (each layer-step moves every entry one step closer: the order holds)."""
        if next_LE.dim() != 2:
            raise ValueError(
                f"least-stale-predicted: next use must be an [L, E] table, got shape {tuple(next_LE.shape)}"
            )
        table = next_LE.detach().to("cpu", torch.float64).reshape(-1).numpy().copy()
        if np.isnan(table).any():
            raise ValueError("least-stale-predicted: the next-use table holds NaN")
        np.maximum(table, -1e300, out=table)  # -inf marks a non-resident in _flat_value
        shape = (int(next_LE.shape[0]), int(next_LE.shape[1]))
        self._observe_table(layer, table, shape)
        table = self.calibrated_table(layer, table, shape)
        first = self._table is None
        self._table = table
        self._table_layer = layer
        self._table_pass = self._pass
        if first:  # the keys already forwarded as sure uses in this pass
            self._due = {n for n in self._prob_id_list() if self._prob[n] >= self.threshold}
        if shape != self._flat_shape:
            self._start_flat(shape)
        else:
            value = self._flat_value
            np.copyto(value, table, where=value > -np.inf)  # the residents' entries
            for n in self._due:
                if self._lay[n] > layer and self._last[n]:
                    self._mark_due(n)
            for n in self._prob_id_list():  # forecasts below the threshold: their expected wait (`_entry`)
                if self._lay[n] > layer and self._last[n] and n not in self._due:
                    self._mark_due(n)

    def calibrated_table(self, layer: int, table: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        """The flat table as the victims read it: o + L (a + b x), o the layer-steps to the entry's next chance to be
        used (j - l ahead of the clock, L - l + j behind it), x = (entry - o) / L the table's extra wait in passes,
        (a, b) the online calibration (`_calibrate_table`; a = 0, b = 1 keeps the table as it is)."""
        num_layers, num_experts = shape
        if self.recall_weighting and self._uncovered_len:
            u = np.ones(num_layers)
            m = min(num_layers, self._uncovered_len)
            u[:m] = np.maximum(self._uncovered[:m], 0.05)
            return (self._calibrate_only(layer, table, shape).reshape(num_layers, num_experts) / u[:, None]).reshape(-1)
        return self._calibrate_only(layer, table, shape)

    def _calibrate_only(self, layer: int, table: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        """`calibrated_table` before the recall weighting: the online line alone (a = 0, b = 1: the table itself)."""
        if self._table_slope == 1.0 and self._table_shift == 0.0:
            return table
        num_layers, num_experts = shape
        j_L1 = np.arange(num_layers, dtype=np.float64).reshape(num_layers, 1)
        offset_L1 = np.where(j_L1 > layer, j_L1 - layer, num_layers - layer + j_L1)
        table_LE = table.reshape(num_layers, num_experts)
        extra_LE = np.maximum(table_LE - offset_L1, 0.0)
        out = offset_L1 + num_layers * self._table_shift + self._table_slope * extra_LE
        return out.reshape(-1)

    def _observe_table(self, layer: int, table: np.ndarray, shape: tuple[int, int]) -> None:
        """Record, for the keys first used in this pass at a layer j <= `layer`, the table's extra wait in passes
        x = (entry - (L - l + j)) / L: their next use is in a later pass, g passes away, which the table puts at
        (L - l + j) + L (g - 1) layer-steps. Keys of layers ahead wait for a later table of this pass."""
        num_layers, num_experts = shape
        if self._just_used:
            predicted, waiting = self._predicted_extra, []
            for n in self._just_used:
                j, e = self._lay[n], self._exp[n]
                if j > layer:
                    waiting.append(n)
                elif j < num_layers and e < num_experts:
                    extra = (float(table[j * num_experts + e]) - (num_layers - layer + j)) / num_layers
                    if math.isfinite(extra):  # an infinite wait ("never") is no point on the line
                        predicted[n] = max(extra, 0.0)
                    else:
                        predicted.pop(n, None)
            self._just_used = waiting

    @cython.locals(n=cython.Py_ssize_t)
    def _start_flat(self, shape: tuple[int, int]) -> None:
        num_layers, num_experts = shape
        self._flat_shape = shape
        self._flat_value = np.full(num_layers * num_experts, -np.inf)
        self._flat_tick = np.zeros(num_layers * num_experts, dtype=np.int64)
        self._flat_ids = [self._number(ExpertKey(j, e)) for j in range(num_layers) for e in range(num_experts)]
        self._outside = set()
        for n in range(self._cap):
            if self._last[n]:
                self._mark(n, True)

    @cython.cfunc
    @cython.locals(n=cython.longlong, inserted=cython.bint, j=cython.longlong, e=cython.longlong)
    def _mark(self, n: int, inserted: bool = False) -> None:
        """Copy a resident's tick (and, when it has just come in, its entry) into the flat arrays, or put it in the
        outside set."""
        num_layers, num_experts = self._flat_shape
        j, e = self._lay[n], self._exp[n]
        if j < num_layers and e < num_experts:
            index = j * num_experts + e
            self._flat_tick[index] = self._last[n]
            if inserted:
                self._flat_value[index] = self._entry(n, index)
        else:
            self._outside.add(n)

    @cython.cfunc
    @cython.locals(n=cython.longlong)
    def _flat_index(self, n: int):
        num_layers, num_experts = self._flat_shape
        j, e = self._lay[n], self._exp[n]
        return j * num_experts + e if j < num_layers and e < num_experts else None

    @cython.cfunc
    @cython.locals(n=cython.longlong)
    def _entry(self, n: int, index: int) -> float:
        """A resident's value in table mode: the table's entry, or j - l (l the table's layer) when this pass
        surely uses it at a later layer j (forwarded probability >= threshold, or prefetched for it: the same
        rule as the heuristic's; the table's expectation p (j - l) + (1 - p) later ranks a 90%-sure use of the
        next layer behind experts idle for a few passes, and would evict fresh prefetches)."""
        value = self._table[index]
        num_layers = self._flat_shape[0]
        # layer-steps from the table's clock
        ahead = self._lay[n] - self._table_layer + (self._pass - self._table_pass) * num_layers
        if ahead > 0:
            if n in self._due:
                return min(value, float(ahead))
            if self._has_prob[n]:
                p = self._prob[n]
                # a forecast below the threshold (a prefetcher's choice whose calibrated trust is low, say): used at
                # `ahead` with probability p, else the wait the table gives should this pass not use it
                wait = p * ahead + (1.0 - p) * max(value, ahead + num_layers)
                # a forecast made after the table (the next token's layer 0 at a pass start) replaces its entry; one
                # of the table's own pass can only bring it closer (the table's entry already mixes in the
                # predictor's probability of a use in this pass)
                return wait if self._table_pass != self._pass else min(value, wait)
        return value

    @cython.cfunc
    @cython.locals(n=cython.longlong)
    def _mark_due(self, n: int) -> None:
        index = self._flat_index(n)
        if index is not None:
            self._flat_value[index] = self._entry(n, index)

    @cython.cfunc
    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.locals(n=cython.longlong, prefetched=cython.bint, accessed=cython.bint, j=cython.Py_ssize_t, g=_Group)
    def _insert(self, n: int, prefetched: bool, accessed: bool = False) -> None:
        """A resident comes in; `accessed`: its access follows at once (a group's miss), which gives it a new tick
        and its heap entry, so none is made here (it would be outdated before any victim() reads it)."""
        j = self._lay[n]
        if j >= self._seen_layers:
            self._see_layer(j)
        g = self._group(self._touched, j)
        g.count += 1
        self._tick += 1
        if not self._last[n]:
            self._num_resident += 1
        self._last[n] = self._tick
        if self.split:  # the pass stamp is read only with the split (which group a resident is in)
            self._last_pass[n] = self._pass
        self._arrival[n] = PREFETCHED if prefetched else MISSED
        if prefetched:
            self._count_proposal(n)
        self._place(n, not accessed)
        if self._flat_value is not None:
            self._mark(n, True)
        if prefetched:
            self._expect(n)

    @cython.cfunc
    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.locals(
        n=cython.longlong,
        j=cython.Py_ssize_t,
        now=cython.longlong,
        tick=cython.longlong,
        used=cython.longlong,
        demanded=cython.longlong,
    )
    def _access(self, n: int) -> None:
        # the per-request hot path: `_place`'s work inlined, its heap entry left to `_flush`
        j, now = self._lay[n], self._pass
        if self.split:
            self._make_current(n)
        tick = self._tick = self._tick + 1
        self._last[n] = tick
        used = self._used[n]
        if used != now:
            self._count_request(n, now, 1.0, used)
        elif self._proposed and n in self._proposed:  # counted at the proposal's weight in this pass (`_top_up`)
            if n in self._late or self._arrival[n] == MISSED:  # its use still waited for a copy
                self._top_up(n, 1.0)
            elif j < self._late_share_len and self._layer_late_share[j] > 0.0:
                self._top_up(n, self._layer_late_share[j])
        demanded = self._demand[n]
        if demanded != now:
            self._first_use(n, now, demanded)
        self._pending.add(n)  # its heap entry is made when needed (victim among current ones, pass end)
        if self._has_prob[n]:
            self._prob_pending.add(n)
        if self._flat_value is not None:
            self._mark(n)

    @cython.cfunc
    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.locals(n=cython.longlong)
    def _prefetched(self, n: int) -> None:
        if self.split:
            self._make_current(n)
        self._tick += 1
        if not self._last[n]:
            self._num_resident += 1
        self._last[n] = self._tick
        if self._lay[n] > self._layer:  # the proposal counts and the expectation are for later layers only
            self._count_proposal(n)
            self._place(n)
            self._expect(n)
        else:
            self._place(n)

    @cython.cfunc
    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.locals(n=cython.longlong, used=cython.longlong)
    def _count_proposal(self, n: int) -> None:
        if self.proposal_weight and self._lay[n] > self._layer:
            used = self._used[n]
            if used != self._pass:
                self._count_request(n, self._pass, self.proposal_weight, used)
                self._proposed.add(n)

    @cython.cfunc
    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.locals(n=cython.longlong, share=cython.double)
    def _top_up(self, n: int, share: float) -> None:
        """A demand use of a key the prefetcher chose earlier in this pass, whose frequency counted the choice at
        `proposal_weight` w: the pass's weight becomes w + share (1 - w). A use that waited for its copy (late, or a
        miss after an eviction) counts 1, as a demand use alone. A use the prefetcher brought in time cost a copy but
        no stall, as a choice never used costs: it counts as likely to stall as its layer's prefetched uses were
        (`_late_share`): w where copies land at once (evicting what the prefetcher brings in time is cheap, and
        keeping it is what the frequency is for), near 1 where most copies come late (each copy then delays the
        next). The ema is as of this pass, so the weight adds exactly; the caller gives the key a new tick, so the
        heaps get a fresh entry with the new frequency and its old ones go stale."""
        self._proposed.discard(n)
        self._ema[n] += (1.0 - self.decay) * (1.0 - self.proposal_weight) * share

    @cython.cfunc
    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.locals(
        n=cython.longlong,
        now=cython.longlong,
        weight=cython.double,
        last=cython.longlong,
        decay=cython.double,
        ema=cython.double,
        g_hat=cython.double,
        floor=cython.double,
        gap=cython.longlong,
        g=cython.double,
    )
    @cython.returns(cython.void)
    @cython.exceptval(check=False)  # (pure C: nothing to raise)
    @cython.inline
    def _count_request(self, n: int, now: int, weight: float, last: int) -> None:
        """Its first request in pass `now` (`last`: the pass of its previous one, NEVER if none): update its frequency;
        a repeated request also feeds the calibration."""
        decay = self.decay
        if last != NEVER:
            ema = self._ema[n]
            g_hat = ema * decay
            floor = self.min_frequency
            g_hat = 1.0 / (g_hat if g_hat > floor else floor)  # what the policy predicted after its last use
            gap = now - last
            g = gap
            if self._memory < g:  # a gap longer than a resident stays is a miss all the same
                g = self._memory
            # _observe(sums, g_hat, g), inlined on C doubles: once per reuse of a key
            self._n += 1.0
            self._sx += g_hat
            self._sy += g
            self._sxx += g_hat * g_hat
            self._sxy += g_hat * g
            self._ema[n] = ema * self._decay_to(gap) + (1.0 - decay) * weight
        else:
            self._ema[n] = (1.0 - decay) * weight
        self._used[n] = now

    @cython.cfunc
    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.locals(n=cython.longlong, now=cython.longlong, last=cython.longlong, arrival=cython.longlong)
    @cython.inline
    def _first_use(self, n: int, now: int, last: int) -> None:
        """Its first demand use in pass `now` (`last`: the pass of its previous one, NEVER if none): scores the
        learned table's wait after its previous use, and the prefetcher's recall at its layer (did the prefetcher
        choose it before its layer came?)."""
        self._demand[n] = now
        if last != NEVER and self._predicted_extra:
            x = self._predicted_extra.get(n)
            if x is not None:  # the learned table's prediction after its last use, against the realized gap
                _observe(self._table_sums, x, min(now - last - 1.0, self._memory))  # capped at a resident's stay
        if self._table is not None:
            self._just_used.append(n)
        arrival = self._arrival[n]
        if arrival:
            self._arrival[n] = 0
            self._count_recall(n, arrival)

    @cython.cfunc
    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.locals(n=cython.longlong, arrival=cython.longlong, j=cython.Py_ssize_t)
    def _count_recall(self, n: int, arrival: int) -> None:
        """A use of id `n`, which had to be copied in (`arrival`): did the prefetcher bring it in time?"""
        j = self._lay[n]
        if j >= self._recall_len:
            self._recall_len = j + 1
        self._layer_recall_n[j] += 1.0
        if arrival == PREFETCHED:
            if j >= self._copied_len:
                self._copied_len = j + 1
            self._layer_copied_n[j] += 1.0
            if n in self._late:
                self._layer_copied_late[j] += 1.0
            else:
                self._layer_recall_hit[j] += 1.0

    @cython.cfunc
    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.locals(n=cython.longlong, state=cython.Py_ssize_t, j=cython.Py_ssize_t, g=_Group)
    def _evict(self, n: int) -> None:
        state = CURRENT if self.split and self._last_pass[n] == self._pass else STALE
        j = self._lay[n]
        g = self._group(state, j)
        g.count -= 1
        if self._head_of(state, j) == n:
            self._dirty(state).add(j)
        if self._last[n]:
            self._num_resident -= 1
        self._last[n] = 0
        self._last_pass[n] = NEVER
        self._pstamp[n] = 0
        self._arrival[n] = 0
        self._evictions += 1
        if self._flat_value is not None:
            index = self._flat_index(n)
            if index is not None:
                self._flat_value[index] = -np.inf
            else:
                self._outside.discard(n)

    # batched demand by id (runtime/expert_cache.py) ----------------------------------------------------------
    @cython.locals(count=cython.Py_ssize_t, stamp=cython.longlong, i=cython.Py_ssize_t, n=cython.longlong)
    def victims_ids(self, count: int, stamp: int) -> int:
        """`count` victim() calls among the residents not stamped `stamp` (the group's own), each evicted before the
        next, into the bound victims array; how many were found. The same victims as the per-request path: there, the
        group's earlier hits and inserts run between these calls, but they only touch the group's own (pinned)
        keys, whose hooks change no other resident's next use, tick or frequency."""
        self._cmode, self._cstamp = SKIP_STAMPED, stamp
        for i in range(count):
            try:
                n = self._victim()
            except ValueError:
                return i
            self._evict(n)
            self._gvictims[i] = n
        return count

    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.locals(
        num_keys=cython.Py_ssize_t,
        num_misses=cython.Py_ssize_t,
        num_victims=cython.Py_ssize_t,
        i=cython.Py_ssize_t,
        n=cython.longlong,
    )
    def on_group_ids(self, num_keys: int, num_misses: int, num_victims: int) -> None:
        """The per-request hooks of one group in its order (per id: a miss's insert, then its access), read from the
        bound arrays; the victims were evicted by victims_ids. A group's misses are exactly its ids not resident."""
        for i in range(num_victims):
            n = self._gvictims[i]
            if self._last[n]:  # not chosen by victims_ids (which evicts its choices)
                self._evict(n)
        for i in range(num_keys):
            n = self._gids[i]
            self._know(n)
            if not self._last[n]:
                self._insert(n, False, True)
            self._access(n)

    # bookkeeping -----------------------------------------------------------------------------------------
    @cython.cfunc
    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.locals(n=cython.longlong, j=cython.Py_ssize_t, g=_Group)
    def _make_current(self, n: int) -> None:
        if self.split and self._last_pass[n] != self._pass:
            j = self._lay[n]
            g = self._group(STALE, j)
            g.count -= 1
            if self._head_of(STALE, j) == n:  # only the head's departure changes the layer's head
                self._dirty(STALE).add(j)
            g = self._group(CURRENT, j)
            g.count += 1
        if self.split:
            self._last_pass[n] = self._pass

    @cython.cfunc
    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.locals(n=cython.longlong, u=cython.longlong)
    @cython.returns(cython.double)
    @cython.exceptval(check=False)  # (pure C: nothing to raise)
    def _frequency(self, n: int) -> float:
        u = self._used[n]
        return self._ema[n] * self._decay_to(self._pass - u) if u != NEVER else 0.0

    @cython.ccall
    @cython.locals(n=cython.longlong, f=cython.double, floor=cython.double)
    @cython.returns(cython.double)
    def _extra_of(self, n: int) -> float:
        """L (g - 1): the expected extra layers of waiting of id `n`, g the calibrated passes until its next use."""
        f, floor = self._frequency(n), self.min_frequency
        return self._num_layers() * (self._shift + self._slope / (floor if floor > f else f))

    @cython.cfunc
    @cython.locals(pass_id=cython.longlong, gap=cython.longlong, keep=cython.double, decay=cython.double)
    @cython.locals(rate=cython.double, slope=cython.double, intercept=cython.double, i=cython.Py_ssize_t)
    def _calibrate(self, pass_id: int) -> None:
        """At a pass start: how far the frequency's predicted gap is borne out, measured on the reuses so far.

        The heuristic predicts that an expert used in a share f of recent passes is next used g_hat = 1 / f passes
        after its last use. Every reuse (a key used again, g passes after its previous use) is one observation
        of (g_hat as predicted then, g). The least-squares line g = a + b g_hat over them (older passes weighted
        down, half-life `calibration_half_life` passes) is the calibration: b = cov(g_hat, g) / var(g_hat),
        clipped to [MIN_TRUST, 1]. The wait used is then L (g - 1) with g = max(a, 1 - b) + b g_hat (>= 1, and
        strictly decreasing in f, so every order inside a layer stays the frequency's). Calibrated frequencies
        give b near 1 (the heuristic as it was); frequencies that say little about the next use (near-uniform
        routing) give b near 0: every expert of a layer then waits about the same, and the order falls back to
        the layer distance of the next chance to be used (least-stale-reverse's order, with the current layer's
        unrouted experts first). O(1) per pass and per reuse."""
        gap = pass_id - self._pass
        if gap <= 0:
            return
        fit = _fit_line([self._n, self._sx, self._sy, self._sxx, self._sxy])
        if fit is not None:
            slope, intercept = fit
            self._slope = slope
            self._shift = max(intercept, 1.0 - slope) - 1.0
        self._calibrate_table()
        keep = self._calibration_decay**gap
        self._n *= keep
        self._sx *= keep
        self._sy *= keep
        self._sxx *= keep
        self._sxy *= keep
        for i in range(5):
            self._table_sums[i] *= keep
        decay = self.decay**gap
        rate = self._eviction_rate = self._eviction_rate * decay + self._evictions * (1.0 - decay)
        self._evictions = 0
        self._memory = max(1.0, self._num_resident / rate) if rate > 0.0 else math.inf

    @cython.cfunc
    @cython.locals(ids=cython.longlong[:], ps=cython.double[:], count=cython.Py_ssize_t, i=cython.Py_ssize_t)
    @cython.locals(n=cython.longlong, p=cython.double, layer=cython.longlong, b=cython.Py_ssize_t)
    def _trusted(self, ids, ps, count: int) -> None:
        """The forwarded probabilities as this policy reads them, rewritten in `ps`: forecasts of resident ids for a
        later layer of this pass become their bin's calibrated probability (`_calibrate_trust`); the current layer's
        routing stays as it is. (The bins' counts do not depend on the order of the ids.)"""
        layer, forecast = self._layer, self._forecast
        for i in range(count):
            n = ids[i]
            if self._last[n] and self._lay[n] > layer:
                p = ps[i]
                b = min(int(p * TRUST_BINS), TRUST_BINS - 1) if p > 0.0 else 0
                if forecast.get(n, 0) >= TRUST_BINS:  # chosen by the prefetcher earlier in this pass
                    b += TRUST_BINS
                forecast[n] = b
                ps[i] = self._bin_trust[b]

    @cython.cfunc
    @cython.locals(keep=cython.double, now=cython.longlong, b=cython.Py_ssize_t, j=cython.Py_ssize_t)
    @cython.locals(c=cython.double, h=cython.double, bins=cython.Py_ssize_t, prior_weight=cython.double)
    @cython.locals(used=cython.double, n=cython.double, pass_id=cython.longlong)
    @cython.boundscheck(False)
    @cython.wraparound(False)
    def _calibrate_trust(self, pass_id: int) -> None:
        """At a pass start: score the ending pass's forecasts (did the pass use each key?) and recalibrate.

        A forecast is a probability forwarded for a resident of a later layer of the pass, or the prefetcher's choice
        of one. Per bin of the stated probability (and apart, for the prefetcher's choices) the policy keeps decayed
        counts (half-life `half_life` passes) of forecasts and of those borne out; the calibrated probability is
        their ratio with TRUST_PRIOR pseudo-counts at the stated probability (1 for a choice), so an unmeasured
        forecaster is taken at its word. Residents only, since only they are ordered (a resident is far likelier to
        be used than the average expert of its bin). A sharp, reliable predictor keeps its probabilities and its
        choices stay sure uses; choices that are mostly wrong (router reuse on a random model) are read as the
        rarely used experts they are, and stop pushing the working set out. The same pass start updates each
        layer's recall: the share of its first uses in a pass that the prefetcher had chosen (`_first_use`)."""
        if pass_id == self._pass:
            return
        keep = self.decay ** abs(pass_id - self._pass)
        now, bins, prior_weight = self._pass, 2 * TRUST_BINS, TRUST_PRIOR  # (C values: the loops below run in C)
        for b in range(bins):
            self._bin_n[b] *= keep
            self._bin_used[b] *= keep
        for key, b in self._forecast.items():
            self._bin_n[b] += 1.0
            if self._demand[key] == now:
                self._bin_used[b] += 1.0
        self._forecast.clear()
        self._late.clear()
        for b in range(bins):
            used, n = self._bin_used[b], self._bin_n[b]
            self._bin_trust[b] = (used + prior_weight * self._bin_prior[b]) / (n + prior_weight)
        # 1 - recall, with TRUST_PRIOR pseudo-uses the prefetcher missed (no prefetch assumed until measured)
        for j in range(self._recall_len):
            self._layer_recall_n[j] *= keep
            self._layer_recall_hit[j] *= keep
            c, h = self._layer_recall_n[j], self._layer_recall_hit[j]
            self._layer_uncovered[j] = (c - h + prior_weight) / (c + prior_weight)
        self._uncovered_len = self._recall_len
        for j in range(self._copied_len):
            self._layer_copied_n[j] *= keep
            self._layer_copied_late[j] *= keep
            self._layer_late_share[j] = self._layer_copied_late[j] / (self._layer_copied_n[j] + 1.0)
        self._late_share_len = self._copied_len

    # the calibrations' state as lists (tests, debugging)
    @property
    def _trust(self) -> list[float]:
        """The calibrated probability per bin."""
        return list(self._bin_trust)

    @property
    def _recall_n(self) -> list[float]:
        return list(self._layer_recall_n)[: self._recall_len]

    @property
    def _recall_hit(self) -> list[float]:
        return list(self._layer_recall_hit)[: self._recall_len]

    @property
    def _uncovered(self) -> list[float]:
        """1 - recall per layer (smoothed), as of the last pass start."""
        return list(self._layer_uncovered)[: self._uncovered_len]

    @property
    def _late_share(self) -> list[float]:
        """late / (copied + 1) per layer, as of the last pass start."""
        return list(self._layer_late_share)[: self._late_share_len]

    def _calibrate_table(self) -> None:
        """The learned table's wait, calibrated like the frequency's (`_calibrate`): the least-squares line
        y = a + b x over the reuses so far, x the table's extra passes predicted after a key's use, y the realized
        ones (capped at how long a resident stays), b clipped to [MIN_TRUST, 1], a >= 0. b near 1: the table's
        order as it is; b near 0 (its waits say little about reuse within a resident's stay: small caches), the
        order falls back to the layer distance of each entry's next chance (least-stale-reverse's)."""
        fit = _fit_line(self._table_sums)
        if fit is not None:
            self._table_slope = fit[0]
            self._table_shift = max(fit[1], 0.0)

    @cython.cfunc
    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.locals(n=cython.longlong, j=cython.Py_ssize_t, tick=cython.longlong, touched=cython.Py_ssize_t, g=_Group)
    @cython.locals(u=cython.longlong, entry=cython.bint)
    def _place(self, n: int, entry: bool = True) -> None:
        """Entries for a resident just touched (now current, with a new tick); the heap entry only with `entry`."""
        j, tick, touched = self._lay[n], self._tick, self._touched
        g = self._group(touched, j)
        u = self._used[n]
        if entry:
            if u == NEVER or self._ema[n] * self._decay_to(self._pass - u) <= self.min_frequency:  # (_frequency)
                g.floor.push(0.0, tick, 0, n)
            else:  # log f at any later pass is this score plus a constant shared by all keys: a static order
                g.freq.push(log(self._ema[n]) - u * self._log_decay, tick, 0, n)
        if self._has_prob[n]:
            self._prob_pending.add(n)
            # a key with a probability in a predicted layer not behind the clock is no head candidate there
            # (`_refresh` stashes it): the layer's head only changes if it was this key (with its old tick). A
            # prefetch into the next layer then costs that layer no recomputation.
            if j < self._layer or self._head_of(touched, j) in (0, n):  # none, or this key
                self._dirty(touched).add(j)
        else:
            self._dirty(touched).add(j)
        if self._flat_value is not None:
            self._mark(n)

    @cython.cfunc
    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.locals(
        defer=cython.bint,
        pending=_IdSet,
        deferred=_IdSet,
        i=cython.Py_ssize_t,
        layer=cython.longlong,
        threshold=cython.double,
        split=cython.bint,
        now=cython.longlong,
        skip_due=cython.bint,
        stamp=cython.longlong,
        n=cython.longlong,
        j=cython.longlong,
        p=cython.double,
        state=cython.Py_ssize_t,
        g=_Group,
        tick=cython.longlong,
        score=cython.double,
        v=cython.double,
        best=cython.double,
        h=cython.Py_ssize_t,
    )
    def _flush_probabilities(self, defer: bool = True) -> None:
        """Make the probability entries of the marked ids that are still resident; with `defer`, set aside those
        no victim() reads at this clock (see `_prob_deferred`).

        An entry goes to its group's `due` heap (p >= threshold, t = j - l) or `partial` heap (p < threshold, ranked
        by (1 - p)(L + extra)), with a fresh probability stamp (older entries of the key go stale). The layer's head
        is marked for recomputation unless the new entry provably loses to it (made here, in one loop, rather than
        one call per key: this runs at nearly every victim() of the runtime's prefetch path)."""
        pending, deferred = self._prob_pending, self._prob_deferred
        if not defer:
            pending.update(deferred)
            deferred.clear()
        layer, threshold = self._layer, self.threshold
        split, now = self.split, self._pass
        skip_due = defer and not split and not self._all_due
        stamp = self._stamp
        for i in range(pending.size):
            n = pending.ids[i]
            if self._last[n]:
                j = self._lay[n]
                if defer and j < layer:  # not read while the clock is past j; made if it moves back
                    continue
                p = self._prob[n]
                if skip_due and j == layer and p >= threshold:
                    if self._head_of(STALE, j) == n:  # now a sure use of this layer: no longer its head
                        self._dirty_stale.add(j)
                    deferred.add(n)
                    self._pstamp[n] = 0  # its older entry (a lower probability's, say) is outdated, as a push makes it
                    continue
                if deferred.size:
                    deferred.discard(n)
                stamp += 1
                self._pstamp[n] = stamp
                state = CURRENT if split and self._last_pass[n] == now else STALE
                g = self._group(state, j)
                h = 2 * j + state
                tick = self._last[n]
                if p >= threshold:
                    g.due.push(0.0, tick, stamp, n)
                    # t = j - l is below every other case's next use: it cannot displace a head of another case, nor a
                    # head of its own case (v = j) that is older (ties go to the least recently used)
                    if self._head_of(state, j) not in (0, n) and (
                        -self._head_top[h] > j or (-self._head_top[h] == j and self._head_tick[h] < tick)
                    ):
                        continue
                else:
                    score = -((1.0 - p) * (self._num_layers() + self._extra_of(n)))
                    g.partial.push(score, tick, stamp, n)
                    # its value as `_refresh` computes it (v = j - score): a head that beats it stays the head (a head
                    # is the best valid entry of its layer: any change to it marks the layer); no head for a layer
                    # behind the clock reads this entry
                    if self._head_of(state, j) not in (0, n):
                        v, best = j - score, -self._head_top[h]
                        if j < layer or best > v or (best == v and self._head_tick[h] < tick):
                            continue
                self._dirty(state).add(j)
        self._stamp = stamp
        pending.clear()

    @cython.cfunc
    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.locals(n=cython.longlong, j=cython.longlong, b=cython.Py_ssize_t)
    def _expect(self, n: int) -> None:
        # The prefetcher chose this expert by rank (top-k) for a later layer of this pass: that choice is the
        # prediction. Its probability alone undersells it when routing is sharp (the 2nd..k-th experts of a
        # peaked router have small softmax mass yet are always selected), and evicting it would waste the copy.
        j = self._lay[n]
        if j > self._layer:
            b = self._forecast.get(n, TRUST_BINS - 1)  # its probability's bin (the top one if none came)
            b = self._forecast[n] = b % TRUST_BINS + TRUST_BINS
            self._prob[n] = self._bin_trust[b] if self.calibrate_trust else 1.0
            if not self._has_prob[n]:
                self._has_prob[n] = 1
                self._prob_ids.add(n)
            if self._table is not None:
                # in table mode a choice is a sure use whatever its calibrated trust: keeping it costs its slot until
                # its layer passes (at most the prefetcher's horizon), while evicting it for another choice turns a
                # use the prefetcher foresaw into a collision miss; the table's entry for it is already the
                # predictor's own mix of "used in this pass" and "used later", so a mix with a low trust (the expected
                # wait p a + (1 - p) max(entry, a + L)) ranked it above farther choices and sure uses
                # (docs/results/least_stale.md: the runtime's bank at 5%, 3 layers ahead in 12 slots)
                self._due.add(n)
                self._mark_due(n)
            if not self._predicted.has(j):
                self._see_layer(j)
                self._predicted.add(j)
                for state in (STALE, CURRENT):
                    self._dirty(state).add(j)
            self._prob_pending.add(n)

    @cython.cfunc
    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.locals(
        state=cython.Py_ssize_t,
        i=cython.Py_ssize_t,
        n=cython.longlong,
        j=cython.Py_ssize_t,
        g=_Group,
        e=cython.double,
        floor=cython.double,
        log_decay=cython.double,
        layer=cython.longlong,
        tick=cython.longlong,
        a=cython.double,
        is_floor=cython.bint,
        heap=_Heap,
        groups=list,
        dirty=_IdSet,
        pending=_IdSet,
    )
    def _flush(self, state: int) -> None:
        """Heap entries, in the groups of `state`, for the ids accessed since the last flush (their last tick)."""
        groups, floor, dirty, log_decay, layer = (
            self._groups[state],
            self.min_frequency,
            self._dirty(state),
            self._log_decay,
            self._layer,
        )
        pending = self._pending
        for i in range(pending.size):
            n = pending.ids[i]
            tick = self._last[n]
            if not tick:
                continue  # evicted since
            j = self._lay[n]
            g = cython.cast(_Group, groups[j])
            e = self._ema[n]
            is_floor = e <= floor  # accessed in its last used pass: its frequency then was its ema
            a = 0.0 if is_floor else log(e) - self._used[n] * log_decay  # log f at any later pass, less a constant
            if j >= layer and self._has_prob[n]:
                # _refresh would stash it at once (a key with a probability, in a predicted layer not behind the
                # clock; its probability and its layer's stay until the pass ends): straight to the stash, which is
                # put back into the heaps once the clock passes the layer or the pass ends. Only the layer's head
                # can have changed (it was this key with its old tick).
                heap = g.stash_floor if is_floor else g.stash_freq
                heap.append(a, tick, 0, n)
                if self._head_of(state, j) in (0, n):
                    dirty.add(j)
            else:
                heap = g.floor if is_floor else g.freq
                heap.push(a, tick, 0, n)
                dirty.add(j)
        pending.clear()

    @cython.cfunc
    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.locals(g=_Group)
    def _unstash(self, g: _Group) -> None:
        self._carry(g.stash_floor, g.floor)
        self._carry(g.stash_freq, g.freq)

    @cython.cfunc
    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.locals(source=_Heap, target=_Heap, i=cython.Py_ssize_t)
    def _carry(self, source: _Heap, target: _Heap) -> None:
        """Push `source`'s floor / frequency entries that are still valid (they carry their key's tick) into `target`,
        in order, and empty `source`."""
        for i in range(source.size):
            if self._last[source.n[i]] == source.b[i]:
                target.push(source.a[i], source.b[i], source.c[i], source.n[i])
        source.clear()

    # next use --------------------------------------------------------------------------------------------
    @cython.locals(n=cython.longlong, j=cython.longlong, layer=cython.longlong)
    def _next_use(self, n: int) -> float:
        """Predicted layers until the next demand request of resident id `n` (the heuristic)."""
        j, layer = self._lay[n], self._layer
        extra = self._extra_of(n)
        later = self._num_layers() - layer + j + extra
        if j < layer:
            return later
        if not self._has_prob[n]:
            return later if self._predicted.has(j) else j - layer + extra
        p = self._prob[n]
        if p >= self.threshold:
            return j - layer
        return p * (j - layer) + (1.0 - p) * later

    @cython.cfunc
    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.locals(
        heap=_Heap,
        stash=_Heap,
        g=_Group,
        skipped=list,
        skip_p=cython.bint,
        kind=cython.int,
        n=cython.longlong,
        valid=cython.bint,
    )
    @cython.returns(cython.bint)
    def _best_of_heap(self, heap: _Heap, g: _Group, skipped: list, skip_p: bool, kind: int) -> bool:
        """Whether one heap (kind 0 floor, 1 freq, 2 due, 3 partial) has a valid, evictable entry: then it is the
        heap's top. Outdated entries are dropped; non-candidates go to `skipped` (restored by the caller); with
        `skip_p`, keys that have a probability go to the group's stash."""
        while heap.size:
            n = heap.n[0]
            if kind <= 1:
                valid = self._last[n] == heap.b[0]
            else:
                valid = self._last[n] == heap.b[0] and self._pstamp[n] == heap.c[0]
            if not valid:
                heap.pop()
                continue
            if kind == 1 and self._frequency(n) <= self.min_frequency:  # decayed to the floor: its extra is the max
                g.floor.push(0.0, heap.b[0], 0, n)
                heap.pop()
                continue
            if skip_p and self._has_prob[n]:
                stash = g.stash_floor if kind == 0 else g.stash_freq
                stash.append(heap.a[0], heap.b[0], heap.c[0], n)
                heap.pop()
                continue
            if not self._candidate(n):
                skipped.append((heap, heap.a[0], heap.b[0], heap.c[0], n))
                heap.pop()
                continue
            return True
        return False

    @cython.cfunc
    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.returns(cython.bint)
    @cython.locals(
        state=cython.Py_ssize_t,
        j=cython.Py_ssize_t,
        g=_Group,
        heap=_Heap,
        skipped=list,
        layer=cython.longlong,
        num_layers=cython.Py_ssize_t,
        offset=cython.longlong,
        skip_p=cython.bint,
        skip_due=cython.bint,
        found=cython.bint,
        now=cython.longlong,
        floor=cython.double,
        f=cython.double,
        v=cython.double,
        n=cython.longlong,
        best_v=cython.double,
        best_tick=cython.longlong,
        best_key=cython.longlong,
        h=cython.Py_ssize_t,
    )
    def _refresh(self, state: int, j: int) -> bool:
        """Recompute layer j's head in `state`; True if a non-candidate was skipped.

        The head is the group's (v, tick) maximum with v = t + l, which does not depend on l inside one case;
        each heap's first valid entry is taken in place when it is a candidate (the common case), otherwise
        `_best_of_heap` walks on."""
        g = self._group(state, j)
        self._version += 1
        h = 2 * j + state
        self._head_version[h] = 0
        skipped = self._skipped  # scratch (empty between calls): a list per call would feed the cyclic GC
        if g.count:
            num_layers, layer = self._num_layers(), self._layer
            best_v, best_tick, best_key = -1.0, 0, 0
            if j < layer or not self._predicted.has(j):
                if g.stash_floor.size or g.stash_freq.size:
                    self._unstash(g)
                offset = num_layers + j if j < layer else j
                skip_p = False
            else:
                offset, skip_p = num_layers + j, True
                # the current layer's sure uses (t = 0, its routed experts: pinned while it runs) lose to any other
                # candidate without the split: skipped (victim() looks again if nothing else is left)
                skip_due = j == layer and not self.split and not self._all_due
                heap = g.due
                if heap.size and not skip_due and self._best_of_heap(heap, g, skipped, False, 2):
                    best_v, best_tick, best_key = j, heap.b[0], heap.n[0]
                heap = g.partial
                if heap.size and self._best_of_heap(heap, g, skipped, False, 3):
                    v = j - heap.a[0]
                    if not best_key or v > best_v or (v == best_v and heap.b[0] < best_tick):
                        best_v, best_tick, best_key = v, heap.b[0], heap.n[0]
            # freq before floor: keys that decayed to the floor move there on the way
            # outdated first entries (the victim just evicted, keys touched since) are dropped here, as
            # `_best_of_heap` would drop them first, so that the common case needs no call
            heap = g.freq
            while heap.size and self._last[heap.n[0]] != heap.b[0]:
                heap.pop()
            if heap.size:
                now, floor = self._pass, self.min_frequency
                n = heap.n[0]
                f = self._ema[n] * self._decay_to(now - self._used[n])
                found = True
                if not ((not skip_p or not self._has_prob[n]) and self._candidate(n) and f > floor):
                    found = self._best_of_heap(heap, g, skipped, skip_p, 1)
                    if found:
                        n = heap.n[0]
                        f = self._ema[n] * self._decay_to(now - self._used[n])
                if found:
                    v = offset + num_layers * (self._shift + self._slope / (floor if floor > f else f))
                    if not best_key or v > best_v or (v == best_v and heap.b[0] < best_tick):
                        best_v, best_tick, best_key = v, heap.b[0], n
            heap = g.floor
            while heap.size and self._last[heap.n[0]] != heap.b[0]:
                heap.pop()
            if heap.size:
                n = heap.n[0]
                found = True
                if not ((not skip_p or not self._has_prob[n]) and self._candidate(n)):
                    found = self._best_of_heap(heap, g, skipped, skip_p, 0)
                if found:
                    v = offset + num_layers * (self._shift + self._slope / self.min_frequency)
                    if not best_key or v > best_v or (v == best_v and heap.b[0] < best_tick):
                        best_v, best_tick, best_key = v, heap.b[0], heap.n[0]
            if best_key:
                self._head_version[h] = self._version
                self._head_top[h], self._head_tick[h], self._head_key[h] = -best_v, best_tick, best_key
            if skipped:
                for entry in skipped:
                    heap = entry[0]
                    heap.push(entry[1], entry[2], entry[3], entry[4])
                skipped.clear()
                return True
        return False

    @cython.cfunc
    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.returns(cython.Py_ssize_t)
    @cython.locals(state=cython.int, num_layers=cython.Py_ssize_t, h=cython.Py_ssize_t, best=cython.Py_ssize_t)
    @cython.locals(top=cython.double, tick=cython.longlong, t=cython.double)
    @cython.exceptval(check=False)  # (pure C: nothing to raise)
    def _best_head(self, state: int, num_layers: int) -> int:
        """The layer whose head in `state` is the victim among the heads of layers below `num_layers` (the farthest
        next use, ties to the least recently used), -1 if none has one. A scan of the L heads: cheaper than a heap of
        them, whose every new head left an outdated entry to pop (docs/results/simulator.md)."""
        best, top, tick = -1, INFINITY, 0  # (every head's top is finite)
        for h in range(state, 2 * num_layers, 2):
            t = self._head_top[h]
            if (t < top or (t == top and self._head_tick[h] < tick)) and self._head_version[h]:  # (a rare load)
                best, top, tick = h, t, self._head_tick[h]
        return best // 2 if best >= 0 else -1

    @cython.cfunc
    @cython.inline
    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.locals(state=cython.int, j=cython.Py_ssize_t, h=cython.Py_ssize_t)
    @cython.returns(cython.longlong)
    @cython.exceptval(check=False)  # (pure C: nothing to raise)
    def _head_of(self, state: int, j: int) -> int:
        """The id heading layer j's group in `state`, 0 if none (ids start at 1)."""
        h = 2 * j + state
        return self._head_key[h] if self._head_version[h] else 0

    @cython.cfunc
    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.returns(cython.longlong)
    @cython.locals(
        split=cython.bint,
        state=cython.Py_ssize_t,
        dirty=_IdSet,
        i=cython.Py_ssize_t,
        j=cython.Py_ssize_t,
        n=cython.longlong,
        found=cython.longlong,
        found_top=cython.double,
        found_tick=cython.longlong,
        best=cython.longlong,
        best_top=cython.double,
        best_tick=cython.longlong,
        h=cython.Py_ssize_t,
    )
    def _victim(self) -> int:
        """The victim's id among the candidates (`_candidate`)."""
        if self._table is not None:
            return self._table_victim()
        if self._prob_pending.size:
            self._flush_probabilities(True)
        split = self.split
        best, best_top, best_tick = 0, 0.0, 0
        if not split and self._pending.size:
            self._flush(STALE)
        for state in range(2 if split else 1):  # STALE, then CURRENT with the split
            if state == CURRENT and self._pending.size:
                self._flush(CURRENT)
            dirty, groups = self._dirty(state), self._groups[state]
            retry = None
            if dirty.size:
                for i in range(dirty.size):
                    j = dirty.ids[i]
                    if self._refresh(state, j):
                        if retry is None:
                            retry = []
                        retry.append(j)
                dirty.clear()
            found = 0
            while True:
                j = self._best_head(state, len(groups))
                if j < 0:
                    break
                h = 2 * j + state
                n = self._head_key[h]
                if self._candidate(n):
                    found, found_top, found_tick = n, self._head_top[h], self._head_tick[h]
                    break
                if retry is None:  # pinned since its layer was computed: recompute that layer without it
                    retry = []
                retry.append(j)
                self._refresh(state, j)
            if retry:  # heads computed around non-candidates may change when those are unpinned
                for j in retry:
                    dirty.add(j)
            if found:
                if split:
                    return found
                if not best or found_top < best_top or (found_top == best_top and found_tick < best_tick):
                    best, best_top, best_tick = found, found_top, found_tick  # farther, or as far and older
        if best:
            return best
        if not split and not self._all_due:  # only the current layer's sure uses may be left: look at them too
            self._all_due = True
            self._prob_pending.update(self._prob_deferred)  # the current layer's deferred sure uses are read now
            self._prob_deferred.clear()
            current = self._layer >= 0  # (pass, -1): no current layer
            try:
                if current:
                    self._dirty_stale.add(self._layer)
                    self._dirty_current.add(self._layer)
                return self._victim()
            finally:
                self._all_due = False
                if current:
                    self._dirty_stale.add(self._layer)
                    self._dirty_current.add(self._layer)
        raise ValueError("least-stale-predicted: no candidate is a resident it knows")

    # learned next use ------------------------------------------------------------------------------------
    @cython.cfunc
    @cython.returns(cython.longlong)
    def _table_victim(self) -> int:
        """The resident with the largest entry of the latest table, ties to the least recently used (vectorized:
        one argmax over the residents' entries, kept up to date by the hooks)."""
        outside = [n for n in self._outside if self._candidate(n)]
        if outside:  # nothing predicts their use: farthest of all
            return min(outside, key=lambda n: self._last[n])
        value, ticks, flat_ids = self._flat_value, self._flat_tick, self._flat_ids
        skipped: list[tuple[int, float]] = []
        try:
            while True:
                index = int(value.argmax())
                best = value[index]
                if best == -np.inf:
                    break
                if np.count_nonzero(value == best) > 1:  # ties go to the least recently used
                    ties = np.flatnonzero(value == best)
                    index = int(ties[np.argmin(ticks[ties])])
                n = flat_ids[index]
                if self._candidate(n):
                    return n
                skipped.append((index, value[index]))
                value[index] = -np.inf  # pinned or in flight: the next best
        finally:
            for index, entry in skipped:
                value[index] = entry
        raise ValueError("least-stale-predicted: no candidate is a resident it knows")

    # the interface's ExpertKey hooks: the key's id once, then the same code -----------------------------------
    @cython.locals(prefetched=cython.bint)
    def on_insert(self, key: ExpertKey, prefetched: bool) -> None:
        self._insert(self._number(key), prefetched)

    def on_access(self, key: ExpertKey) -> None:
        self._access(self._number(key))

    def on_late(self, key: ExpertKey) -> None:
        self._late.add(self._number(key))  # its use (on_access, next) is not one the prefetcher spared: no recall

    def on_prefetch(self, key: ExpertKey) -> None:
        self._prefetched(self._number(key))

    def on_evict(self, key: ExpertKey) -> None:
        self._evict(self._number(key))

    def victim(self, candidates) -> ExpertKey:
        self._cmode, self._cobj = KEEP_INSIDE, candidates
        return self._keys[self._victim()]

    @cython.locals(count=cython.Py_ssize_t, n=cython.longlong)
    def victims(self, count: int, excluded: Container[ExpertKey]) -> list[ExpertKey]:
        """`count` victim() calls among the residents not in `excluded`, each evicted before the next (on_group does
        not evict them again): victims_ids by key."""
        self._cmode, self._cobj = SKIP_INSIDE, excluded
        chosen = []
        for _ in range(count):
            n = self._victim()
            self._evict(n)
            chosen.append(self._keys[n])
        return chosen

    @cython.locals(n=cython.longlong)
    def on_group(self, keys: Sequence[ExpertKey], misses: Sequence[ExpertKey], victims: Sequence[ExpertKey]) -> None:
        """on_group_ids by key: the group's hooks in its order (a miss's insert, then its access)."""
        for key in victims:
            n = self._number(key)
            if self._last[n]:  # not chosen by victims() (which evicts its choices)
                self._evict(n)
        missing = {self._number(key) for key in misses}
        for key in keys:
            n = self._number(key)
            if n in missing:
                self._insert(n, False, True)
            self._access(n)

    def next_use(self, key: ExpertKey) -> float:
        """Predicted layers until the next demand request of a resident `key` (the heuristic)."""
        return self._next_use(self._number(key))

    @cython.locals(n=cython.longlong)
    def state_of(self, key: ExpertKey) -> dict:
        """What the policy holds about `key` now, for tests and debugging: its tick (None unless resident), its
        frequency at this pass, its forwarded probability in this pass as the policy reads it (None if none), its
        forecast bin (None if none)."""
        n = self._number(key)
        return {
            "tick": self._last[n] or None,
            "frequency": self._frequency(n),
            "probability": self._prob[n] if self._has_prob[n] else None,
            "forecast": self._forecast.get(n),
        }


class LeastStalePredicted(_Core, EvictionPolicy):
    name = "least-stale-predicted"
    uses_current_routing = True  # drivers forward layer l's routed experts as probability 1 at layer start
    batched = True  # a group's hooks touch only its own keys (see victims_ids); tests/runtime/test_batched_requests.py
    batched_ids = True  # and the cache may ask `id_order` (the policy itself) by id (runtime/expert_cache.py)
    routes_ids = True  # `on_routed_ids` hears a layer's routing by id

    def __init__(
        self,
        num_layers: int | None = None,
        threshold: float = 0.5,
        half_life: float = 16.0,
        min_frequency: float = 0.01,
        calibration_half_life: float = 1024.0,
        split: bool = False,
        calibrate_trust: bool = True,
        proposal_weight: float = 0.25,
        recall_weighting: bool = True,
    ) -> None:
        if not 0.0 <= proposal_weight <= 1.0:
            raise ValueError(f"least-stale-predicted: proposal_weight must be in [0, 1], got {proposal_weight!r}")
        self.proposal_weight = float(proposal_weight)
        self.recall_weighting = recall_weighting
        self._set_layers(num_layers)
        self.split = split
        # without the split every resident lives in the STALE groups (one set of heaps per layer); with it, the
        # ones touched in this pass live in the CURRENT groups
        self._touched = CURRENT if split else STALE
        self._all_due = False  # victim()'s fallback: also the current layer's sure uses
        self.threshold = threshold
        self.decay = 0.5 ** (1.0 / half_life)
        self._log_decay = math.log(self.decay)
        self._start_decay()
        self.min_frequency = min_frequency
        self._seen_layers = 0
        self._pass = 0
        self._layer = 0
        self._tick = 0
        self._stamp = 0
        # the key table the cache adopts, and the per-id state (`_Core._start_ids`); accessed ids whose heap entry is
        # not made yet are listed once (a key accessed again before the next victim() gets one entry, made with its
        # last tick, not one per access)
        self.key_ids = KeyIds()
        self.id_order = self  # the cache asks the policy itself by id
        self._start_ids(self.key_ids)
        self._proposed: set[int] = set()  # this pass: counted only as a prefetcher's choice so far
        self._groups: tuple[list[_Group], list[_Group]] = ([], [])
        # (made with the per-id state) `_prob_pending`: ids whose probability entry is due (made at the next victim():
        # only victim reads those heaps, and every event that changes an entry's order key re-marks the key, so the
        # entry made then is the one an immediate push would have left valid; the runtime's decode path then does no
        # heap work per prediction); `_prob_deferred`: marked ids whose probability entry no victim() reads while the
        # clock does not move back: without the split, the current layer's sure uses (skipped unless nothing else is
        # left). Made when the clock moves back, when L changes, or for victim()'s fallback. Marks of layers behind
        # the clock are simply dropped (victim() reads only the frequency heaps there); when the clock moves back,
        # the forwarded keys of the layers it passes are marked again. Most of a pass's forwarded routing then never
        # needs a heap entry.
        self._version = 0  # the latest head version (`_Core._head_version`)
        # learned next use: the table of this pass, flat [L * E], and once a table came, per (j, e) of it the
        # state (0 absent, 1 stale, 2 current) and tick, kept up to date by every hook so a victim is a few
        # vectorized operations instead of a pass over the residents in Python
        self._table: np.ndarray | None = None
        self._table_layer = 0  # the clock layer the latest table was made at
        self._table_pass = 0  # and its pass
        self._due: set[int] = set()  # table mode: keys forwarded with p >= threshold (or prefetched) this pass
        self._flat_shape: tuple[int, int] | None = None
        self._flat_value: np.ndarray | None = None  # per (j, e): its table entry if resident, else -inf
        self._flat_tick: np.ndarray | None = None
        self._flat_ids: list[int] = []  # per (j, e): its id
        self._outside: set[int] = set()  # residents outside the table's shape: never predicted, farthest
        # calibration of the predicted wait (see `_calibrate`): decayed sums over observed reuses of the predicted
        # gap g_hat = 1 / f and the realized gap g, in passes; wait = L (shift + slope g_hat)
        self._calibration_decay = 0.5 ** (1.0 / calibration_half_life)
        self._n = self._sx = self._sy = self._sxx = self._sxy = 0.0  # n, sum g_hat, sum g, sum g_hat^2, sum g_hat g
        self._slope = 1.0
        self._shift = -1.0
        # the same calibration for a learned table's wait (see `_calibrate_table`): per reuse, the table's predicted
        # extra passes x = g - 1 (from the first table after that use) against the realized extra passes
        # y = min(gap - 1, memory); entries are mapped to o + L a + b (entry - o) at on_next_use
        self._table_sums = [0.0] * 5  # n, sum x, sum y, sum x^2, sum x y
        self._table_slope = 1.0
        self._table_shift = 0.0
        self._predicted_extra: dict[int, float] = {}  # id -> the table's x after its latest use
        self._just_used: list[int] = []  # first uses of this pass since the latest table
        self._evictions = 0  # in this pass
        self._eviction_rate = 0.0  # evictions per pass, moving average (half-life `half_life` passes)
        self._memory = math.inf  # passes a resident stays (Little's law: residents / evictions per pass)
        # trust in forecasts (see `_calibrate_trust`): per bin (probability bin, + TRUST_BINS when the prefetcher
        # chose the key), decayed counts of forecasts for a later layer of the pass and of those the pass used
        self.calibrate_trust = calibrate_trust
        self._forecast: dict[int, int] = {}  # this pass: id -> bin of its latest forecast
        # (made with the per-id state) per bin: decayed counts, the prior and the calibrated probability; per layer:
        # decayed counts of first uses in a pass, and of those the prefetcher had chosen (its recall); decayed counts
        # of first uses that found a prefetched copy, and of those that found it in flight
        self._late: set[int] = set()  # this pass: keys whose demand found their prefetch copy in flight
        self._grow(num_layers or 0)


class LeastStalePredictedHeuristic(LeastStalePredicted):
    """least-stale-predicted with its hand-made next use only: learned next-use tables are ignored, so that a
    report can show the two side by side under the same prefetcher (they are the same policy without a table)."""

    name = "least-stale-predicted-heuristic"
    batched = True  # declared here too: a subclass inherits the per-request path otherwise
    batched_ids = True
    routes_ids = True

    # tables are ignored: the base class's no-op, so that runtime.offload sees an evictor that does not read them
    # and does not run the predictor's next-use head at all
    on_next_use = EvictionPolicy.on_next_use
