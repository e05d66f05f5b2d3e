"""Least-Stale with predicted next use (this project's evictor, DESIGN.md section 4).

    make_eviction("least-stale-predicted", num_layers=16, threshold=0.5)

Same stale/current split as Least-Stale (stale victims first), but inside the chosen group the victim is the
resident whose *predicted next-use time* (in layers) is farthest. At clock (pass p, layer l), resident (j, e),
L layers, f = the expert's recent share of passes that used it (an exponential moving average over passes
with half-life `half_life` passes, so it follows a sequence's topic; floored at `min_frequency`):
- j >= l with a forwarded probability (cache.predictions()) >= `threshold`, or prefetched in this pass
  (the prefetcher's top-k choice is itself the prediction): this pass, t = j - l;
- j >= l with a lower forwarded probability p: the expected wait, p (j - l) + (1 - p) t_later with
  t_later = (L - l + j) + L (1/f - 1), the wait if it is not used in this pass;
- j >= l with a forwarded probability for other experts of layer j but none for this one: t_later;
- j >= l with nothing forwarded for layer j (beyond the predictor's horizon): first chance this pass,
  t = (j - l) + L (1/f - 1), the expected wait of an expert used in a fraction f of passes;
- j < l: its layer is behind us, t = (L - l + j) + L (1/f - 1).
Drivers forward layer l's routing at layer start (`uses_current_routing`: requested experts 1, others 0).
Ties go to the least recently used. Predictions are cleared at each pass start (they describe one pass).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from specmd_predict.policies import EvictionPolicy
from specmd_predict.routing import ExpertKey


class LeastStalePredicted(EvictionPolicy):
    name = "least-stale-predicted"
    uses_current_routing = True  # drivers forward layer l's routed experts as probability 1 at layer start

    def __init__(
        self, num_layers: int | None = None, threshold: float = 0.5, half_life: float = 16.0,
        min_frequency: float = 0.01,
    ) -> None:
        self.num_layers = num_layers
        self.threshold = threshold
        self.decay = 0.5 ** (1.0 / half_life)
        self.min_frequency = min_frequency
        self._seen_layers = 0
        self._pass = 0
        self._layer = 0
        self._tick = 0
        self._last: dict[ExpertKey, int] = {}
        self._last_pass: dict[ExpertKey, int] = {}
        self._ema: dict[ExpertKey, float] = {}  # share of recent passes that used the expert, as of _used_in_pass
        self._used_in_pass: dict[ExpertKey, int] = {}
        self._prob: dict[ExpertKey, float] = {}
        self._predicted_layers: set[int] = set()  # layers with any forwarded probability in this pass
        self._extra_cache: dict[ExpertKey, float] = {}

    def on_pass_start(self, pass_id: int) -> None:
        self._pass = pass_id
        self._prob.clear()
        self._predicted_layers.clear()
        self._extra_cache.clear()  # frequencies decay per pass

    def on_layer_start(self, layer: int) -> None:
        self._layer = layer
        self._seen_layers = max(self._seen_layers, layer + 1)

    def on_predictions(self, probabilities: Mapping[ExpertKey, float]) -> None:
        self._prob.update(probabilities)
        self._predicted_layers.update({key[0] for key in probabilities})

    def on_insert(self, key: ExpertKey, prefetched: bool) -> None:
        self._seen_layers = max(self._seen_layers, key[0] + 1)
        self._tick += 1
        self._last[key] = self._tick
        self._last_pass[key] = self._pass
        if prefetched:
            self._expect(key)

    def _expect(self, key: ExpertKey) -> None:
        # The prefetcher chose this expert by rank (top-k) for a later layer of this pass: that choice is the
        # prediction. Its probability alone undersells it when routing is sharp (the 2nd..k-th experts of a
        # peaked router have small softmax mass yet are always selected), and evicting it would waste the copy.
        if key[0] > self._layer:
            self._prob[key] = 1.0
            self._predicted_layers.add(key[0])

    def on_access(self, key: ExpertKey) -> None:
        self._tick += 1
        self._last[key] = self._tick
        self._last_pass[key] = self._pass
        last = self._used_in_pass.get(key)
        if last != self._pass:
            decay = self.decay
            ema = self._ema.get(key, 0.0) * decay ** (self._pass - last) if last is not None else 0.0
            self._ema[key] = ema + (1.0 - decay)
            self._used_in_pass[key] = self._pass
            self._extra_cache.pop(key, None)

    def on_prefetch(self, key: ExpertKey) -> None:
        self._tick += 1
        self._last[key] = self._tick
        self._last_pass[key] = self._pass
        self._expect(key)

    def on_evict(self, key: ExpertKey) -> None:
        del self._last[key]
        del self._last_pass[key]

    def next_use(self, key: ExpertKey) -> float:
        """Predicted layers until the next demand request of a resident `key`."""
        j, layer = key[0], self._layer
        num_layers = self.num_layers or self._seen_layers
        last = self._used_in_pass.get(key)
        freq = self._ema[key] * self.decay ** (self._pass - last) if last is not None else 0.0
        freq = max(freq, self.min_frequency)
        extra_passes = num_layers * (1.0 / freq - 1.0)
        if j >= layer:
            p = self._prob.get(key)
            if p is None and j not in self._predicted_layers:
                return j - layer + extra_passes
            later = num_layers - layer + j + extra_passes
            if p is None:
                return later
            if p >= self.threshold:
                return j - layer
            return p * (j - layer) + (1.0 - p) * later
        return num_layers - layer + j + extra_passes

    def _extra(self, key: ExpertKey) -> float:
        """L (1/f - 1): the expected extra layers of waiting, cached until the pass ends or the key is used."""
        u = self._used_in_pass.get(key)
        freq = self._ema[key] * self.decay ** (self._pass - u) if u is not None else 0.0
        extra = (self.num_layers or self._seen_layers) * (1.0 / max(freq, self.min_frequency) - 1.0)
        self._extra_cache[key] = extra
        return extra

    def victim(self, candidates: Collection[ExpertKey]) -> ExpertKey:
        # one pass over the candidates with next_use inlined: this scan is the policy's cost per miss
        now, layer, last_pass, last = self._pass, self._layer, self._last_pass, self._last
        behind = (self.num_layers or self._seen_layers) - layer  # layers to the end of this pass
        prob, threshold, predicted_layers = self._prob, self.threshold, self._predicted_layers
        extra_of, compute_extra = self._extra_cache, self._extra
        best = None
        best_t, best_last, best_stale = -1.0, 0, False
        for key in candidates:
            stale = last_pass[key] < now
            if best_stale and not stale:
                continue  # a stale candidate exists: current ones cannot win
            extra = extra_of.get(key)
            if extra is None:
                extra = compute_extra(key)
            j = key[0]
            t = behind + j + extra  # not needed again in this pass
            if j >= layer:
                p = prob.get(key)
                if p is None:
                    if j not in predicted_layers:
                        t = j - layer + extra
                elif p >= threshold:
                    t = j - layer
                else:  # expected next use: this pass with probability p, else the later estimate
                    t = p * (j - layer) + (1.0 - p) * t
            if (stale and not best_stale) or t > best_t or (t == best_t and last[key] < best_last):
                best, best_t, best_last, best_stale = key, t, last[key], stale
        if best is None:
            raise ValueError("least-stale-predicted: no candidates")
        return best
