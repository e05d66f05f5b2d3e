"""The expert cache's books: which ExpertKey sits in which device slot, pins, in-flight copies, counters.

Shared unchanged by the trace simulator (`eval/simulate.py`) and the real GPU cache (`runtime/`): this class
moves no tensors, it only decides slots; the caller copies weights into the slot it is given. The eviction
policy (`runtime/policies/`) only orders; every count lives here.

    cache = ExpertCache(num_slots=64, eviction=make_eviction("lru"), expert_bytes=adapter.expert_bytes())
    cache.start_pass(); cache.start_layer(0)
    access = cache.request(ExpertKey(0, 5))   # Access(slot, "hit" | "late" | "miss"); on a miss copy into slot
    misses = cache.request_group(keys)        # one layer's keys at once (pinned): [(key, slot)] to copy, or None
    slot = cache.prefetch(ExpertKey(2, 7))    # slot to copy into, or None (already resident / nothing evictable)
    cache.complete(ExpertKey(2, 7))           # that copy finished

Definitions (../shared/DESIGN.md section 4): a "late" access finds the key resident but its prefetch copy still in
flight (a miss for stall time, counted apart from `misses`); a collision miss is a miss on a key evicted
earlier in the same pass. Prefetch precision = prefetches_used / prefetches_issued; prefetch recall =
prefetches_used / (prefetches_used + misses), the share of would-be misses a prefetch covered.

The books, one set for both paths: residency is the insertion-ordered ExpertKey -> slot dict (mirrored by id in
`_resident`, the slot + 1 while resident, so that a group tests residency without hashing its key twice); everything
else is kept by dense int id (runtime/key_ids.py, a table shared with the policy: a key gets
its id at its first request) in int arrays. A policy whose class declares `batched_ids` is asked by id on the batched
path (ints only, no ExpertKey per request); ExpertKey stays the API, and the per-request hooks convert once. The
module is Cython's pure-Python mode: `pip install -e .` compiles it (runtime/compiled.py), and the same .py runs
interpreted.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

import cython

from runtime.key_ids import KeyIds, grown, int_array
from specmd_predict.policies import EvictionPolicy
from specmd_predict.routing import ExpertKey

if TYPE_CHECKING:
    import torch

HIT, LATE, MISS = "hit", "late", "miss"


def hit_rate(hits: int, misses: int, late_prefetches: int) -> float:
    """Hits per demand request: a late prefetch is a request but not a hit (../shared/DESIGN.md section 4)."""
    requests = hits + misses + late_prefetches
    return hits / requests if requests else 0.0


class CounterRates:
    """The one definition of the rates derived from counters, shared by the cache's books (`CacheStats`) and
    the runtime's report (`runtime.stats.OffloadStats`, `LayerStats`): whatever has `hits`, `misses` and
    `late_prefetches` (and, for the prefetch rates, `prefetches_issued` / `prefetches_used`)."""

    hits: int
    misses: int
    late_prefetches: int

    @property
    def requests(self) -> int:
        return self.hits + self.misses + self.late_prefetches

    @property
    def hit_rate(self) -> float:
        return hit_rate(self.hits, self.misses, self.late_prefetches)

    @property
    def prefetch_precision(self) -> float:
        return self.prefetches_used / self.prefetches_issued if self.prefetches_issued else 0.0

    @property
    def prefetch_recall(self) -> float:
        covered = self.prefetches_used + self.misses
        return self.prefetches_used / covered if covered else 0.0


class Access(NamedTuple):
    """Answer to a demand request: the slot holding the expert, and how it got there."""

    slot: int
    status: str  # "hit" | "late" | "miss"


@dataclass
class CacheStats(CounterRates):
    """Counters of one cache. Demand outcomes are kept per layer only (the totals are their sums), which
    keeps the per-request path to one list increment; the lists grow to the highest layer seen."""

    layer_hits: list[int] = field(default_factory=list)
    layer_misses: list[int] = field(default_factory=list)
    layer_late: list[int] = field(default_factory=list)
    layer_collisions: list[int] = field(default_factory=list)
    evictions: int = 0
    prefetches_issued: int = 0
    prefetches_used: int = 0
    prefetches_wasted: int = 0  # evicted before any demand request used them
    bytes_moved: int = 0

    @property
    def num_layers(self) -> int:
        return len(self.layer_hits)

    def grow(self, num_layers: int) -> None:
        extra = num_layers - len(self.layer_hits)
        if extra > 0:  # in place: the cache holds references to these lists
            for counts in (self.layer_hits, self.layer_misses, self.layer_late, self.layer_collisions):
                counts.extend([0] * extra)

    @property
    def hits(self) -> int:
        return sum(self.layer_hits)

    @property
    def misses(self) -> int:
        return sum(self.layer_misses)

    @property
    def late_prefetches(self) -> int:
        return sum(self.layer_late)

    @property
    def collision_misses(self) -> int:
        return sum(self.layer_collisions)

    def layer_collision_rate(self) -> list[float]:
        """Collision misses per demand request, per layer."""
        columns = zip(self.layer_hits, self.layer_misses, self.layer_late, self.layer_collisions, strict=True)
        return [c / (h + m + lt) if h + m + lt else 0.0 for h, m, lt, c in columns]

    def merge(self, other: CacheStats) -> CacheStats:
        """Sum of two caches' counters (per-layer layouts report one total)."""
        out = CacheStats()
        for name in ("evictions", "prefetches_issued", "prefetches_used", "prefetches_wasted", "bytes_moved"):
            setattr(out, name, getattr(self, name) + getattr(other, name))
        out.grow(max(self.num_layers, other.num_layers))
        for name in ("layer_hits", "layer_misses", "layer_late", "layer_collisions"):
            mine, theirs, total = getattr(self, name), getattr(other, name), getattr(out, name)
            for i, v in enumerate(mine):
                total[i] += v
            for i, v in enumerate(theirs):
                total[i] += v
        return out

    def as_dict(self) -> dict:
        return {
            "requests": self.requests,
            "hits": self.hits,
            "misses": self.misses,
            "late_prefetches": self.late_prefetches,
            "collision_misses": self.collision_misses,
            "evictions": self.evictions,
            "hit_rate": self.hit_rate,
            "prefetches_issued": self.prefetches_issued,
            "prefetches_used": self.prefetches_used,
            "prefetches_wasted": self.prefetches_wasted,
            "prefetch_precision": self.prefetch_precision,
            "prefetch_recall": self.prefetch_recall,
            "bytes_moved": self.bytes_moved,
            "layer_hits": list(self.layer_hits),
            "layer_misses": list(self.layer_misses),
            "layer_late": list(self.layer_late),
            "layer_collisions": list(self.layer_collisions),
            "layer_collision_rate": self.layer_collision_rate(),
        }


