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
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

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

    __slots__ = ("_slot", "_pinned", "_in_flight")

    def __init__(self, slot: dict, pinned: dict, in_flight: set) -> None:
        self._slot, self._pinned, self._in_flight = slot, pinned, in_flight

    def __contains__(self, key: object) -> bool:
        return key in self._slot and key not in self._pinned and key not in self._in_flight

    def __iter__(self) -> Iterator[ExpertKey]:
        pinned, in_flight = self._pinned, self._in_flight
        return (k for k in self._slot if k not in pinned and k not in in_flight)

    def __len__(self) -> int:
        return sum(1 for _ in self)


class ExpertCache:
    """A fixed number of device slots for experts, with LRU-style books and a pluggable eviction order."""

    def __init__(
        self, num_slots: int, eviction: EvictionPolicy, expert_bytes: int = 1, num_layers: int | None = None
    ) -> None:
        if not isinstance(num_slots, int) or num_slots < 1:
            raise ValueError(f"ExpertCache needs at least 1 slot (one expert), got num_slots={num_slots!r}")
        if not isinstance(eviction, EvictionPolicy):
            raise TypeError(f"eviction must be an EvictionPolicy (see runtime.policies), got {type(eviction)}")
        self.num_slots = num_slots
        self.eviction = eviction
        self.expert_bytes = int(expert_bytes)
        stats = CacheStats()
        stats.grow(num_layers or 0)
        self.stats = stats
        # a policy that keeps the interface's no-op on_access costs no Python call per hit: a C builtin stands in
        overridden = type(eviction).on_access is not EvictionPolicy.on_access or "on_access" in vars(eviction)
        self._on_access = eviction.on_access if overridden else id
        hooked = type(eviction).on_layer_start is not EvictionPolicy.on_layer_start or "on_layer_start" in vars(
            eviction
        )
        self._on_layer_start = eviction.on_layer_start if hooked else None  # likewise, once per layer
        # the batched demand path (request_group): the policy's own class must declare it (a subclass that
        # changes a hook inherits the per-request path), and no per-instance victim() may stand in (a spy)
        self._batched = bool(vars(type(eviction)).get("batched")) and "victim" not in vars(eviction)
        self._hit_access = [Access(slot, HIT) for slot in range(num_slots)]
        self._miss_access = [Access(slot, MISS) for slot in range(num_slots)]
        self._watch = False  # True while a prefetched key is in flight or awaits its first demand
        self._slot: dict[ExpertKey, int] = {}
        self._free: list[int] = list(range(num_slots - 1, -1, -1))  # pop() hands out slot 0 first
        self._pinned: dict[ExpertKey, int] = {}  # key -> pin count
        self._in_flight: set[ExpertKey] = set()
        self._unused_prefetch: set[ExpertKey] = set()
        self._evicted_this_pass: set[ExpertKey] = set()
        self._evictable = _Evictable(self._slot, self._pinned, self._in_flight)
        self.pass_id = -1
        self.layer = -1

    @property
    def stats(self) -> CacheStats:
        return self._stats

    @stats.setter
    def stats(self, stats: CacheStats) -> None:
        """Replacing the counters (e.g. a reset after warm-up) rebinds the hot path's references to them."""
        self._stats = stats
        self._num_layers = stats.num_layers
        # the same list objects (grow extends in place)
        self._layer_hits, self._layer_misses = stats.layer_hits, stats.layer_misses
        self._layer_collisions = stats.layer_collisions

    # clock ---------------------------------------------------------------------------------------------
    def start_pass(self) -> int:
        """Begin a new forward pass; returns its id (0, 1, ...)."""
        self.pass_id += 1
        self.layer = -1
        self._evicted_this_pass.clear()
        self.eviction.on_pass_start(self.pass_id)
        return self.pass_id

    def start_layer(self, layer: int) -> None:
        """The pass moves on to MoE layer `layer`."""
        self.layer = layer
        if layer >= self._num_layers:
            self._grow(layer + 1)
        if self._on_layer_start is not None:
            self._on_layer_start(layer)

    # demand and prefetch -------------------------------------------------------------------------------
    def request(self, key: ExpertKey) -> Access:
        """Demand request for `key`. On a miss, evicts if needed and inserts; the caller copies into the slot."""
        # The hot path of the simulator (>= 1M requests/s): one dict lookup, one list increment, one policy
        # hook, a prebuilt Access; prefetch bookkeeping only while some prefetched key awaits its first use.
        slot = self._slot.get(key)
        layer = key[0]
        if layer >= self._num_layers:
            self._grow(layer + 1)
        if slot is not None:
            if self._watch and (key in self._in_flight or key in self._unused_prefetch):
                return self._request_prefetched(key, slot)
            self._layer_hits[layer] += 1
            self._on_access(key)
            return self._hit_access[slot]
        stats = self.stats
        stats.layer_misses[layer] += 1
        if key in self._evicted_this_pass:
            stats.layer_collisions[layer] += 1
        slot = self._take_slot(key, demand=True)
        stats.bytes_moved += self.expert_bytes
        self._slot[key] = slot
        self.eviction.on_insert(key, False)
        self._on_access(key)
        return self._miss_access[slot]

    def request_group(self, keys: Sequence[ExpertKey], hold: bool = True) -> list[tuple[ExpertKey, int]] | None:
        """Demand requests for `keys` (distinct experts of one layer, ascending ids) in one call, all pinned until
        `unpin`/`unpin_all` (with `hold=False` the pins end with the call: a caller that copies the misses and
        computes nothing before the next request): the misses as (key, slot) to copy into, in order. Same counters,
        slots and policy state as pinning the residents and calling `request` per key
        (tests/runtime/test_batched_requests.py); None (nothing done) when that per-request path is needed: the
        policy is not batched, something is pinned, a prefetch copy is in flight (a demand may be late), or there
        are more keys than slots."""
        # The simulator's hot path: a few C-level passes over the keys instead of Python per request; at ~8 keys a
        # layer the fixed cost per call matters as much, hence the hoisted references (benchmarks/simulator.py).
        num_keys = len(keys)
        if not num_keys or num_keys > self.num_slots or self._pinned or self._in_flight or not self._batched:
            return None
        slot_map = self._slot
        misses = [key for key in keys if key not in slot_map]
        pinned = None
        if hold:  # nothing was pinned: the group's pins are a fresh dict
            self._pinned = self._evictable._pinned = pinned = dict.fromkeys(keys, 1)
        layer = keys[0][0]
        if layer >= self._num_layers:
            self._grow(layer + 1)
        num_misses = len(misses)
        self._layer_hits[layer] += num_keys - num_misses
        if self._unused_prefetch:  # prefetched residents awaiting their first demand (nothing is in flight)
            self._stats.prefetches_used += self._claim_unused(keys)
        if not num_misses:
            self.eviction.on_group(keys, misses, ())
            return []
        evicted = self._evicted_this_pass
        if evicted:  # a miss evicted earlier in this pass is a collision (this group's victims are residents)
            collisions = len(evicted.intersection(misses))
            if collisions:
                self._layer_collisions[layer] += collisions
        free = self._free
        num_evict = num_misses - len(free)
        stats = self._stats
        if num_evict > 0:
            if pinned is None:
                pinned = dict.fromkeys(keys, 1)  # the group's residents are never its misses' victims
            victims = self.eviction.victims(num_evict, pinned)
            if len(victims) != num_evict or not pinned.keys().isdisjoint(victims):
                self.unpin_all()
                raise RuntimeError(
                    f"{type(self.eviction).__name__} chose victims {victims!r}: not {num_evict} evictable residents"
                )
            if free:
                slots = free[::-1]
                free.clear()
                slots.extend(map(slot_map.pop, victims))
            else:
                slots = list(map(slot_map.pop, victims))  # a KeyError here is a policy naming a non-resident
            stats.evictions += num_evict
            evicted.update(victims)
            if self._unused_prefetch:
                stats.prefetches_wasted += self._claim_unused(victims)
        else:
            victims = ()
            slots = [free.pop() for _ in misses]
        self._layer_misses[layer] += num_misses
        stats.bytes_moved += num_misses * self.expert_bytes
        placed = list(zip(misses, slots, strict=True))
        slot_map.update(placed)
        self.eviction.on_group(keys, misses, victims)
        return placed

    def _claim_unused(self, keys) -> int:
        """Take `keys` out of the prefetched-but-unused set (the batched path: nothing is in flight); how many were
        in it, to count as used (demanded now) or wasted (evicted now)."""
        unused = self._unused_prefetch
        claimed = unused.intersection(keys)
        if claimed:
            unused.difference_update(claimed)
            self._watch = bool(unused)
        return len(claimed)

    def _request_prefetched(self, key: ExpertKey, slot: int) -> Access:
        stats = self.stats
        if key in self._in_flight:
            stats.layer_late[key[0]] += 1
            access = Access(slot, LATE)
            self.eviction.on_late(key)
        else:
            stats.layer_hits[key[0]] += 1
            access = self._hit_access[slot]
        if key in self._unused_prefetch:
            self._unused_prefetch.discard(key)
            stats.prefetches_used += 1
        self._watch = bool(self._in_flight or self._unused_prefetch)
        self._on_access(key)
        return access

    def _grow(self, num_layers: int) -> None:
        self.stats.grow(num_layers)
        self._num_layers = self.stats.num_layers

    def prefetch(self, key: ExpertKey, score: float = 1.0) -> int | None:
        """Start a prefetch of `key`: the slot its copy must go to, or None if resident or nothing is evictable.

        The key counts as in flight (never a victim, a demand on it is "late") until `complete(key)`.
        `score` is the prefetch policy's confidence; the books do not use it (policies get it via predictions()).
        """
        if key in self._slot:
            self.eviction.on_prefetch(key)
            return None
        slot = self._take_slot(key, demand=False)
        if slot is None:
            return None
        stats = self.stats
        if key[0] >= self._num_layers:
            self._grow(key[0] + 1)
        stats.prefetches_issued += 1
        stats.bytes_moved += self.expert_bytes
        self._slot[key] = slot
        self._in_flight.add(key)
        self._unused_prefetch.add(key)
        self._watch = True
        self.eviction.on_insert(key, True)
        return slot

    def complete(self, key: ExpertKey) -> None:
        """The copy of `key` into its slot finished (no-op if none was in flight)."""
        self._in_flight.discard(key)
        self._watch = bool(self._in_flight or self._unused_prefetch)

    def pin(self, key: ExpertKey) -> None:
        """`key` is in use now: never a victim until as many `unpin` calls."""
        if key not in self._slot:
            raise KeyError(f"cannot pin {key}: not resident")
        self._pinned[key] = self._pinned.get(key, 0) + 1

    def unpin(self, key: ExpertKey) -> None:
        count = self._pinned.get(key, 0)
        if count <= 1:
            self._pinned.pop(key, None)
        else:
            self._pinned[key] = count - 1

    def unpin_all(self) -> None:
        self._pinned.clear()

    def predictions(self, probabilities: Mapping[ExpertKey, float]) -> None:
        """Forward predicted use probabilities of later-layer experts to the eviction policy."""
        self.eviction.on_predictions(probabilities)

    def next_use(self, layer: int, next_LE: torch.Tensor) -> None:
        """Forward a predictor's next-use table ([L, E] layer-steps, made at MoE layer `layer`) to the policy."""
        self.eviction.on_next_use(layer, next_LE)

    # views ---------------------------------------------------------------------------------------------
    def resident(self) -> dict[ExpertKey, int]:
        """Copy of the residency map key -> slot."""
        return dict(self._slot)

    @property
    def slots(self) -> Mapping[ExpertKey, int]:
        """The live residency map key -> slot, not a copy (for drivers' hot paths; read it, never write it)."""
        return self._slot

    def slot_of(self, key: ExpertKey) -> int | None:
        return self._slot.get(key)

    def __contains__(self, key: object) -> bool:
        return key in self._slot

    def __len__(self) -> int:
        return len(self._slot)

    def is_in_flight(self, key: ExpertKey) -> bool:
        return key in self._in_flight

    def is_pinned(self, key: ExpertKey) -> bool:
        return key in self._pinned

    @property
    def num_in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def num_pinned(self) -> int:
        return len(self._pinned)

    @property
    def num_free(self) -> int:
        return len(self._free)

    def has_evictable(self) -> bool:
        """Whether some resident is neither pinned nor receiving a copy (an eviction could make room)."""
        return any(True for _ in self._evictable)

    # internals -----------------------------------------------------------------------------------------
    def _take_slot(self, key: ExpertKey, demand: bool) -> int | None:
        if self._free:
            return self._free.pop()
        if len(self._pinned) + len(self._in_flight) >= len(self._slot):
            evictable = self._evictable
            if not any(True for _ in evictable):
                if not demand:
                    return None
                raise ValueError(
                    f"expert cache of {self.num_slots} slots cannot take {key}: every resident is pinned or "
                    f"receiving a copy ({len(self._pinned)} pinned, {len(self._in_flight)} in flight); "
                    "give it more slots or unpin finished experts"
                )
        # with nothing pinned or in flight every resident is a candidate: hand over the dict (C-speed lookups)
        candidates = self._evictable if self._pinned or self._in_flight else self._slot.keys()
        victim = self.eviction.victim(candidates)
        slot = self._slot.pop(victim, None)
        if slot is None or victim in self._pinned or victim in self._in_flight:
            if slot is not None:
                self._slot[victim] = slot
            raise RuntimeError(f"{type(self.eviction).__name__} chose {victim}, which is not an evictable resident")
        stats = self.stats
        stats.evictions += 1
        self._evicted_this_pass.add(victim)
        if victim in self._unused_prefetch:
            self._unused_prefetch.discard(victim)
            stats.prefetches_wasted += 1
            self._watch = bool(self._in_flight or self._unused_prefetch)
        self.eviction.on_evict(victim)
        return slot
