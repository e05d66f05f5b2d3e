"""Score-based eviction: the evictable resident with the lowest accumulated router score goes first.

    make_eviction("score", access_score=1.0)

Scores accumulate over the whole run (they survive eviction, like a popularity estimate): every predicted
probability forwarded through `cache.predictions()` adds to the expert's score, and every demand use adds
`access_score` (a router that selected the expert gave it that much). Ties go to the resident whose score
changed least recently: the victim is the smallest (score, tick of the last change).

Cost: a change only updates two list entries (by key id); the heap of (score, tick, id) is updated lazily, as in
LFU (runtime/policies/lazy_heap.py): scores (non-negative additions) and ticks only grow, so a resident's newest
entry is a lower bound of its current value. A negative addition (never a probability) is pushed at once, which
keeps the bound. Scores of experts the cache has not seen yet (no id) wait in `_pending` until their first insert.
"""

from __future__ import annotations

from collections.abc import Mapping

import cython

from runtime.policies.lazy_heap import LazyHeapEviction
from specmd_predict.routing import ExpertKey


class ScoreBased(LazyHeapEviction):
    name = "score"
    batched = True  # a group's keys only change their own scores
    batched_ids = True

    def __init__(self, access_score: float = 1.0) -> None:
        self.access_score = access_score
        self._pending: dict[ExpertKey, float] = {}  # scores of keys without an id yet
        super().__init__(fill=0.0)  # id -> score (residents or not)

    def on_insert(self, key: ExpertKey, prefetched: bool) -> None:
        n = self._ids[key]
        if self._pending:
            self._values[n] += self._pending.pop(key, 0.0)
        self._push(n)

    def on_access(self, key: ExpertKey) -> None:
        n = self._ids[key]
        self._values[n] += self.access_score
        self._touch(n)

    def on_predictions(self, probabilities: Mapping[ExpertKey, float]) -> None:
        ids, score, version, pending = self._ids, self._values, self._version, self._pending
        for key, p in probabilities.items():
            p = float(p)
            n = ids.get(key)
            if n is None:
                pending[key] = pending.get(key, 0.0) + p
                continue
            score[n] += p
            if version[n]:  # resident
                if p < 0.0:
                    self._push(n)  # a lower score: its entry must not stay above it
                else:
                    self._touch(n)

    @cython.locals(n=cython.Py_ssize_t)
    def _use_group(self, ids: list, misses: list) -> None:
        score, add = self._values, self.access_score
        if self._pending:
            keys, pending = self._keys, self._pending
            for n in misses:
                score[n] += pending.pop(keys[n], 0.0)
        for n in ids:
            score[n] += add
