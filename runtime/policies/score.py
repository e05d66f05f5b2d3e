"""Score-based eviction: the evictable resident with the lowest accumulated router score goes first.

    make_eviction("score", access_score=1.0)

Scores accumulate over the whole run (they survive eviction, like a popularity estimate): every predicted
probability forwarded through `cache.predictions()` adds to the expert's score, and every demand use adds
`access_score` (a router that selected the expert gave it that much). Ties go to the resident whose score
changed least recently. A heap of (score, tick, key) with lazy invalidation avoids scanning on each victim.
"""

from __future__ import annotations

import heapq
from collections.abc import Collection, Mapping

from specmd_predict.policies import EvictionPolicy
from specmd_predict.routing import ExpertKey


class ScoreBased(EvictionPolicy):
    name = "score"

    def __init__(self, access_score: float = 1.0) -> None:
        self.access_score = access_score
        self._score: dict[ExpertKey, float] = {}
        self._version: dict[ExpertKey, int] = {}  # residents only: an entry is valid iff it carries this tick
        self._heap: list[tuple[float, int, ExpertKey]] = []
        self._tick = 0

    def _push(self, key: ExpertKey) -> None:
        self._tick += 1
        self._version[key] = self._tick
        heapq.heappush(self._heap, (self._score.get(key, 0.0), self._tick, key))
        if len(self._heap) > 4 * len(self._version) + 64:
            self._heap = [(self._score.get(k, 0.0), t, k) for k, t in self._version.items()]
            heapq.heapify(self._heap)

    def on_insert(self, key: ExpertKey, prefetched: bool) -> None:
        self._push(key)

    def on_access(self, key: ExpertKey) -> None:
        self._score[key] = self._score.get(key, 0.0) + self.access_score
        self._push(key)

    def on_predictions(self, probabilities: Mapping[ExpertKey, float]) -> None:
        score, version = self._score, self._version
        for key, p in probabilities.items():
            score[key] = score.get(key, 0.0) + float(p)
            if key in version:
                self._push(key)

    def on_evict(self, key: ExpertKey) -> None:
        del self._version[key]

    def victim(self, candidates: Collection[ExpertKey]) -> ExpertKey:
        heap, version = self._heap, self._version
        skipped = []
        try:
            while heap:
                entry = heapq.heappop(heap)
                key = entry[2]
                if version.get(key) != entry[1]:
                    continue
                if key in candidates:
                    heapq.heappush(heap, entry)
                    return key
                skipped.append(entry)
            raise ValueError("score: no candidate is a resident it knows")
        finally:
            for entry in skipped:
                heapq.heappush(heap, entry)
