"""Score-based eviction: the evictable resident with the lowest accumulated router score goes first.

    make_eviction("score", access_score=1.0)

Scores accumulate over the whole run (they survive eviction, like a popularity estimate): every predicted
probability forwarded through `cache.predictions()` adds to the expert's score, and every demand use adds
`access_score` (a router that selected the expert gave it that much). Ties go to the resident whose score
changed least recently: the victim is the smallest (score, tick of the last change).

Cost: a change only updates two dict entries; the heap of (score, tick, key) is updated lazily, as in LFU
(runtime/policies/lazy_heap.py): scores (non-negative additions) and ticks only grow, so a resident's newest entry
is a lower bound of its current value. A negative addition (never a probability) is pushed at once, which keeps
the bound.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from runtime.policies.lazy_heap import LazyHeapEviction
from specmd_predict.routing import ExpertKey


class ScoreBased(LazyHeapEviction):
    name = "score"
    batched = True  # a group's keys only change their own scores

    def __init__(self, access_score: float = 1.0) -> None:
        self.access_score = access_score
        self._score: dict[ExpertKey, float] = {}  # every expert ever scored or inserted (residents or not)
        super().__init__(values=self._score)

    def on_insert(self, key: ExpertKey, prefetched: bool) -> None:
        self._score.setdefault(key, 0.0)
        self._push(key)

    def on_access(self, key: ExpertKey) -> None:
        self._score[key] = self._score.get(key, 0.0) + self.access_score
        self._touch(key)

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
                    self._touch(key)

    def _use_group(self, keys: Sequence[ExpertKey], victims: Sequence[ExpertKey]) -> None:
        score, add = self._score, self.access_score
        get = score.get
        for key in keys:
            score[key] = get(key, 0.0) + add
