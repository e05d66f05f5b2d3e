"""Score-based eviction: the evictable resident with the lowest accumulated router score goes first.

    make_eviction("score", access_score=1.0)

Scores accumulate over the whole run (they survive eviction, like a popularity estimate): every predicted
probability forwarded through `cache.predictions()` adds to the expert's score, and every demand use adds
`access_score` (a router that selected the expert gave it that much). Ties go to the resident whose score
changed least recently: the victim is the smallest (score, tick of the last change).

Cost: the scores live in the shared indexed heap over key ids (runtime/policies/id_heap.py): a non-negative addition
only raises an id's score and tick (it moves down when it reaches the top), a negative one (never a probability) is
sifted at once; O(log n) per victim. Scores of experts the cache has not seen yet (no id) wait in `_pending` until
their first insert. The layer's own routing (probability 1 for each routed expert, the driver's rule) is heard by id
inside the cache's group call where it can (`routes_ids`, `IdHeap.on_routed_ids`): no dict per layer, no lookup per
key beyond the one the cache makes anyway.
"""

from __future__ import annotations

from collections.abc import Mapping

from runtime.policies.id_heap import HeapEviction
from specmd_predict.routing import ExpertKey


class ScoreBased(HeapEviction):
    name = "score"
    batched = True  # a group's keys only change their own scores
    batched_ids = True
    routes_ids = True  # the current routing may be heard by id inside the group (IdHeap.on_routed_ids)

    def __init__(self, access_score: float = 1.0) -> None:
        self.access_score = access_score
        self._pending: dict[ExpertKey, float] = {}  # scores of keys without an id yet
        super().__init__(add=access_score, reset=False, pending=self._pending)  # id -> score (residents or not)

    def on_insert(self, key: ExpertKey, prefetched: bool) -> None:
        n = self._ids[key]
        if self._pending:
            self._heap.add(n, self._pending.pop(key, 0.0))  # not in the heap yet: no tick
        self._heap.insert(n)

    def on_access(self, key: ExpertKey) -> None:
        self._heap.add(self._ids[key], self.access_score)

    def on_predictions(self, probabilities: Mapping[ExpertKey, float]) -> None:
        # each resident's tick moves too; a lower score is sifted at once
        self._heap.add_all(probabilities, self._pending)