class _Evictable(Collection):
    """Live view of the residents a policy may evict (not pinned, no copy in flight); built in O(1)."""

    __slots__ = ("_slot", "_cache")

    def __init__(self, slot: dict, cache: _Books) -> None:
        self._slot, self._cache = slot, cache

    def __contains__(self, key: object) -> bool:
        return self._cache._evictable_key(key)

    def __iter__(self) -> Iterator[ExpertKey]:
        self._cache._sync()
        evictable = self._cache._evictable_key
        return (k for k in self._slot if evictable(k))

    def __len__(self) -> int:
        return sum(1 for _ in self)


# bits of an id's prefetch flags: its copy is in flight / it awaits its first demand (C constants when compiled)
IN_FLIGHT = cython.declare(cython.longlong, 1)
UNUSED = cython.declare(cython.longlong, 2)


@cython.cclass
class _Books:
    """The books of `ExpertCache` (below; this base is what compiles to a C type): residency in `_slot`, the one
    insertion-ordered ExpertKey -> slot dict (`slots`, and victim()'s candidates in that order); the rest by dense
    int id (runtime/key_ids.py, the table shared with an id-keyed policy): pin counts, prefetch flags, the epoch of
    the last eviction (collision misses), the stamp of the last group that requested the id.

    The simulator's id path (`request_ids`) leaves the dict and the counters behind: its evictions and insertions
    are written by id only, and logged (`_lag_out`, `_lag_in`), its counts go to C tallies; whatever reads or writes
    the dict or reads the stats first brings both up to date (`_sync`), the dict in the order the per-key writes
    would have left it. A replay that never looks at them between layers (the simulator without prefetch) then hashes
    no ExpertKey and adds no Python int per group."""

    num_slots = cython.declare(cython.Py_ssize_t, visibility="public")
    expert_bytes = cython.declare(object, visibility="public")
    eviction = cython.declare(object, visibility="public")
    pass_id = cython.declare(object, visibility="public")
    layer = cython.declare(object, visibility="public")
    _stats = cython.declare(object)
    _num_layers = cython.declare(cython.Py_ssize_t)
    _layer_hits = cython.declare(list)
    _layer_misses = cython.declare(list)
    _layer_collisions = cython.declare(list)
    _on_access = cython.declare(object)
    _on_layer_start = cython.declare(object)
    _batched = cython.declare(cython.bint)
    _order = cython.declare(object)  # the policy's id-level order (victims_ids / on_group_ids), or None
    _order_victims = cython.declare(object)  # its victims_ids and on_group_ids, bound once (a call per group each)
    _order_group = cython.declare(object)
    _id_path = cython.declare(cython.bint)  # request_group asks `_order` (ids) instead of the policy (keys)
    routes_ids = cython.declare(cython.bint, visibility="readonly")  # a group's routing is heard by id (below)
    _order_routed = cython.declare(object)  # the order's on_routed_ids, bound once
    _routing = cython.declare(object)  # keys announced by hear_routing, not heard yet (None: none)
    _hit_access = cython.declare(list)
    _miss_access = cython.declare(list)
    _watch = cython.declare(cython.bint)  # a prefetched key is in flight or awaits its first demand
    _slot = cython.declare(dict)  # ExpertKey -> slot: residency, insertion-ordered
    _free = cython.declare(list)
    _table = cython.declare(object)  # the KeyIds shared with an id-keyed policy (it numbers new keys)
    _id = cython.declare(dict)  # ExpertKey -> id (the table's)
    _keys = cython.declare(list)  # id -> ExpertKey
    _capacity = cython.declare(cython.Py_ssize_t)  # length of the per-id arrays
    _typed = cython.declare(cython.bint)
    _pins = cython.declare(cython.longlong[:])  # id -> pin count (the held group's pins are its stamp, below)
    _flags = cython.declare(cython.longlong[:])  # id -> IN_FLIGHT | UNUSED
    _resident = cython.declare(cython.longlong[:])  # id -> its slot + 1 while resident, else 0 (a group asks by id)
    _evicted_in = cython.declare(cython.longlong[:])  # id -> epoch of its last eviction
    _mark = cython.declare(cython.longlong[:])  # id -> stamp of the last group that requested it
    _gids = cython.declare(cython.longlong[:])  # the current group's ids, in request order
    _gmisses = cython.declare(cython.longlong[:])  # its misses' ids
    _gvictims = cython.declare(cython.longlong[:])  # its victims' ids (written by the policy's order)
    _gslots = cython.declare(cython.longlong[:])  # its victims' slots, in order
    _stamp = cython.declare(cython.longlong)
    _epoch = cython.declare(cython.longlong)  # one per pass: an eviction stamped with the current one collides
    _held = cython.declare(cython.bint)  # the last group (stamp `_stamp`) is pinned, one pin per key
    _held_count = cython.declare(cython.Py_ssize_t)
    _num_pinned = cython.declare(cython.Py_ssize_t)  # ids with a pin count > 0 (besides a held group)
    _pinned_ids = cython.declare(list)  # ids given a pin since nothing was pinned (unpin_all's work list)
    _num_in_flight = cython.declare(cython.Py_ssize_t)
    _num_unused = cython.declare(cython.Py_ssize_t)
    _evictable = cython.declare(object)
    _numbering = cython.declare(object)  # the trace numbering request_ids was last given (None: none yet)
    _trace_ids = cython.declare(cython.longlong[:])  # its key numbers, request by request
    _key_of = cython.declare(list)  # its number -> ExpertKey
    _xlate = cython.declare(cython.longlong[:])  # its number -> id in the table, 0: not yet numbered
    # the dict's lag behind request_ids (see the class docstring); an insertion's stamp counts the lagged ones
    _lagging = cython.declare(cython.bint)  # `_slot` misses the writes logged below
    _inserts = cython.declare(cython.longlong)  # lagged insertions so far
    _synced_at = cython.declare(cython.longlong)  # `_inserts` at the last sync: a higher stamp is not in `_slot`
    _inserted = cython.declare(cython.longlong[:])  # id -> stamp of its last lagged insertion
    _lag_in = cython.declare(cython.longlong[:])  # ids inserted while lagging, in order (stamps _synced_at + 1, ...)
    _lag_out = cython.declare(cython.longlong[:])  # ids evicted while lagging that are still in `_slot`
    _num_lag_in = cython.declare(cython.Py_ssize_t)
    _num_lag_out = cython.declare(cython.Py_ssize_t)
    # request_ids' counters, in C until `_sync` adds them to the stats (per layer, and evictions and demand copies)
    _lag_hits = cython.declare(cython.longlong[:])
    _lag_misses = cython.declare(cython.longlong[:])
    _lag_collisions = cython.declare(cython.longlong[:])
    _lag_evictions = cython.declare(cython.longlong)
    _lag_copies = cython.declare(cython.longlong)

    def __init__(
        self, num_slots: int, eviction: EvictionPolicy, expert_bytes: int = 1, num_layers: int | None = None
    ) -> None:
        if isinstance(num_slots, bool) or not isinstance(num_slots, int) or num_slots < 1:
            raise ValueError(f"ExpertCache needs at least 1 slot (one expert), got num_slots={num_slots!r}")
        if not isinstance(eviction, EvictionPolicy):
            raise TypeError(f"eviction must be an EvictionPolicy (see runtime.policies), got {type(eviction)}")
        self.num_slots = num_slots
        self.eviction = eviction
        self.expert_bytes = int(expert_bytes)
        self.pass_id = -1
        self.layer = -1
        # a policy that keeps the interface's no-op on_access costs no Python call per hit: a C builtin stands in
        overridden = type(eviction).on_access is not EvictionPolicy.on_access or "on_access" in vars(eviction)
        self._on_access = eviction.on_access if overridden else id
        hooked = type(eviction).on_layer_start is not EvictionPolicy.on_layer_start or "on_layer_start" in vars(
            eviction
        )
        self._on_layer_start = eviction.on_layer_start if hooked else None  # likewise, once per layer
        # the batched demand path (request_group): the policy's own class must declare it (a subclass that
        # changes a hook inherits the per-request path), and no per-instance victim() may stand in (a spy); the
        # id-level batched interface likewise only where the class itself declares `batched_ids`
        own = vars(type(eviction))
        self._batched = bool(own.get("batched")) and "victim" not in vars(eviction)
        table = getattr(eviction, "key_ids", None)
        if not isinstance(table, KeyIds):
            table = KeyIds()  # a policy without an id path: the books' own table
        self._table, self._id, self._keys = table, table.ids, table.keys
        table.on_new = self._fit_id  # a key the policy numbers itself (a forecast) fits the arrays, too
        self._order = getattr(eviction, "id_order", None)
        self._id_path = self._batched and bool(own.get("batched_ids")) and self._order is not None
        if self._id_path:
            self._order_victims, self._order_group = self._order.victims_ids, self._order.on_group_ids
        # the class promises that `id_order.on_routed_ids(n)` is on_predictions(dict.fromkeys(group, 1.0)) by id
        self.routes_ids = self._id_path and bool(own.get("routes_ids"))
        if self.routes_ids:
            self._order_routed = self._order.on_routed_ids
        self._typed = cython.compiled or bool(getattr(self._order, "typed", False))
        self._lagging = False
        stats = CacheStats()
        stats.grow(num_layers or 0)
        self._set_stats(stats)
        self._hit_access = [Access(slot, HIT) for slot in range(num_slots)]
        self._miss_access = [Access(slot, MISS) for slot in range(num_slots)]
        self._watch = False
        self._routing = None
        self._slot = {}
        self._free = list(range(num_slots - 1, -1, -1))  # pop() hands out slot 0 first
        self._capacity = 0
        self._gids = int_array(num_slots, 0, self._typed)
        self._gmisses = int_array(num_slots, 0, self._typed)
        self._gvictims = int_array(num_slots, 0, self._typed)
        self._gslots = int_array(num_slots, 0, self._typed)
        self._resize(max(64, 2 * len(self._keys)))
        self._stamp = 0
        self._epoch = 1
        self._held = False
        self._held_count = 0
        self._num_pinned = 0
        self._pinned_ids = []
        self._num_in_flight = 0
        self._num_unused = 0
        self._evictable = _Evictable(self._slot, self)
        self._numbering = None
        self._inserts = self._synced_at = 0
        self._lag_in = int_array(0, 0, self._typed)  # made at the first request_ids (a runtime cache never lags)
        self._lag_out = int_array(0, 0, self._typed)
        self._num_lag_in = self._num_lag_out = 0

    @property
    def stats(self) -> CacheStats:
        """The counters, up to date (request_ids' tallies added: read them here, not from a copy kept across it)."""
        self._sync()
        return self._stats

    @stats.setter
    def stats(self, stats: CacheStats) -> None:
        """Replacing the counters (e.g. a reset after warm-up) rebinds the hot path's references to them."""
        self._set_stats(stats)

    def _set_stats(self, stats: CacheStats) -> None:
        self._sync()  # the tallies so far belong to the counters they were made under
        self._stats = stats
        self._num_layers = stats.num_layers
        # the same list objects (grow extends in place)
        self._layer_hits, self._layer_misses = stats.layer_hits, stats.layer_misses
        self._layer_collisions = stats.layer_collisions
        self._lag_hits = int_array(self._num_layers, 0, self._typed)
        self._lag_misses = int_array(self._num_layers, 0, self._typed)
        self._lag_collisions = int_array(self._num_layers, 0, self._typed)
        self._lag_evictions = self._lag_copies = 0

    # ids -----------------------------------------------------------------------------------------------------
    @cython.locals(capacity=cython.Py_ssize_t)
    def _resize(self, capacity: int) -> None:
        """Per-id arrays of `capacity` entries (ids below it); the policy's order grows and rebinds to them."""
        typed = self._typed
        if self._capacity == 0:
            self._pins = int_array(capacity, 0, typed)
            self._flags = int_array(capacity, 0, typed)
            self._resident = int_array(capacity, 0, typed)
            self._evicted_in = int_array(capacity, 0, typed)
            self._mark = int_array(capacity, 0, typed)
            self._inserted = int_array(capacity, 0, typed)
        else:
            self._pins = grown(self._pins, capacity, 0, typed)
            self._flags = grown(self._flags, capacity, 0, typed)
            self._resident = grown(self._resident, capacity, 0, typed)
            self._evicted_in = grown(self._evicted_in, capacity, 0, typed)
            self._mark = grown(self._mark, capacity, 0, typed)
            self._inserted = grown(self._inserted, capacity, 0, typed)
        self._capacity = capacity
        if self._order is not None:
            self._order.grow(capacity)
            self._order.bind(self._mark, self._gids, self._gmisses, self._gvictims)

    def _fit_id(self, n: int) -> None:
        """The table just made id `n` (this cache's request, or the policy numbering a key itself): room for it."""
        if n >= self._capacity:
            self._resize(max(2 * self._capacity, n + 1))

    @cython.cfunc
    @cython.locals(n=cython.Py_ssize_t)
    @cython.returns(cython.longlong)
    def _new_id(self, key) -> int:
        n = self._table.number(key)
        if n >= self._capacity:
            self._resize(max(2 * self._capacity, n + 1))
        return n

    @cython.cfunc
    @cython.inline
    @cython.returns(cython.longlong)
    def _id_of(self, key) -> int:
        found = self._id.get(key)
        return self._new_id(key) if found is None else found

    @cython.cfunc
    @cython.inline
    @cython.locals(n=cython.longlong)
    @cython.returns(cython.bint)
    def _is_pinned_id(self, n: int) -> bool:
        return self._pins[n] > 0 or (self._held and self._mark[n] == self._stamp)

    def _evictable_key(self, key) -> bool:
        """Resident, not pinned, no copy in flight (the `_Evictable` view's test)."""
        found = self._id.get(key)
        if found is None or not self._resident[found]:
            return False
        n = found
        return not self._is_pinned_id(n) and not (self._flags[n] & IN_FLIGHT)

    @cython.ccall
    @cython.locals(i=cython.Py_ssize_t, n=cython.longlong, first=cython.longlong)
    @cython.boundscheck(False)
    @cython.wraparound(False)
    def _sync(self) -> None:
        """Bring `_slot` up to date with the writes request_ids logged: the keys that left go, then the keys that came
        and stayed, in the order they came (each at its last insertion): the dict the per-key writes would have left.
        Its counters go into the stats."""
        if not self._lagging:
            return
        for i in range(self._num_layers):
            if self._lag_hits[i] or self._lag_misses[i]:
                self._layer_hits[i] += self._lag_hits[i]
                self._layer_misses[i] += self._lag_misses[i]
                self._layer_collisions[i] += self._lag_collisions[i]
                self._lag_hits[i] = self._lag_misses[i] = self._lag_collisions[i] = 0
        self._stats.evictions += self._lag_evictions
        self._stats.bytes_moved += self._lag_copies * self.expert_bytes
        self._lag_evictions = self._lag_copies = 0
        slot_map, keys_of = self._slot, self._keys
        for i in range(self._num_lag_out):
            del slot_map[keys_of[self._lag_out[i]]]
        first = self._synced_at + 1  # the stamp of `_lag_in[0]`
        for i in range(self._num_lag_in):
            n = self._lag_in[i]
            if self._inserted[n] == first + i and self._resident[n]:
                slot_map[keys_of[n]] = self._resident[n] - 1
        self._num_lag_in = self._num_lag_out = 0
        self._synced_at = self._inserts
        self._lagging = False

    # clock ---------------------------------------------------------------------------------------------
    def start_pass(self) -> int:
        """Begin a new forward pass; returns its id (0, 1, ...)."""
        if self._routing is not None:
            self._hear_routing_now()
        self.pass_id += 1
        self.layer = -1
        self._epoch += 1
        self.eviction.on_pass_start(self.pass_id)
        return self.pass_id

    @cython.locals(layer=cython.Py_ssize_t)
    def start_layer(self, layer: int) -> None:
        """The pass moves on to MoE layer `layer`."""
        self._start_layer(layer)

    @cython.cfunc
    @cython.locals(layer=cython.Py_ssize_t)
    @cython.returns(cython.void)
    def _start_layer(self, layer: int) -> None:
        """start_layer's work (request_ids starts its layer with it: a C call, not a Python method lookup)."""
        if self._routing is not None:
            self._hear_routing_now()
        self.layer = layer
        if layer >= self._num_layers:
            self._grow(layer + 1)
        if self._on_layer_start is not None:
            self._on_layer_start(layer)

    # demand and prefetch -------------------------------------------------------------------------------
    @cython.locals(layer=cython.Py_ssize_t, n=cython.longlong)
    def request(self, key: ExpertKey) -> Access:
        """Demand request for `key`. On a miss, evicts if needed and inserts; the caller copies into the slot."""
        # The per-request hot path: one dict lookup, one list increment, one policy hook, a prebuilt Access;
        # prefetch bookkeeping only while some prefetched key awaits its first use.
        if self._routing is not None:
            self._hear_routing_now()
        if self._lagging:
            self._sync()
        slot = self._slot.get(key)
        layer = key[0]
        if layer >= self._num_layers:
            self._grow(layer + 1)
        if slot is not None:
            if self._watch:
                n = self._id[key]
                if self._flags[n]:
                    return self._request_prefetched(key, n, slot)
            self._layer_hits[layer] += 1
            self._on_access(key)
            return self._hit_access[slot]
        n = self._id_of(key)
        self._layer_misses[layer] += 1
        if self._evicted_in[n] == self._epoch:
            self._layer_collisions[layer] += 1
        slot = self._take_slot(key, True)
        self._stats.bytes_moved += self.expert_bytes
        self._slot[key] = slot
        self._resident[n] = slot + 1
        self.eviction.on_insert(key, False)
        self._on_access(key)
        return self._miss_access[slot]

    @cython.cfunc
    @cython.inline
    @cython.locals(num_keys=cython.Py_ssize_t)
    @cython.returns(cython.bint)
    def _can_batch(self, num_keys: int) -> bool:
        """Whether a group of `num_keys` may take the batched path: nothing pinned or in flight, the policy batched,
        at least one key and no more than the slots."""
        return (
            num_keys > 0
            and num_keys <= self.num_slots
            and not self._num_pinned
            and not self._held
            and not self._num_in_flight
            and self._batched
        )

    @cython.locals(
        num_keys=cython.Py_ssize_t,
        i=cython.Py_ssize_t,
        n=cython.longlong,
        num_misses=cython.Py_ssize_t,
        collisions=cython.Py_ssize_t,
        stamp=cython.longlong,
        epoch=cython.longlong,
        layer=cython.Py_ssize_t,
        gids=cython.longlong[:],
        gmisses=cython.longlong[:],
        mark=cython.longlong[:],
        evicted_in=cython.longlong[:],
        resident=cython.longlong[:],
        ids_of=dict,
    )
    @cython.boundscheck(False)
    @cython.wraparound(False)
    def request_group(self, keys: Sequence[ExpertKey], hold: bool = True) -> list[tuple[ExpertKey, int]] | None:
        """Demand requests for `keys` (distinct experts of one layer, ascending ids) in one call, all pinned until
        `unpin`/`unpin_all` (with `hold=False` the pins end with the call: a caller that copies the misses and
        computes nothing before the next request): the misses as (key, slot) to copy into, in order. Same counters,
        slots and policy state as pinning the residents and calling `request` per key
        (tests/runtime/test_batched_requests.py); None (nothing done) when that per-request path is needed: the
        policy is not batched, something is pinned, a prefetch copy is in flight (a demand may be late), or there
        are more keys than slots.

        A policy whose class declares `batched_ids` is asked by id (`id_order.victims_ids(count, stamp)`, then
        `id_order.on_group_ids(num_keys, num_misses, num_victims)` over the arrays bound to it), any other batched
        policy by ExpertKey (`victims`, `on_group`). A routing announced for these same keys (`hear_routing`) is heard
        by id once their ids are known, before any victim is chosen; for other keys, or when the call returns None, it
        is heard at once, first."""
        # The runtime's hot path (and the simulator's where a layer is not given by ids): ids once per key, then the
        # group's int work (`_settle`, compiled: C) and two calls on the policy.
        if self._lagging:
            self._sync()
        num_keys = len(keys)
        routed = self._routing is not None and self._routing is keys
        if self._routing is not None and not routed:
            self._hear_routing_now()
        if not self._can_batch(num_keys):
            if routed:
                self._hear_routing_now()
            return None
        self._routing = None
        layer = keys[0][0]
        if layer >= self._num_layers:
            self._grow(layer + 1)
        self._stamp += 1
        stamp, epoch = self._stamp, self._epoch
        ids_of = self._id
        gids, gmisses, resident = self._gids, self._gmisses, self._resident
        mark, evicted_in = self._mark, self._evicted_in
        num_misses = collisions = 0
        for i, key in enumerate(keys):
            found = ids_of.get(key)
            if found is None:
                n = self._new_id(key)
                mark, evicted_in, resident = self._mark, self._evicted_in, self._resident  # they may have grown
            else:
                n = found
            gids[i] = n
            mark[n] = stamp
            if not resident[n]:  # residency by id: one hash per key (its id), not a second one in the slot dict
                gmisses[num_misses] = n
                num_misses += 1
                if evicted_in[n] == epoch:
                    collisions += 1
        if routed:  # the announced routing, by id, before any victim is chosen
            self._order_routed(num_keys)
        return self._settle(layer, num_keys, num_misses, collisions, hold, keys)

    @cython.locals(
        layer=cython.Py_ssize_t,
        start=cython.Py_ssize_t,
        end=cython.Py_ssize_t,
        num_keys=cython.Py_ssize_t,
        i=cython.Py_ssize_t,
        t=cython.longlong,
        n=cython.longlong,
        num_misses=cython.Py_ssize_t,
        collisions=cython.Py_ssize_t,
        stamp=cython.longlong,
        epoch=cython.longlong,
        key_of=list,
    )
    @cython.boundscheck(False)
    @cython.wraparound(False)
    def request_ids(self, layer: int, numbering, start: int, end: int, routed: bool = False) -> int:
        """`start_layer(layer)`, then `request_group(keys, hold=False)` for that layer's keys given by a trace's own
        int numbering of its keys (no ExpertKey hashed): `numbering.trace_ids[start:end]` (int64: array.array("q")
        or numpy), the key of number t being `numbering.key_of[t]` (eval.trace.RequestIds). The books translate a
        number to their table's id once (`_xlate`, made again for another numbering), so keys get their ids in the
        order they are first requested, as by key. Returns the number of misses (their slots are in `slots`), or -1
        (nothing done but the layer's start) where request_group would return None or the policy is not asked by
        id: then the caller requests by key. `routed`: the keys are the layer's routing, for a policy that hears it by
        id (`routes_ids`; as `hear_routing(keys)` before `request_group(keys)`): heard before any victim is chosen,
        nothing heard when it returns -1."""
        if routed and not self.routes_ids:
            raise ValueError(f"{type(self.eviction).__name__} does not hear the routing by id (routes_ids)")
        self._start_layer(layer)
        num_keys = end - start
        if not self._id_path or not self._can_batch(num_keys):
            return -1
        if numbering is not self._numbering:
            self._numbering = numbering
            self._trace_ids = numbering.trace_ids
            self._key_of = numbering.key_of
            self._xlate = int_array(len(self._key_of), 0, self._typed)
        key_of = self._key_of
        if self._num_lag_in + num_keys > len(self._lag_in):  # (`_lag_out` holds no more: a victim per miss at most)
            if len(self._lag_in):
                self._sync()  # a full log: the dict catches up now, and the log starts again
            else:  # the first request_ids: a sync writes the dict at most twice per slot (a key that left, a key
                # that came and stayed), whatever the log holds, so this many events between syncs keep them rare
                self._lag_in = int_array(16 * self.num_slots + 1024, 0, self._typed)
                self._lag_out = int_array(16 * self.num_slots + 1024, 0, self._typed)
        self._lagging = True
        self._stamp += 1
        stamp, epoch = self._stamp, self._epoch
        # the arrays through `self`, not locals: compiled, a local memoryview costs two atomic updates of its
        # acquisition count, about as much as this loop's work on a decode layer (an id may grow them, too)
        num_misses = collisions = 0
        for i in range(num_keys):
            t = self._trace_ids[start + i]
            n = self._xlate[t]
            if n == 0:
                n = self._xlate[t] = self._id_of(key_of[t])
            self._gids[i] = n
            self._mark[n] = stamp
            if not self._resident[n]:
                self._gmisses[num_misses] = n
                num_misses += 1
                if self._evicted_in[n] == epoch:
                    collisions += 1
        if routed:  # the routing, by id, before any victim is chosen
            self._order_routed(num_keys)
        self._settle(layer, num_keys, num_misses, collisions, False, None)
        return num_misses

    @cython.cfunc
    @cython.locals(
        layer=cython.Py_ssize_t,
        num_keys=cython.Py_ssize_t,
        num_misses=cython.Py_ssize_t,
        collisions=cython.Py_ssize_t,
        hold=cython.bint,
        i=cython.Py_ssize_t,
        n=cython.longlong,
        num_evict=cython.Py_ssize_t,
        epoch=cython.longlong,
        claimed=cython.Py_ssize_t,
        slot=cython.Py_ssize_t,
        lag=cython.bint,
        slot_map=dict,
        keys_of=list,
        free=list,
        num_free=cython.Py_ssize_t,
        placed=list,
    )
    @cython.boundscheck(False)
    @cython.wraparound(False)
    def _settle(self, layer: int, num_keys: int, num_misses: int, collisions: int, hold: bool, keys):
        """The rest of a batched group, once its ids are in `_gids` (stamped) and its misses' in `_gmisses`: counters,
        victims, slots, the policy's update. `keys`: the group's ExpertKeys (request_group: returns the misses as
        (key, slot), and a policy without an id path is asked by key), or None (request_ids: returns None, and the dict
        lags: the slots are written and logged by id only)."""
        # the arrays through `self`, not locals (compiled, a local memoryview costs its acquisition: request_ids)
        epoch = self._epoch
        if hold:  # nothing was pinned: the group's pins are its stamp, one per key
            self._held = True
            self._held_count = num_keys
        lag = keys is None
        if self._num_unused:  # prefetched residents awaiting their first demand (nothing is in flight)
            claimed = 0
            for i in range(num_keys):
                n = self._gids[i]
                if self._flags[n] & UNUSED:
                    self._flags[n] &= ~UNUSED
                    claimed += 1
            self._claimed(claimed, True)
        keys_of = self._keys
        misses = None
        if not self._id_path:
            misses = [keys_of[self._gmisses[i]] for i in range(num_misses)]
        if not num_misses:
            self._count(layer, num_keys, 0, 0, 0, lag)
            if self._id_path:
                self._order_group(num_keys, 0, 0)
            else:
                self.eviction.on_group(keys, misses, ())
            return [] if keys is not None else None
        slot_map, free = self._slot, self._free
        num_free = len(free)
        num_evict = num_misses - num_free
        victims = ()
        if num_evict > 0:
            if self._id_path:
                if self._order_victims(num_evict, self._stamp) != num_evict:
                    self.unpin_all()
                    raise RuntimeError(f"{type(self.eviction).__name__} found fewer than {num_evict} victims")
            else:
                victims = self._key_victims(keys, num_evict)
            claimed = 0
            for i in range(num_evict):
                n = self._gvictims[i]
                if not self._resident[n]:
                    self.unpin_all()
                    raise RuntimeError(f"{type(self.eviction).__name__} chose {keys_of[n]}, which is not resident")
                self._gslots[i] = self._resident[n] - 1
                if not lag:
                    del slot_map[keys_of[n]]
                elif self._inserted[n] <= self._synced_at:  # in the dict: it leaves at the next sync
                    self._lag_out[self._num_lag_out] = n
                    self._num_lag_out += 1
                self._resident[n] = 0
                self._evicted_in[n] = epoch
                if self._flags[n] & UNUSED:
                    self._flags[n] &= ~UNUSED
                    claimed += 1
            if claimed:
                self._claimed(claimed, False)
        else:
            num_evict = 0
        self._count(layer, num_keys - num_misses, num_misses, collisions, num_evict, lag)
        # the misses take their slots in request order (the free ones first, lowest first, then the victims')
        placed = [] if keys is not None else None
        for i in range(num_misses):
            n = self._gmisses[i]
            slot = free.pop() if i < num_free else self._gslots[i - num_free]
            self._resident[n] = slot + 1
            if lag:  # request_ids: logged, the dict lags
                self._inserts += 1
                self._inserted[n] = self._inserts
                self._lag_in[self._num_lag_in] = n
                self._num_lag_in += 1
            else:
                key = keys_of[n]
                slot_map[key] = slot
                placed.append((key, slot))
        if self._id_path:
            self._order_group(num_keys, num_misses, num_evict)
        else:
            self.eviction.on_group(keys, misses, victims)
        return placed

    @cython.cfunc
    @cython.locals(
        layer=cython.Py_ssize_t,
        hits=cython.Py_ssize_t,
        misses=cython.Py_ssize_t,
        collisions=cython.Py_ssize_t,
        evictions=cython.Py_ssize_t,
        lag=cython.bint,
    )
    @cython.returns(cython.void)
    def _count(self, layer: int, hits: int, misses: int, collisions: int, evictions: int, lag: bool) -> None:
        """A group's counters: into the stats, or (`lag`: request_ids) into the C tallies `_sync` adds to them."""
        if lag:
            self._lag_hits[layer] += hits
            self._lag_misses[layer] += misses
            self._lag_collisions[layer] += collisions
            self._lag_evictions += evictions
            self._lag_copies += misses
            return
        if hits:
            self._layer_hits[layer] += hits
        if misses:
            self._layer_misses[layer] += misses
            self._stats.bytes_moved += misses * self.expert_bytes
        if collisions:
            self._layer_collisions[layer] += collisions
        if evictions:
            self._stats.evictions += evictions

    @cython.locals(i=cython.Py_ssize_t, num_evict=cython.Py_ssize_t)
    def _key_victims(self, keys, num_evict: int) -> list:
        """A key-batched policy's victims (its `victims`, checked), their ids written as the id path's are."""
        excluded = dict.fromkeys(keys)  # the group's residents are never its misses' victims
        victims = self.eviction.victims(num_evict, excluded)
        if (
            len(victims) != num_evict
            or not excluded.keys().isdisjoint(victims)
            or not all(map(self._slot.__contains__, victims))
        ):
            self.unpin_all()
            raise RuntimeError(
                f"{type(self.eviction).__name__} chose victims {victims!r}: not {num_evict} evictable residents"
            )
        for i in range(num_evict):
            self._gvictims[i] = self._id[victims[i]]
        return victims

    @cython.locals(count=cython.Py_ssize_t)
    def _claimed(self, count: int, used: bool) -> None:
        """`count` prefetched keys left the unused set: demanded now (`used`) or evicted now (wasted)."""
        if count:
            self._num_unused -= count
            if used:
                self._stats.prefetches_used += count
            else:
                self._stats.prefetches_wasted += count
            self._watch = self._num_in_flight > 0 or self._num_unused > 0

    @cython.locals(n=cython.longlong)
    def _request_prefetched(self, key: ExpertKey, n: int, slot: int) -> Access:
        stats = self._stats
        if self._flags[n] & IN_FLIGHT:
            stats.layer_late[key[0]] += 1
            access = Access(slot, LATE)
            self.eviction.on_late(key)
        else:
            stats.layer_hits[key[0]] += 1
            access = self._hit_access[slot]
        if self._flags[n] & UNUSED:
            self._flags[n] &= ~UNUSED
            self._claimed(1, True)
        self._on_access(key)
        return access

    def _grow(self, num_layers: int) -> None:
        self._stats.grow(num_layers)
        self._num_layers = self._stats.num_layers
        self._lag_hits = grown(self._lag_hits, self._num_layers, 0, self._typed)
        self._lag_misses = grown(self._lag_misses, self._num_layers, 0, self._typed)
        self._lag_collisions = grown(self._lag_collisions, self._num_layers, 0, self._typed)

    @cython.locals(n=cython.longlong)
    def prefetch(self, key: ExpertKey, score: float = 1.0) -> int | None:
        """Start a prefetch of `key`: the slot its copy must go to, or None if resident or nothing is evictable.

        The key counts as in flight (never a victim, a demand on it is "late") until `complete(key)`.
        `score` is the prefetch policy's confidence; the books do not use it (policies get it via predictions()).
        """
        if self._routing is not None:
            self._hear_routing_now()
        if self._lagging:
            self._sync()
        if key in self._slot:
            self.eviction.on_prefetch(key)
            return None
        slot = self._take_slot(key, False)
        if slot is None:
            return None
        n = self._id_of(key)
        if key[0] >= self._num_layers:
            self._grow(key[0] + 1)
        self._stats.prefetches_issued += 1
        self._stats.bytes_moved += self.expert_bytes
        self._slot[key] = slot
        self._resident[n] = slot + 1
        self._flags[n] = IN_FLIGHT | UNUSED
        self._num_in_flight += 1
        self._num_unused += 1
        self._watch = True
        self.eviction.on_insert(key, True)
        return slot

    @cython.locals(n=cython.longlong)
    def complete(self, key: ExpertKey) -> None:
        """The copy of `key` into its slot finished (no-op if none was in flight)."""
        found = self._id.get(key)
        if found is None:
            return
        n = found
        if self._flags[n] & IN_FLIGHT:
            self._flags[n] &= ~IN_FLIGHT
            self._num_in_flight -= 1
            self._watch = self._num_in_flight > 0 or self._num_unused > 0

    @cython.locals(i=cython.Py_ssize_t)
    def _unhold(self) -> None:
        """A held group's pins become ordinary pin counts (before a single pin or unpin changes one)."""
        if self._held:
            self._held = False
            for i in range(self._held_count):
                self._pin_id(self._gids[i])

    def pin(self, key: ExpertKey) -> None:
        """`key` is in use now: never a victim until as many `unpin` calls."""
        if key not in self:
            raise KeyError(f"cannot pin {key}: not resident")
        self._unhold()
        self._pin_id(self._id[key])

    @cython.cfunc
    @cython.inline
    @cython.locals(n=cython.longlong)
    @cython.returns(cython.void)
    def _pin_id(self, n: int) -> None:
        """One more pin on id `n` (counted among the pinned ids at its first)."""
        if self._pins[n] == 0:
            self._num_pinned += 1
            self._pinned_ids.append(n)
        self._pins[n] += 1

    @cython.locals(n=cython.longlong)
    def unpin(self, key: ExpertKey) -> None:
        self._unhold()
        found = self._id.get(key)
        if found is None:
            return
        n = found
        if self._pins[n] > 1:
            self._pins[n] -= 1
        elif self._pins[n] == 1:
            self._pins[n] = 0
            self._num_pinned -= 1
            if not self._num_pinned:
                self._pinned_ids.clear()

    @cython.locals(n=cython.longlong)
    def unpin_all(self) -> None:
        self._held = False
        if self._num_pinned:
            for n in self._pinned_ids:
                self._pins[n] = 0
            self._num_pinned = 0
        self._pinned_ids.clear()

    def predictions(self, probabilities: Mapping[ExpertKey, float]) -> None:
        """Forward predicted use probabilities of later-layer experts to the eviction policy."""
        if self._routing is not None:
            self._hear_routing_now()
        self.eviction.on_predictions(probabilities)

    def hear_routing(self, keys: Sequence[ExpertKey]) -> None:
        """The layer's routed experts, for the policy to hear as probability-1 predictions before its next victims
        (the driver's rule): at once (`on_predictions(dict.fromkeys(keys, 1.0))`), or, where the policy's class
        declares `routes_ids` (its `id_order.on_routed_ids` makes the same additions by id), inside the next
        `request_group` of these same keys, once their ids are known: no dict, no second lookup per key. Anything
        else the cache is asked first hears it at once, first. More keys than slots (several groups, none of them these
        keys) are heard at once."""
        if self._routing is not None:
            self._hear_routing_now()
        self._routing = keys
        if not (self.routes_ids and 0 < len(keys) <= self.num_slots):
            self._hear_routing_now()

    def _hear_routing_now(self) -> None:
        routing, self._routing = self._routing, None
        self.eviction.on_predictions(dict.fromkeys(routing, 1.0))

    def next_use(self, layer: int, next_LE: torch.Tensor) -> None:
        """Forward a predictor's next-use table ([L, E] layer-steps, made at MoE layer `layer`) to the policy."""
        self.eviction.on_next_use(layer, next_LE)

    # views ---------------------------------------------------------------------------------------------
    def resident(self) -> dict[ExpertKey, int]:
        """Copy of the residency map key -> slot."""
        self._sync()
        return dict(self._slot)

    @property
    def slots(self) -> Mapping[ExpertKey, int]:
        """The residency map key -> slot, not a copy (for drivers' hot paths; read it, never write it): live until
        the next `request_ids`, which lets it lag until it is asked for again."""
        self._sync()
        return self._slot

    @cython.locals(slot=cython.longlong)
    def slot_of(self, key: ExpertKey) -> int | None:
        slot = self._slot_plus_one(key)
        return slot - 1 if slot else None

    def __contains__(self, key: object) -> bool:
        return self._slot_plus_one(key) != 0

    @cython.cfunc
    @cython.returns(cython.longlong)
    def _slot_plus_one(self, key) -> int:
        """`_resident` of `key`'s id: its slot + 1 while resident, 0 if not (or never numbered)."""
        found = self._id.get(key)
        return 0 if found is None else self._resident[found]

    def __len__(self) -> int:
        return self.num_slots - len(self._free)  # a slot is free or holds a resident

    def is_in_flight(self, key: ExpertKey) -> bool:
        found = self._id.get(key)
        return found is not None and bool(self._flags[found] & IN_FLIGHT)

    def is_pinned(self, key: ExpertKey) -> bool:
        found = self._id.get(key)
        return found is not None and self._is_pinned_id(found)

    @property
    def num_in_flight(self) -> int:
        return self._num_in_flight

    @property
    def num_pinned(self) -> int:
        return self._num_pinned + (self._held_count if self._held else 0)

    @property
    def num_free(self) -> int:
        return len(self._free)

    def has_evictable(self) -> bool:
        """Whether some resident is neither pinned nor receiving a copy (an eviction could make room)."""
        return any(True for _ in self._evictable)

    # internals -----------------------------------------------------------------------------------------
    @cython.locals(n=cython.longlong)
    def _take_slot(self, key: ExpertKey, demand: bool) -> int | None:
        if self._free:
            return self._free.pop()
        busy = self._num_pinned or self._held or self._num_in_flight
        if busy and self.num_pinned + self._num_in_flight >= len(self._slot):
            if not self.has_evictable():
                if not demand:
                    return None
                raise ValueError(
                    f"expert cache of {self.num_slots} slots cannot take {key}: every resident is pinned or "
                    f"receiving a copy ({self.num_pinned} pinned, {self._num_in_flight} in flight); "
                    "give it more slots or unpin finished experts"
                )
        # with nothing pinned or in flight every resident is a candidate: hand over the dict (C-speed lookups)
        candidates = self._evictable if busy else self._slot.keys()
        victim = self.eviction.victim(candidates)
        slot = self._slot.pop(victim, None)
        if slot is None or not self._evictable_after_pop(victim):
            if slot is not None:
                self._slot[victim] = slot
            raise RuntimeError(f"{type(self.eviction).__name__} chose {victim}, which is not an evictable resident")
        n = self._id[victim]
        self._resident[n] = 0
        self._stats.evictions += 1
        self._evicted_in[n] = self._epoch
        if self._flags[n] & UNUSED:
            self._flags[n] &= ~UNUSED
            self._claimed(1, False)
        self.eviction.on_evict(victim)
        return slot

    @cython.locals(n=cython.longlong)
    def _evictable_after_pop(self, key) -> bool:
        n = self._id[key]
        return not self._is_pinned_id(n) and not (self._flags[n] & IN_FLIGHT)


class ExpertCache(_Books):
    """A fixed number of device slots for experts, with LRU-style books and a pluggable eviction order.

    A Python class over the compiled books (`_Books`): its instances keep a `__dict__`, so a caller (a test, a
    recorder) can still replace a method on one cache (`cache.request_group = spy`)."""
