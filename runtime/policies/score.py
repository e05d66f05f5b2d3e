"""Score-based eviction: the evictable resident with the lowest accumulated router score goes first.

    make_eviction("score", access_score=1.0)

Scores accumulate over the whole run (they survive eviction, like a popularity estimate): every predicted
probability forwarded through `cache.predictions()` adds to the expert's score, and every demand use adds
`access_score` (a router that selected the expert gave it that much). Ties go to the resident whose score
changed least recently: the victim is the smallest (score, tick of the last change).

Cost (why the structure looks like this): a change only updates two dict entries; the heap of (score, tick, key)
is updated lazily, as in LFU (runtime/policies/lfu.py): scores (non-negative additions) and ticks only grow, so a
resident's newest entry is a lower bound of its current value; `victim` pushes an outdated top again at its
current value. A negative addition (never a probability) is pushed at once, which keeps the bound.
"""

from __future__ import annotations

import heapq
from collections.abc import Collection, Container, Mapping, Sequence

from runtime.policies.lfu import _Outside
from specmd_predict.policies import EvictionPolicy
from specmd_predict.routing import ExpertKey


class ScoreBased(EvictionPolicy):
    name = "score"
    batched = True  # a group's keys only change their own scores

    def __init__(self, access_score: float = 1.0) -> None:
        self.access_score = access_score
        self._score: dict[ExpertKey, float] = {}  # every expert ever scored (residents or not)
        self._version: dict[ExpertKey, int] = {}  # residents: tick of the last change of their score
        self._pushed: dict[ExpertKey, int] = {}  # residents: tick of their newest heap entry
        self._heap: list[tuple[float, int, ExpertKey]] = []  # (score, tick, key), lazy
        self._tick = 0

    def _push(self, key: ExpertKey) -> None:
        self._tick += 1
        self._version[key] = self._pushed[key] = self._tick
        heapq.heappush(self._heap, (self._score.get(key, 0.0), self._tick, key))
        if len(self._heap) > 4 * len(self._version) + 64:
            self._heap = [(self._score.get(k, 0.0), t, k) for k, t in self._version.items()]
            heapq.heapify(self._heap)
            self._pushed.update(self._version)

    def on_insert(self, key: ExpertKey, prefetched: bool) -> None:
        self._push(key)

    def on_access(self, key: ExpertKey) -> None:
        self._score[key] = self._score.get(key, 0.0) + self.access_score
        self._tick += 1
        self._version[key] = self._tick

    def on_predictions(self, probabilities: Mapping[ExpertKey, float]) -> None:
        score, version = self._score, self._version
        get = score.get
        for key, p in probabilities.items():
            p = float(p)
            score[key] = get(key, 0.0) + p
            if key in version:
                if p < 0.0:
                    self._push(key)  # a lower score: its entry must not stay above it
                else:
                    self._tick += 1
                    version[key] = self._tick

    def on_evict(self, key: ExpertKey) -> None:
        del self._version[key]
        del self._pushed[key]

    def _top(self, excluded: Container[ExpertKey], skipped: list) -> ExpertKey | None:
        """The current smallest key not in `excluded` (left in the heap), moving excluded ones to `skipped`."""
        heap, score, version, pushed = self._heap, self._score, self._version, self._pushed
        while heap:
            value, tick, key = heap[0]
            if pushed.get(key) != tick:
                heapq.heappop(heap)  # an older entry of a resident, or of an evicted key
                continue
            now_tick = version[key]
            if now_tick != tick:
                pushed[key] = now_tick
                heapq.heapreplace(heap, (score.get(key, 0.0), now_tick, key))  # outdated: to its current place
                continue
            if key in excluded:
                skipped.append(heapq.heappop(heap))
                continue
            return key
        return None

    def victim(self, candidates: Collection[ExpertKey]) -> ExpertKey:
        skipped: list = []
        try:
            key = self._top(_Outside(candidates), skipped)
        finally:
            for entry in skipped:
                heapq.heappush(self._heap, entry)
        if key is None:
            raise ValueError("score: no candidate is a resident it knows")
        return key

    def victims(self, count: int, excluded: Container[ExpertKey]) -> list[ExpertKey]:
        # _top inlined (the simulator's hot path); the chosen keys' entries are not put back: the cache evicts them
        heap, score, version, pushed = self._heap, self._score, self._version, self._pushed
        heappop = heapq.heappop
        chosen: list[ExpertKey] = []
        skipped: list = []
        while heap:
            value, tick, key = heap[0]
            if pushed.get(key) != tick:
                heappop(heap)
                continue
            now_tick = version[key]
            if now_tick != tick:
                pushed[key] = now_tick
                heapq.heapreplace(heap, (score.get(key, 0.0), now_tick, key))
                continue
            entry = heappop(heap)
            if key in excluded:
                skipped.append(entry)
                continue
            chosen.append(key)
            if len(chosen) == count:
                break
        for entry in skipped:
            heapq.heappush(heap, entry)
        return chosen

    def on_group(self, keys: Sequence[ExpertKey], misses: Sequence[ExpertKey], victims: Sequence[ExpertKey]) -> None:
        version, pushed, heap = self._version, self._pushed, self._heap
        for key in victims:
            del version[key], pushed[key]
        score, add = self._score, self.access_score
        get = score.get
        for key in keys:
            score[key] = get(key, 0.0) + add
        tick = self._tick
        version.update(zip(keys, range(tick + 1, tick + 1 + len(keys)), strict=True))
        self._tick = tick + len(keys)
        for key in misses:  # pushed at their value after this group's use: exact, never re-pushed for it
            tick = pushed[key] = version[key]
            heapq.heappush(heap, (score[key], tick, key))
        if len(heap) > 4 * len(version) + 64:
            self._heap = [(score.get(k, 0.0), t, k) for k, t in version.items()]
            heapq.heapify(self._heap)
            pushed.update(version)
