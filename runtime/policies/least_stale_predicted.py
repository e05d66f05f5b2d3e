"""Least-Stale with predicted next use (this project's evictor, DESIGN.md section 4).

    make_eviction("least-stale-predicted", num_layers=16, threshold=0.5)

Same stale/current split as Least-Stale (stale victims first), but inside the chosen group the victim is the
resident whose *predicted next-use time* is farthest. At clock (pass p, layer l), for resident (j, e):
- within this pass, (j - l) layers ahead, if j >= l and the last forwarded probability (cache.predictions())
  is >= `threshold` (the driver forwards layer l's own routing as probability 1 once its router has run);
- otherwise in a later pass: the next sweep reaches j after (L - l + j) layers, and an expert used in a
  fraction f of passes waits about 1/f - 1 more passes, so t = L / f - l + j, with f smoothed as
  (passes used + 0.5) / (passes seen + 1).
Ties go to the least recently used. Predictions are cleared at each pass start (they describe one pass).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from specmd_predict.policies import EvictionPolicy
from specmd_predict.routing import ExpertKey


class LeastStalePredicted(EvictionPolicy):
    name = "least-stale-predicted"

    def __init__(self, num_layers: int | None = None, threshold: float = 0.5) -> None:
        self.num_layers = num_layers
        self.threshold = threshold
        self._seen_layers = 0
        self._pass = 0
        self._passes_seen = 0
        self._layer = 0
        self._tick = 0
        self._last: dict[ExpertKey, int] = {}
        self._last_pass: dict[ExpertKey, int] = {}
        self._passes_used: dict[ExpertKey, int] = {}  # passes with a demand use, over the whole run
        self._used_in_pass: dict[ExpertKey, int] = {}
        self._prob: dict[ExpertKey, float] = {}

    def on_pass_start(self, pass_id: int) -> None:
        self._pass = pass_id
        self._passes_seen += 1
        self._prob.clear()

    def on_layer_start(self, layer: int) -> None:
        self._layer = layer
        self._seen_layers = max(self._seen_layers, layer + 1)

    def on_predictions(self, probabilities: Mapping[ExpertKey, float]) -> None:
        self._prob.update(probabilities)

    def on_insert(self, key: ExpertKey, prefetched: bool) -> None:
        self._seen_layers = max(self._seen_layers, key[0] + 1)
        self._tick += 1
        self._last[key] = self._tick
        self._last_pass[key] = self._pass

    def on_access(self, key: ExpertKey) -> None:
        self._tick += 1
        self._last[key] = self._tick
        self._last_pass[key] = self._pass
        if self._used_in_pass.get(key) != self._pass:
            self._used_in_pass[key] = self._pass
            self._passes_used[key] = self._passes_used.get(key, 0) + 1

    def on_prefetch(self, key: ExpertKey) -> None:
        self._tick += 1
        self._last[key] = self._tick
        self._last_pass[key] = self._pass

    def on_evict(self, key: ExpertKey) -> None:
        del self._last[key]
        del self._last_pass[key]

    def next_use(self, key: ExpertKey) -> float:
        """Predicted layers until the next demand request of a resident `key`."""
        j, layer = key[0], self._layer
        if j >= layer and self._prob.get(key, 0.0) >= self.threshold:
            return j - layer
        freq = (self._passes_used.get(key, 0) + 0.5) / (self._passes_seen + 1)
        return (self.num_layers or self._seen_layers) / freq - layer + j

    def victim(self, candidates: Collection[ExpertKey]) -> ExpertKey:
        now, last_pass, last = self._pass, self._last_pass, self._last
        stale = [k for k in candidates if last_pass[k] < now]
        group = stale or list(candidates)
        next_use = self.next_use
        return max(group, key=lambda k: (next_use(k), -last[k]))
