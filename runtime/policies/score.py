"""Score-based eviction: the evictable resident with the lowest accumulated router score goes first.

    make_eviction("score", access_score=1.0)

Scores accumulate over the whole run (they survive eviction, like a popularity estimate): every predicted
probability forwarded through `cache.predictions()` adds to the expert's score, and every demand use adds
`access_score` (a router that selected the expert gave it that much). Ties go to the least recently used.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from specmd_predict.policies import EvictionPolicy
from specmd_predict.routing import ExpertKey


class ScoreBased(EvictionPolicy):
    name = "score"

    def __init__(self, access_score: float = 1.0) -> None:
        self.access_score = access_score
        self._score: dict[ExpertKey, float] = {}
        self._last: dict[ExpertKey, int] = {}
        self._tick = 0

    def on_insert(self, key: ExpertKey, prefetched: bool) -> None:
        self._tick += 1
        self._last[key] = self._tick

    def on_access(self, key: ExpertKey) -> None:
        self._tick += 1
        self._last[key] = self._tick
        self._score[key] = self._score.get(key, 0.0) + self.access_score

    def on_predictions(self, probabilities: Mapping[ExpertKey, float]) -> None:
        score = self._score
        for key, p in probabilities.items():
            score[key] = score.get(key, 0.0) + float(p)

    def on_evict(self, key: ExpertKey) -> None:
        del self._last[key]

    def victim(self, candidates: Collection[ExpertKey]) -> ExpertKey:
        score, last = self._score, self._last
        return min(candidates, key=lambda k: (score.get(k, 0.0), last[k]))
