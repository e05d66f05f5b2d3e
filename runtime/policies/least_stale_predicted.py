"""Least-Stale with predicted next use (this project's evictor, ../shared/DESIGN.md section 4).

    make_eviction("least-stale-predicted", num_layers=16, threshold=0.5)
    make_eviction("least-stale-predicted", num_layers=16, split=True)   # stale victims first, as Least-Stale

The victim is the resident whose *predicted next-use time* (in layers) is farthest, ties to the least recently
used. With `split=True` it keeps Least-Stale's stale/current split (../shared/DESIGN.md section 4: stale victims
first, the farthest inside the chosen group). The default has no split because the next-use time below already
says what the split stands for (a current expert of a layer behind the clock waits for the next pass) and the
split overrides it where it is wrong (a current expert needed again only many passes later stays, a stale one
needed later in this pass goes): on the embedded model's validation trace, with no prefetch, dropping it raised the
hit rate at 5 / 10 / 25% capacity from 0.117 / 0.426 / 0.937 to 0.198 / 0.530 / 0.947 (Belady 0.261 / 0.636 /
0.964; 20 sequences), and it holds on the FLAME-MoE routing (README, "Real routing").
At clock (pass p, layer l), resident (j, e),
L layers, f = the expert's recent share of passes that used it (an exponential moving average over passes
with half-life `half_life` passes, so it follows a sequence's topic; floored at `min_frequency`), and
W(f) = L (g(f) - 1) the extra wait of an expert whose next use is g(f) passes away:
- j >= l with a forwarded probability (cache.predictions()) >= `threshold`, or prefetched in this pass
  (the prefetcher's top-k choice is itself the prediction): this pass, t = j - l;
- j >= l with a lower forwarded probability p: the expected wait, p (j - l) + (1 - p) t_later with
  t_later = (L - l + j) + W(f), the wait if it is not used in this pass;
- j >= l with a forwarded probability for other experts of layer j but none for this one: t_later;
- j >= l with nothing forwarded for layer j (beyond the predictor's horizon): first chance this pass,
  t = (j - l) + W(f);
- j < l: its layer is behind us, t = (L - l + j) + W(f).
g(f) is calibrated online (`_calibrate`): the frequency predicts g_hat = 1/f passes, and every reuse of an
expert checks that prediction against the gap that followed (capped at how long a resident stays: Little's
law, residents / evictions per pass, since a longer gap is a miss either way). The least-squares line
g = a + b g_hat over those reuses gives g(f) = max(a, 1 - b) + b / f, b in [MIN_TRUST, 1]: b = 1, a = 0 is the
plain 1/f (where frequencies are borne out); b near 0 where they say little about the next use within a
resident's stay (near-uniform routing, small caches), so the order falls back to the layer distance of the
next chance (least-stale-reverse's order, the current layer's unrouted experts first).
Drivers forward layer l's routing at layer start (`uses_current_routing`: requested experts 1, others 0).
Ties go to the least recently used. Predictions are cleared at each pass start (they describe one pass). From a pass
start to its first layer the clock is (p, -1): every layer is ahead, so the next token's layer-0 prefetch made there
(runtime/pass_start.py) is a use later in this pass like any other (it used to count as a layer behind the clock).
Trust in forecasts is calibrated online (`_calibrate_trust`, `calibrate_trust=True`): the probability forwarded for a
resident of a later layer is read as the measured share of such forecasts (same probability bin, same "chosen by the
prefetcher" or not) that the pass then used, and a prefetcher's choice counts as that share instead of 1. So a
predictor whose choices are mostly wrong (router reuse on random weights) no longer has its guesses kept as sure uses
while the working set goes.
A prefetcher's choice of a resident also counts in its frequency as a request of weight `proposal_weight` (0.25;
a demand use counts 1, once per pass): evicting an expert that the prefetcher keeps choosing costs a copy each
time it is chosen again (bytes, no stall), evicting one it never chooses costs a miss at its next use. Without it,
experts that router reuse proposes every pass but the model never uses were evicted as "never used" and copied
back the next pass (churn: examples/router_reuse_churn.py's random OLMoE at 25% copied 1.36 MB per token against
fld's 0.78; 1.07 with the weight; docs/results/least_stale.md). A chosen expert then used in the same pass counts
by what its use cost (`_top_up`): 1 if it waited for the copy (late, or a miss after an eviction), and if the copy
came in time, w + s (1 - w), s the share of its layer's prefetched uses that were late (measured online via
`on_late`): w where copies land at once (the runtime on a CPU), near 1 where they mostly come late (specmd-eval's
timed copies). A constant 1 cost the churn example 0.09 of hit rate at 5% and 10%; a constant w cost specmd-eval
up to 0.008 with router-reuse prefetch (docs/results/least_stale.md).

Learned next use: once the driver has forwarded a predictor's next-use table (`cache.next_use(layer, next_LE)`,
which calls `EvictionPolicy.on_next_use`), the victim is the resident with the largest entry of the latest table,
ties to the least recently used, with no stale/current split: the split is the heuristic's stand-in for "not
needed again in this pass", which the table measures directly, across pass boundaries (on the embedded model's
validation trace the split cost the learned order about half of its gain; docs/results/least_stale.md). A table
orders the victims until the next one comes: between tables the clock moves by whole layer-steps, which brings
every entry equally closer and keeps the order. `least-stale-predicted-heuristic` is the same policy ignoring
tables, for reports that show both.
A table's waits are calibrated online the way the frequency's are (`_calibrate_table`): every reuse of a key checks
the extra passes x the table predicted after its previous use against the realized extra passes y (capped at how
long a resident stays); with the least-squares line y = a + b x, an entry v at layer j from a table made at layer l
is read as o + L a + b (v - o), o the layer-steps to its next chance to be used (j - l ahead, L - l + j behind).
a = 0, b = 1 is the table as given; b near its floor (the waits say little about reuse within a resident's stay:
small caches) leaves the order of the next chance, least-stale-reverse's. Where it helps and where it does not:
docs/results/least_stale.md.
With a prefetcher, a resident's eviction only costs a miss if its next use is one the prefetcher does not foresee.
`recall_weighting=True` divides the entries of layer j by 1 - r_j, r_j the prefetcher's measured recall at that
layer (the share of its first uses in a pass that the prefetcher had chosen in time): if each use is foreseen with
probability r_j, the first unforeseen one comes after 1 / (1 - r_j) uses on average. Experts of well-predicted
layers go first; those of a layer the prefetcher covers poorly (the next token's layer 0) stay. In the runtime's
own counters (embedded model, the default bank, copies landing at once) this turned a loss to least-stale-reverse
into a win at 10% and 25% (docs/results/least_stale.md).
In table mode a prefetcher's choice for a later layer of this pass is a sure use whatever its calibrated trust, for
the rest of the pass (its later forecasts stay in the chosen bins): keeping it costs its slot until its layer passes,
evicting it for a farther choice costs a miss no later prefetch can undo when its layer is next; read as an expected
wait, a low trust put it above every sure use (the runtime's bank at 5%, 3 layers ahead in 12 slots: 321 misses
against least-stale-reverse's 299, now 299; docs/results/least_stale.md).
A table made in an earlier pass still orders the victims after a pass start; a sure use then counts from the
table's clock ((p - p_table) L + j - l_table layer-steps), and a probability q forwarded after that table (the
next token's layer 0) mixes in as q a + (1 - q) max(entry, a + L), a those layer-steps.
Once a table has come, every hook also keeps a flat per-(j, e) array of the residents' table entries (-inf for
the others) and their ticks, so that a victim is one argmax over it (O(L E) in C) rather than Python per resident.

Cost (why the structure looks like this): t - l only depends on the layer j, the key's frequency, its
forwarded probability and whether j is behind l or predicted. So per (stale/current, layer) the residents sit
(without the split, all in the stale groups: one set per layer) in lazy-deletion heaps ordered the way t orders
them inside one layer (floored frequency by recency, others by frequency, p >= threshold by recency,
p < threshold by (1 - p)(L + extra)); each layer's best is cached in a per-state heap of layer heads, and only
layers that changed since the last victim are recomputed. victim() is O(changed layers x log n) instead of a
scan of every resident. Without the split, a clock jump or a pass start keeps every head it provably keeps (at a new
value), the previous layer's accesses get their entries at layer start, and probability entries no victim reads at
this clock (layers behind it, the current layer's sure uses) are not made: at 4,096 slots of a 48 x 128 trace that
took the heuristic victim() from 28.4 to 18.8 us (benchmarks/policies.py, README).
A new entry marks its layer for recomputation only where it can change the head: a touched key with a probability in
a layer not behind the clock (a prefetch into the next layer: `_refresh` stashes it) only if it was the head, a
probability entry only if it beats the head's value (ties by recency); forwarded probabilities are read for residents
only (a C intersection with the resident dict: router reuse forwards the whole next layer). With the same victims,
that cut the runtime's head recomputations by a third at 5% (docs/results/simulator.md, "host cost").
The simulator hands it a layer's demand requests in one call (`batched`: victims() is victim() per eviction, then
on_group() runs the group's hooks key by key), which spares the per-request cache and driver work
(tests/runtime/test_batched_requests.py: same residents and counters as the per-request path, layer by layer).
tests/runtime/test_fast_policies.py checks it victim by victim against the plain scan
(with and without the split, and with tables); tests/runtime/test_least_stale_predicted.py checks the calibration.
Compiled (`pip install -e .`; runtime/compiled.py lists this module), the state and the hooks live in `_Core`, an
extension type with typed attributes, `_Group` and the victims' candidate view are extension types too, and the private
helpers are C functions; interpreted, the same source runs with `_Core` a plain base class. Same victims either way; the
rates: docs/results/simulator.md.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Container, Iterator, Mapping, Sequence
from heapq import heapify, heappop, heappush
from operator import itemgetter

import cython
import numpy as np
import torch

from specmd_predict.policies import EvictionPolicy
from specmd_predict.routing import ExpertKey

STALE, CURRENT = 0, 1
# An ExpertKey's fields by index, as Python ints: compiled, `key[0]` with a C constant index goes through a tuple
# subclass's generic sq_item slot (a Python-level __getitem__ call, ~750 instructions under callgrind, 14% of the
# simulator's instructions), while an index object takes its mapping slot (tuple's C subscript)
LAYER, EXPERT = 0, 1
_layer_of = itemgetter(0)  # an ExpertKey's layer, in C
MIN_TRUST = 0.01  # the calibration slope's floor: the wait stays strictly decreasing in the frequency
TRUST_BINS = 10  # forecasts are calibrated per probability bin (x2: chosen by the prefetcher or not)
PREFETCHED, MISSED = 1, 2  # how a resident not used since it came in arrived
TRUST_PRIOR = 4.0  # pseudo-observations at the stated probability (1 for a prefetch choice) per bin


def _observe(sums: list[float], x: float, y: float) -> None:
    """Add one (x, y) observation to a calibration's sums [n, sum x, sum y, sum x^2, sum x y]."""
    sums[0] += 1.0
    sums[1] += x
    sums[2] += y
    sums[3] += x * x
    sums[4] += x * y


def _fit_line(sums: list[float]) -> tuple[float, float] | None:
    """The least-squares line y = a + b x over a calibration's sums, as (b clipped to [MIN_TRUST, 1], a); None
    while there are too few observations or x does not vary."""
    n, sx, sy, sxx, sxy = sums
    if n <= 1.0:
        return None
    var = sxx - sx * sx / n
    if var <= 1e-12 * max(sxx, 1.0):
        return None
    slope = min(1.0, max(MIN_TRUST, (sxy - sx * sy / n) / var))
    return slope, (sy - slope * sx) / n


@cython.cclass
class _Group:
    """The residents of one layer in one state (stale or current), as lazy heaps (an entry is valid while it
    carries the key's current tick, and for p-entries its current probability stamp)."""

    floor = cython.declare(list, visibility="public")
    freq = cython.declare(list, visibility="public")
    due = cython.declare(list, visibility="public")
    partial = cython.declare(list, visibility="public")
    stash = cython.declare(list, visibility="public")
    count = cython.declare(cython.Py_ssize_t, visibility="public")

    def __init__(self) -> None:
        self.floor: list = []  # (tick, key): frequency at the floor, every extra equal -> least recent first
        self.freq: list = []  # (log-frequency score, tick, key): lowest frequency (largest extra) first
        self.due: list = []  # (tick, pstamp, key): p >= threshold, t = j - l
        self.partial: list = []  # (-(1 - p)(L + extra), tick, pstamp, key): p < threshold
        self.stash: list = []  # floor/freq entries set aside while skipping keys with a probability
        self.count = 0  # residents in this group


@cython.cclass
class _Unexcluded:
    """The residents not in `excluded` (victims()'s candidates), as a live view: membership is all victim() asks
    (registered as a Collection below; compiled, membership is a C slot)."""

    _residents = cython.declare(dict)
    _excluded = cython.declare(object)

    def __init__(self, residents: Mapping[ExpertKey, int], excluded: Container[ExpertKey]) -> None:
        self._residents, self._excluded = residents, excluded

    def __contains__(self, key: object) -> bool:
        return key in self._residents and key not in self._excluded

    def __iter__(self) -> Iterator[ExpertKey]:
        return (key for key in self._residents if key not in self._excluded)

    def __len__(self) -> int:
        return sum(1 for _ in self)


Collection.register(_Unexcluded)


@cython.cclass
class _Core:
    """least-stale-predicted's state and hooks (the policy class below adds the name and the constructor):
    a compiled extension type when the module is compiled (runtime/compiled.py), so the hot hooks read typed
    attributes instead of an instance dict; interpreted, a plain base class."""

    proposal_weight = cython.declare(cython.double, visibility="public")
    recall_weighting = cython.declare(cython.bint, visibility="public")
    num_layers = cython.declare(object, visibility="public")
    split = cython.declare(cython.bint, visibility="public")
    _touched = cython.declare(cython.Py_ssize_t, visibility="public")
    _all_due = cython.declare(cython.bint, visibility="public")
    threshold = cython.declare(cython.double, visibility="public")
    decay = cython.declare(cython.double, visibility="public")
    _log_decay = cython.declare(cython.double, visibility="public")
    min_frequency = cython.declare(cython.double, visibility="public")
    _seen_layers = cython.declare(cython.Py_ssize_t, visibility="public")
    _pass = cython.declare(cython.longlong, visibility="public")
    _layer = cython.declare(cython.longlong, visibility="public")
    _tick = cython.declare(cython.longlong, visibility="public")
    _stamp = cython.declare(cython.longlong, visibility="public")
    _last = cython.declare(dict, visibility="public")
    _last_pass = cython.declare(dict, visibility="public")
    _pstamp = cython.declare(dict, visibility="public")
    _ema = cython.declare(dict, visibility="public")
    _used_in_pass = cython.declare(dict, visibility="public")
    _proposed = cython.declare(set, visibility="public")
    _demand_pass = cython.declare(dict, visibility="public")
    _prob = cython.declare(dict, visibility="public")
    _predicted_layers = cython.declare(set, visibility="public")
    _groups = cython.declare(tuple, visibility="public")
    _pending = cython.declare(dict, visibility="public")
    _prob_pending = cython.declare(set, visibility="public")
    _prob_deferred = cython.declare(set, visibility="public")
    _dirty = cython.declare(tuple, visibility="public")
    _top = cython.declare(tuple, visibility="public")
    _head = cython.declare(tuple, visibility="public")
    _version = cython.declare(cython.longlong, visibility="public")
    _table = cython.declare(object, visibility="public")
    _table_layer = cython.declare(cython.longlong, visibility="public")
    _table_pass = cython.declare(cython.longlong, visibility="public")
    _due = cython.declare(set, visibility="public")
    _flat_shape = cython.declare(object, visibility="public")
    _flat_value = cython.declare(object, visibility="public")
    _flat_tick = cython.declare(object, visibility="public")
    _flat_keys = cython.declare(list, visibility="public")
    _outside = cython.declare(set, visibility="public")
    _calibration_decay = cython.declare(cython.double, visibility="public")
    _n = cython.declare(cython.double, visibility="public")  # the frequency calibration's sums (`_calibrate`)
    _sx = cython.declare(cython.double, visibility="public")
    _sy = cython.declare(cython.double, visibility="public")
    _sxx = cython.declare(cython.double, visibility="public")
    _sxy = cython.declare(cython.double, visibility="public")
    _slope = cython.declare(cython.double, visibility="public")
    _shift = cython.declare(cython.double, visibility="public")
    _table_sums = cython.declare(list, visibility="public")
    _table_slope = cython.declare(cython.double, visibility="public")
    _table_shift = cython.declare(cython.double, visibility="public")
    _predicted_extra = cython.declare(dict, visibility="public")
    _just_used = cython.declare(list, visibility="public")
    _evictions = cython.declare(cython.longlong, visibility="public")
    _eviction_rate = cython.declare(cython.double, visibility="public")
    _memory = cython.declare(cython.double, visibility="public")
    calibrate_trust = cython.declare(cython.bint, visibility="public")
    _forecast = cython.declare(dict, visibility="public")
    _trust_n = cython.declare(list, visibility="public")
    _trust_used = cython.declare(list, visibility="public")
    _trust_prior = cython.declare(list, visibility="public")
    _trust = cython.declare(list, visibility="public")
    _recall_n = cython.declare(list, visibility="public")
    _recall_hit = cython.declare(list, visibility="public")
    _uncovered = cython.declare(list, visibility="public")
    _late = cython.declare(set, visibility="public")
    _copied_n = cython.declare(list, visibility="public")
    _copied_late = cython.declare(list, visibility="public")
    _late_share = cython.declare(list, visibility="public")
    _arrival = cython.declare(dict, visibility="public")

    # layers ----------------------------------------------------------------------------------------------
    def _grow(self, num_layers: int) -> None:
        for state in (STALE, CURRENT):
            groups = self._groups[state]
            while len(groups) < num_layers:
                groups.append(_Group())
                self._head[state].append(None)
                self._dirty[state].add(len(groups) - 1)

    def _see_layer(self, layer: int) -> None:
        if layer >= self._seen_layers:
            if self.num_layers is None and (self._prob_pending or self._prob_deferred):
                # their entries depend on L: make them with the L they were marked at
                self._flush_probabilities(defer=False)
            self._seen_layers = layer + 1
            self._grow(layer + 1)
            if self.num_layers is None:  # L changed: every head value changes
                self._dirty_all()

    def _dirty_all(self) -> None:
        for state in (STALE, CURRENT):
            self._dirty[state].update(range(len(self._groups[state])))

    def _num_layers(self) -> int:
        return self.num_layers or self._seen_layers

    # hooks -----------------------------------------------------------------------------------------------
    def on_pass_start(self, pass_id: int) -> None:
        self._calibrate_trust(pass_id)
        self._calibrate(pass_id)
        self._just_used.clear()  # first uses with no table after them (none came at their layer)
        self._proposed.clear()
        groups = self._groups
        ending_layer, ending_predicted = self._layer, set(self._predicted_layers)
        for j in self._predicted_layers:  # only predicted layers hold probability entries or a stash
            for g in (groups[STALE][j], groups[CURRENT][j]):
                g.due.clear()
                g.partial.clear()
                if g.stash:
                    self._unstash(g)
        if self._flat_value is not None:  # the residents' entries as the table gives them: the ending pass's sure
            value = self._flat_value  # uses and forecasts no longer apply
            np.copyto(value, self._table, where=value > -np.inf)
        self._due.clear()
        self._prob.clear()
        self._prob_pending.clear()
        self._prob_deferred.clear()
        self._predicted_layers.clear()
        last = self._last
        for cur, stale in zip(groups[CURRENT], groups[STALE], strict=True):
            if not cur.count and not cur.floor and not cur.freq:
                continue
            # every current resident is stale now; its heap entries keep their order keys
            for entry in cur.floor:
                if last.get(entry[1]) == entry[0]:
                    heappush(stale.floor, entry)
            for entry in cur.freq:
                if last.get(entry[2]) == entry[1]:
                    heappush(stale.freq, entry)
            cur.floor.clear()
            cur.freq.clear()
            stale.count += cur.count
            cur.count = 0
            if len(stale.floor) + len(stale.freq) > 4 * stale.count + 64:  # drop outdated entries now and then
                stale.floor = [e for e in stale.floor if last.get(e[1]) == e[0]]
                stale.freq = [e for e in stale.freq if last.get(e[2]) == e[1]]
                heapify(stale.floor)
                heapify(stale.freq)
        if not self.split:
            for stale in groups[STALE]:
                if len(stale.floor) + len(stale.freq) > 4 * stale.count + 64:  # drop outdated entries now and then
                    stale.floor = [e for e in stale.floor if last.get(e[1]) == e[0]]
                    stale.freq = [e for e in stale.freq if last.get(e[2]) == e[1]]
                    heapify(stale.floor)
                    heapify(stale.freq)
        self._flush(STALE)  # accessed in the pass that ends: stale from now on
        self._pass = pass_id
        # the clock is (pass, -1) until its first layer starts: every layer is ahead, and a prefetch made at the pass
        # start (the next token's layer 0) is a use later in this pass like any other
        self._layer = -1
        for state in (STALE, CURRENT) if self.split else (CURRENT,):
            self._top[state].clear()
            self._head[state][:] = [None] * len(self._head[state])
            self._dirty[state].update(range(len(self._groups[state])))
        if not self.split:
            self._top[STALE].clear()
            self._revalue_heads(range(len(self._groups[STALE])), ending_layer, ending_predicted)

    def _revalue_heads(self, layers, ending_layer: int = -1, ending_predicted: Collection[int] = ()) -> None:
        """Without the split, when the clock moves (a layer jump, or a pass start with its `ending_layer` and
        `ending_predicted` layers): a layer's head stays its head, at a new value, where that is sure; the others are
        marked changed (recomputed at the next victim()).

        A layer behind the clock, or ahead of it without predictions, has its head taken over all its residents'
        frequency entries, in the same order (the wait is decreasing in the frequency; at a pass start every frequency
        decays by the same factor, unless a key of the frequency heap decays to the floor, where ties by recency may
        reorder: recomputed). Only the offset (L + j behind, j ahead) and the frequency change, so the kept heads
        get their new value by `_refresh`'s formula instead of L recomputations: those were most of the cost of the
        first victim() of every pass (a pass start, then the jump back to layer 0)."""
        groups, heads, top, dirty = self._groups[STALE], self._head[STALE], self._top[STALE], self._dirty[STALE]
        last, ema, used, decay, now, floor = (
            self._last,
            self._ema,
            self._used_in_pass,
            self.decay,
            self._pass,
            self.min_frequency,
        )
        num_layers, shift, slope, layer, predicted = (
            self._num_layers(),
            self._shift,
            self._slope,
            self._layer,
            self._predicted_layers,
        )
        for j in layers:
            head = heads[j]
            if (
                head is None
                or j in dirty
                or j in predicted
                or (j >= ending_layer and j in ending_predicted)  # computed over fewer keys (predicted, not behind)
            ):
                heads[j] = None
                dirty.add(j)
                continue
            heap = groups[j].freq
            if heap:  # its lowest frequency must stay above the floor (else: recomputed)
                e = heap[0]
                key = e[2]
                if last.get(key) != e[1] or ema[key] * decay ** (now - used[key]) <= floor:
                    heads[j] = None
                    dirty.add(j)
                    continue
            key = head[4]
            u = used.get(key)
            f = ema[key] * decay ** (now - u) if u is not None else 0.0  # never used yet (prefetched): the floor
            offset = num_layers + j if j < layer else j
            self._version += 1
            head = heads[j] = (-(offset + num_layers * (shift + slope / max(f, floor))), head[1], j, self._version, key)
            heappush(top, head)

    def on_layer_start(self, layer: int) -> None:
        previous = self._layer
        self._layer = layer
        if layer >= self._seen_layers:
            self._see_layer(layer)
        if self._pending and not self.split:
            # The previous layer's accesses get their heap entries now, once per key and layer-step (a key is used
            # at most once per pass in decode): the same entries a later victim() or the pass start would make
            # (made from the key's last tick; a later access marks it again), but victim() then only pays for the
            # keys accessed since its layer started, not for every access since the last eviction.
            self._flush(STALE)
        if layer == previous + 1:  # the usual sweep: one layer moved behind the clock (none at a pass's first)
            if previous >= 0:
                self._dirty[STALE].add(previous)
                self._dirty[CURRENT].add(previous)
        elif layer != previous:  # layers that moved behind (or ahead) of the clock change their next-use formula
            low, high = max(min(layer, previous), 0), max(layer, previous)  # (-1 is the pass start: no layer)
            self._dirty[CURRENT].update(range(low, high))
            if self.split:
                self._dirty[STALE].update(range(low, high))
            else:  # most keep their head (at a new value), e.g. all but the last at a pass's first layer start
                self._revalue_heads(range(low, high))
            if layer < previous:  # entries set aside (deferred, or of layers behind the clock) may be read again
                self._prob_pending |= self._prob_deferred
                self._prob_deferred.clear()
                last = self._last
                self._prob_pending.update(k for k in self._prob if low <= k[LAYER] < high and k in last)
        if layer > previous and self._prob_pending:  # no victim() reads the entries of layers behind the clock
            self._prob_pending = {k for k in self._prob_pending if k[LAYER] >= layer}

    def on_predictions(self, probabilities: Mapping[ExpertKey, float]) -> None:
        # only residents get entries (a key that comes in later is marked by `_place`): the intersection, in C, spares
        # a Python step per forwarded expert, most of which (a prefetcher's whole layer) are not resident
        resident = self._last.keys() & probabilities.keys()
        if self.calibrate_trust:
            probabilities = self._trusted(probabilities, resident)
        self._prob.update(probabilities)
        new = set(map(_layer_of, probabilities)) - self._predicted_layers
        if new:
            if max(new) >= self._seen_layers:
                self._see_layer(max(new))
            self._predicted_layers |= new
            self._dirty[CURRENT].update(new)
            if self.split:
                self._dirty[STALE].update(new)
            else:
                self._predict_heads(new, probabilities)
        self._prob_pending.update(resident)  # residents' entries are made at the next victim()
        if self._table is not None:  # table mode: a sure use later in this pass overrides the table's entry
            threshold, due, last, forecast = self.threshold, self._due, self._last, self._forecast
            for key, p in probabilities.items():
                if p >= threshold or forecast.get(key, 0) >= TRUST_BINS:  # sure, or the prefetcher chose it (_expect)
                    due.add(key)
                elif key in due:
                    due.discard(key)
                if key in last:  # every forecast sets its entry (`_entry`: the expected wait)
                    self._mark_due(key)

    def _predict_heads(self, new: set[int], probabilities: Mapping[ExpertKey, float]) -> None:
        """Without the split, layers that just got their first forwarded probabilities: a head stays the head, at a
        new value, where that is sure. Behind the clock nothing changes. Ahead of it, the offset becomes L + j and keys
        with a probability leave the frequency order (a head not among them stays the best of the rest); sure uses
        (p >= threshold) rank below every frequency entry (t = j - l), so only a probability below the threshold (a
        partial entry) can take the head: such layers are recomputed. Most layer starts forward only the layer's
        routed experts (p = 1), so this spares recomputing the current layer's head at each of them."""
        heads, dirty, top, layer, prob, threshold = (
            self._head[STALE],
            self._dirty[STALE],
            self._top[STALE],
            self._layer,
            self._prob,
            self.threshold,
        )
        partial = None  # layers with a probability below the threshold, built if a kept head needs it
        num_layers, shift, slope, floor = self._num_layers(), self._shift, self._slope, self.min_frequency
        for j in new:
            if j < layer:
                continue
            head = heads[j]
            if head is None or j in dirty or head[4] in prob:
                dirty.add(j)
                continue
            if partial is None:
                partial = {key[LAYER] for key, p in probabilities.items() if p < threshold}
            if j in partial:
                dirty.add(j)
                continue
            key = head[4]
            f = self._frequency(key)
            self._version += 1
            head = heads[j] = (
                -(num_layers + j + num_layers * (shift + slope / max(f, floor))),
                head[1],
                j,
                self._version,
                key,
            )
            heappush(top, head)

    def on_next_use(self, layer: int, next_LE: torch.Tensor) -> None:
        """A learned next-use table: next_LE[j, e] = expected layer-steps until (j, e) is used. It orders every
        victim until the next table comes (each layer-step moves every entry one step closer: the order holds)."""
        if next_LE.dim() != 2:
            raise ValueError(
                f"least-stale-predicted: next use must be an [L, E] table, got shape {tuple(next_LE.shape)}"
            )
        table = next_LE.detach().to("cpu", torch.float64).reshape(-1).numpy().copy()
        if np.isnan(table).any():
            raise ValueError("least-stale-predicted: the next-use table holds NaN")
        np.maximum(table, -1e300, out=table)  # -inf marks a non-resident in _flat_value
        shape = (int(next_LE.shape[0]), int(next_LE.shape[1]))
        self._observe_table(layer, table, shape)
        table = self.calibrated_table(layer, table, shape)
        first = self._table is None
        self._table = table
        self._table_layer = layer
        self._table_pass = self._pass
        if first:  # the keys already forwarded as sure uses in this pass
            self._due = {key for key, p in self._prob.items() if p >= self.threshold}
        if shape != self._flat_shape:
            self._start_flat(shape)
        else:
            value = self._flat_value
            np.copyto(value, table, where=value > -np.inf)  # the residents' entries
            last, prob = self._last, self._prob
            for key in self._due:
                if key[LAYER] > layer and key in last:
                    self._mark_due(key)
            for key in prob:  # forecasts below the threshold: their expected wait (`_entry`)
                if key[LAYER] > layer and key in last and key not in self._due:
                    self._mark_due(key)

    def calibrated_table(self, layer: int, table: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        """The flat table as the victims read it: o + L (a + b x), o the layer-steps to the entry's next chance to be
        used (j - l ahead of the clock, L - l + j behind it), x = (entry - o) / L the table's extra wait in passes,
        (a, b) the online calibration (`_calibrate_table`; a = 0, b = 1 keeps the table as it is)."""
        num_layers, num_experts = shape
        if self.recall_weighting and self._uncovered:
            u = np.ones(num_layers)
            m = min(num_layers, len(self._uncovered))
            u[:m] = np.maximum(self._uncovered[:m], 0.05)
            return (self._calibrate_only(layer, table, shape).reshape(num_layers, num_experts) / u[:, None]).reshape(-1)
        return self._calibrate_only(layer, table, shape)

    def _calibrate_only(self, layer: int, table: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        """`calibrated_table` before the recall weighting: the online line alone (a = 0, b = 1: the table itself)."""
        if self._table_slope == 1.0 and self._table_shift == 0.0:
            return table
        num_layers, num_experts = shape
        j_L1 = np.arange(num_layers, dtype=np.float64).reshape(num_layers, 1)
        offset_L1 = np.where(j_L1 > layer, j_L1 - layer, num_layers - layer + j_L1)
        table_LE = table.reshape(num_layers, num_experts)
        extra_LE = np.maximum(table_LE - offset_L1, 0.0)
        out = offset_L1 + num_layers * self._table_shift + self._table_slope * extra_LE
        return out.reshape(-1)

    def _observe_table(self, layer: int, table: np.ndarray, shape: tuple[int, int]) -> None:
        """Record, for the keys first used in this pass at a layer j <= `layer`, the table's extra wait in passes
        x = (entry - (L - l + j)) / L: their next use is in a later pass, g passes away, which the table puts at
        (L - l + j) + L (g - 1) layer-steps. Keys of layers ahead wait for a later table of this pass."""
        num_layers, num_experts = shape
        if self._just_used:
            predicted, waiting = self._predicted_extra, []
            for key in self._just_used:
                j, e = key
                if j > layer:
                    waiting.append(key)
                elif j < num_layers and e < num_experts:
                    extra = (float(table[j * num_experts + e]) - (num_layers - layer + j)) / num_layers
                    if math.isfinite(extra):  # an infinite wait ("never") is no point on the line
                        predicted[key] = max(extra, 0.0)
                    else:
                        predicted.pop(key, None)
            self._just_used = waiting

    def _start_flat(self, shape: tuple[int, int]) -> None:
        num_layers, num_experts = shape
        self._flat_shape = shape
        self._flat_value = np.full(num_layers * num_experts, -np.inf)
        self._flat_tick = np.zeros(num_layers * num_experts, dtype=np.int64)
        self._flat_keys = [ExpertKey(j, e) for j in range(num_layers) for e in range(num_experts)]
        self._outside = set()
        for key in self._last:
            self._mark(key, True)

    @cython.cfunc
    def _mark(self, key: ExpertKey, inserted: bool = False) -> None:
        """Copy a resident's tick (and, when it has just come in, its entry) into the flat arrays, or put it in the
        outside set."""
        num_layers, num_experts = self._flat_shape
        j, e = key
        if j < num_layers and e < num_experts:
            index = j * num_experts + e
            self._flat_tick[index] = self._last[key]
            if inserted:
                self._flat_value[index] = self._entry(key, index)
        else:
            self._outside.add(key)

    def _flat_index(self, key: ExpertKey) -> int | None:
        num_layers, num_experts = self._flat_shape
        return key[LAYER] * num_experts + key[EXPERT] if key[LAYER] < num_layers and key[EXPERT] < num_experts else None

    def _entry(self, key: ExpertKey, index: int) -> float:
        """A resident's value in table mode: the table's entry, or j - l (l the table's layer) when this pass
        surely uses it at a later layer j (forwarded probability >= threshold, or prefetched for it: the same
        rule as the heuristic's; the table's expectation p (j - l) + (1 - p) later ranks a 90%-sure use of the
        next layer behind experts idle for a few passes, and would evict fresh prefetches)."""
        value = self._table[index]
        num_layers = self._flat_shape[0]
        ahead = key[LAYER] - self._table_layer + (self._pass - self._table_pass) * num_layers  # from the table's clock
        if ahead > 0:
            if key in self._due:
                return min(value, float(ahead))
            p = self._prob.get(key)
            if p is not None:
                # a forecast below the threshold (a prefetcher's choice whose calibrated trust is low, say): used at
                # `ahead` with probability p, else the wait the table gives should this pass not use it
                wait = p * ahead + (1.0 - p) * max(value, ahead + num_layers)
                # a forecast made after the table (the next token's layer 0 at a pass start) replaces its entry; one
                # of the table's own pass can only bring it closer (the table's entry already mixes in the
                # predictor's probability of a use in this pass)
                return wait if self._table_pass != self._pass else min(value, wait)
        return value

    @cython.cfunc
    def _mark_due(self, key: ExpertKey) -> None:
        index = self._flat_index(key)
        if index is not None:
            self._flat_value[index] = self._entry(key, index)

    @cython.locals(prefetched=cython.bint, j=cython.Py_ssize_t)
    def on_insert(self, key: ExpertKey, prefetched: bool) -> None:
        j = key[LAYER]
        if j >= self._seen_layers:
            self._see_layer(j)
        self._groups[self._touched][j].count += 1
        self._tick += 1
        self._last[key] = self._tick
        if self.split:  # the pass stamp is read only with the split (which group a resident is in)
            self._last_pass[key] = self._pass
        self._arrival[key] = PREFETCHED if prefetched else MISSED
        if prefetched:
            self._count_proposal(key)
        self._place(key)
        if self._flat_value is not None:
            self._mark(key, True)
        if prefetched:
            self._expect(key)

    @cython.locals(j=cython.Py_ssize_t, now=cython.longlong, tick=cython.longlong)
    def on_access(self, key: ExpertKey) -> None:
        # the per-request hot path: _make_current and _place inlined
        j, now = key[LAYER], self._pass
        if self.split:
            if self._last_pass[key] != now:
                groups = self._groups
                groups[STALE][j].count -= 1
                head = self._head[STALE][j]
                if head is not None and head[4] == key:  # only the head's departure changes the layer's head
                    self._dirty[STALE].add(j)
                groups[CURRENT][j].count += 1
            self._last_pass[key] = now
        tick = self._tick = self._tick + 1
        self._last[key] = tick
        used = self._used_in_pass.get(key)
        if used != now:
            self._count_request(key, now, 1.0, used)
        elif key in self._proposed:  # counted at the proposal's weight in this pass (see `_top_up`)
            if key in self._late or self._arrival.get(key) == MISSED:  # its use still waited for a copy
                self._top_up(key, 1.0)
            elif j < len(self._late_share) and self._late_share[j] > 0.0:
                self._top_up(key, self._late_share[j])
        demanded = self._demand_pass.get(key)
        if demanded != now:
            self._first_use(key, now, demanded)
        self._pending[key] = None  # its heap entry is made when needed (victim among current ones, pass end)
        if key in self._prob:
            self._prob_pending.add(key)
        if self._flat_value is not None:
            self._mark(key)

    def on_late(self, key: ExpertKey) -> None:
        self._late.add(key)  # its use (on_access, next) is not one the prefetcher spared: no recall

    def on_prefetch(self, key: ExpertKey) -> None:
        if self.split:
            self._make_current(key)
        tick = self._tick = self._tick + 1
        self._last[key] = tick
        if key[LAYER] > self._layer:  # the proposal counts and the expectation are for later layers only
            self._count_proposal(key)
            self._place(key)
            self._expect(key)
        else:
            self._place(key)

    @cython.cfunc
    def _count_proposal(self, key: ExpertKey) -> None:
        if self.proposal_weight and key[LAYER] > self._layer:
            used = self._used_in_pass.get(key)
            if used != self._pass:
                self._count_request(key, self._pass, self.proposal_weight, used)
                self._proposed.add(key)

    @cython.cfunc
    @cython.locals(share=cython.double)
    def _top_up(self, key: ExpertKey, share: float) -> None:
        """A demand use of a key the prefetcher chose earlier in this pass, whose frequency counted the choice at
        `proposal_weight` w: the pass's weight becomes w + share (1 - w). A use that waited for its copy (late, or a
        miss after an eviction) counts 1, as a demand use alone. A use the prefetcher brought in time cost a copy but
        no stall, as a choice never used costs: it counts as likely to stall as its layer's prefetched uses were
        (`_late_share`): w where copies land at once (evicting what the prefetcher brings in time is cheap, and
        keeping it is what the frequency is for), near 1 where most copies come late (each copy then delays the
        next). The ema is as of this pass, so the weight adds exactly; the caller gives the key a new tick, so the
        heaps get a fresh entry with the new frequency and its old ones go stale."""
        self._proposed.discard(key)
        self._ema[key] += (1.0 - self.decay) * (1.0 - self.proposal_weight) * share

    @cython.cfunc
    @cython.locals(
        now=cython.longlong,
        weight=cython.double,
        decay=cython.double,
        ema=cython.double,
        g_hat=cython.double,
        floor=cython.double,
        previous=cython.longlong,
        gap=cython.longlong,
        g=cython.double,
    )
    def _count_request(self, key: ExpertKey, now: int, weight: float, last: int | None) -> None:
        """Its first request in pass `now` (`last`: the pass of its previous one, None if none): update its frequency;
        a repeated request also feeds the calibration."""
        decay = self.decay
        if last is not None:
            ema = self._ema[key]
            g_hat = ema * decay
            floor = self.min_frequency
            g_hat = 1.0 / (g_hat if g_hat > floor else floor)  # what the policy predicted after its last use
            previous = last  # compiled: the gap and its power in C, not on Python ints and floats
            gap = now - previous
            g = gap
            if self._memory < g:  # a gap longer than a resident stays is a miss all the same
                g = self._memory
            # _observe(sums, g_hat, g), inlined on C doubles: once per reuse of a key
            self._n += 1.0
            self._sx += g_hat
            self._sy += g
            self._sxx += g_hat * g_hat
            self._sxy += g_hat * g
            self._ema[key] = ema * decay**gap + (1.0 - decay) * weight
        else:
            self._ema[key] = (1.0 - decay) * weight
        self._used_in_pass[key] = now

    @cython.cfunc
    @cython.locals(now=cython.longlong)
    def _first_use(self, key: ExpertKey, now: int, last: int | None) -> None:
        """Its first demand use in pass `now` (`last`: the pass of its previous one, None if none): scores the
        learned table's wait after its previous use, and the prefetcher's recall at its layer (did the prefetcher
        choose it before its layer came?)."""
        self._demand_pass[key] = now
        if last is not None and self._predicted_extra:
            x = self._predicted_extra.get(key)
            if x is not None:  # the learned table's prediction after its last use, against the realized gap
                _observe(self._table_sums, x, min(now - last - 1.0, self._memory))  # capped at a resident's stay
        if self._table is not None:
            self._just_used.append(key)
        arrival = self._arrival.pop(key, None)
        if arrival is not None:
            self._count_recall(key, arrival)

    @cython.cfunc
    @cython.locals(arrival=cython.int, j=cython.Py_ssize_t)
    def _count_recall(self, key: ExpertKey, arrival: int) -> None:
        """A use of `key`, which had to be copied in (`arrival`): did the prefetcher bring it in time?"""
        j = key[LAYER]
        if j >= len(self._recall_n):
            self._recall_n.extend([0.0] * (j + 1 - len(self._recall_n)))
            self._recall_hit.extend([0.0] * (j + 1 - len(self._recall_hit)))
        self._recall_n[j] += 1.0
        if arrival == PREFETCHED:
            if j >= len(self._copied_n):
                self._copied_n.extend([0.0] * (j + 1 - len(self._copied_n)))
                self._copied_late.extend([0.0] * (j + 1 - len(self._copied_late)))
            self._copied_n[j] += 1.0
            if key in self._late:
                self._copied_late[j] += 1.0
            else:
                self._recall_hit[j] += 1.0

    @cython.locals(state=cython.Py_ssize_t, j=cython.Py_ssize_t)
    def on_evict(self, key: ExpertKey) -> None:
        state = CURRENT if self.split and self._last_pass[key] == self._pass else STALE
        j = key[LAYER]
        self._groups[state][j].count -= 1
        head = self._head[state][j]
        if head is not None and head[4] == key:
            self._dirty[state].add(j)
        del self._last[key]
        if self.split:
            del self._last_pass[key]
        self._pstamp.pop(key, None)
        self._arrival.pop(key, None)
        self._evictions += 1
        if self._flat_value is not None:
            num_layers, num_experts = self._flat_shape
            if key[LAYER] < num_layers and key[EXPERT] < num_experts:
                self._flat_value[key[LAYER] * num_experts + key[EXPERT]] = -np.inf
            else:
                self._outside.discard(key)

    # batched demand (specmd_predict/policies.py) ------------------------------------------------------------
    def victims(self, count: int, excluded: Container[ExpertKey]) -> list[ExpertKey]:
        """`count` victim() calls among the residents not in `excluded`, each evicted before the next (on_group does
        not evict them again). The same victims as the per-request path: there, the group's earlier hits and
        inserts run between these calls, but they only touch the group's own (pinned) keys, whose hooks change no
        other resident's next use, tick or frequency."""
        candidates = _Unexcluded(self._last, excluded)
        victim, evict = self.victim, self.on_evict
        chosen = []
        for _ in range(count):
            key = victim(candidates)
            evict(key)
            chosen.append(key)
        return chosen

    @cython.locals(last=dict, missing=set)
    def on_group(self, keys: Sequence[ExpertKey], misses: Sequence[ExpertKey], victims: Sequence[ExpertKey]) -> None:
        """The per-request hooks of one group in its order (per key: a miss's on_insert, then on_access). Fusing them
        into one loop bought about 10% here (most of the time is victim()'s), not worth a second copy of on_access."""
        last = self._last
        for key in victims:
            if key in last:  # not chosen by victims() (which evicts its choices)
                self.on_evict(key)
        missing = set(misses)
        insert, access = self.on_insert, self.on_access
        for key in keys:
            if key in missing:
                insert(key, False)
            access(key)

    # bookkeeping -----------------------------------------------------------------------------------------
    @cython.cfunc
    def _make_current(self, key: ExpertKey) -> None:
        if self.split and self._last_pass[key] != self._pass:
            j = key[LAYER]
            self._groups[STALE][j].count -= 1
            head = self._head[STALE][j]
            if head is not None and head[4] == key:
                self._dirty[STALE].add(j)
            self._groups[CURRENT][j].count += 1
        if self.split:
            self._last_pass[key] = self._pass

    def _frequency(self, key: ExpertKey) -> float:
        u = self._used_in_pass.get(key)
        return self._ema[key] * self.decay ** (self._pass - u) if u is not None else 0.0

    def _extra_of(self, key: ExpertKey) -> float:
        """L (g - 1): the expected extra layers of waiting, g the calibrated passes until its next use."""
        return self._num_layers() * (self._shift + self._slope / max(self._frequency(key), self.min_frequency))

    def _calibrate(self, pass_id: int) -> None:
        """At a pass start: how far the frequency's predicted gap is borne out, measured on the reuses so far.

        The heuristic predicts that an expert used in a share f of recent passes is next used g_hat = 1 / f passes
        after its last use. Every reuse (a key used again, g passes after its previous use) is one observation
        of (g_hat as predicted then, g). The least-squares line g = a + b g_hat over them (older passes weighted
        down, half-life `calibration_half_life` passes) is the calibration: b = cov(g_hat, g) / var(g_hat),
        clipped to [MIN_TRUST, 1]. The wait used is then L (g - 1) with g = max(a, 1 - b) + b g_hat (>= 1, and
        strictly decreasing in f, so every order inside a layer stays the frequency's). Calibrated frequencies
        give b near 1 (the heuristic as it was); frequencies that say little about the next use (near-uniform
        routing) give b near 0: every expert of a layer then waits about the same, and the order falls back to
        the layer distance of the next chance to be used (least-stale-reverse's order, with the current layer's
        unrouted experts first). O(1) per pass and per reuse."""
        gap = pass_id - self._pass
        if gap <= 0:
            return
        fit = _fit_line([self._n, self._sx, self._sy, self._sxx, self._sxy])
        if fit is not None:
            slope, intercept = fit
            self._slope = slope
            self._shift = max(intercept, 1.0 - slope) - 1.0
        self._calibrate_table()
        keep = self._calibration_decay**gap
        self._n *= keep
        self._sx *= keep
        self._sy *= keep
        self._sxx *= keep
        self._sxy *= keep
        for i in range(5):
            self._table_sums[i] *= keep
        decay = self.decay**gap
        rate = self._eviction_rate = self._eviction_rate * decay + self._evictions * (1.0 - decay)
        self._evictions = 0
        self._memory = max(1.0, len(self._last) / rate) if rate > 0.0 else math.inf

    def _trusted(self, probabilities: Mapping[ExpertKey, float], resident: Collection[ExpertKey]) -> Mapping:
        """The forwarded probabilities as this policy reads them: forecasts of `resident` keys (those forwarded that
        are resident) for a later layer of this pass become their bin's calibrated probability (`_calibrate_trust`);
        the current layer's routing stays as it is. (The bins' counts do not depend on the order of the keys.)"""
        layer, forecast, trust = self._layer, self._forecast, self._trust
        out = None  # copied at the first forecast it changes: a layer's own routing (the driver's) changes none
        for key in resident:
            if key[LAYER] > layer:
                if out is None:
                    out = dict(probabilities)
                p = out[key]
                b = min(int(p * TRUST_BINS), TRUST_BINS - 1) if p > 0.0 else 0
                if forecast.get(key, 0) >= TRUST_BINS:  # chosen by the prefetcher earlier in this pass
                    b += TRUST_BINS
                forecast[key] = b
                out[key] = trust[b]
        return probabilities if out is None else out

    def _calibrate_trust(self, pass_id: int) -> None:
        """At a pass start: score the ending pass's forecasts (did the pass use each key?) and recalibrate.

        A forecast is a probability forwarded for a resident of a later layer of the pass, or the prefetcher's choice
        of one. Per bin of the stated probability (and apart, for the prefetcher's choices) the policy keeps decayed
        counts (half-life `half_life` passes) of forecasts and of those borne out; the calibrated probability is
        their ratio with TRUST_PRIOR pseudo-counts at the stated probability (1 for a choice), so an unmeasured
        forecaster is taken at its word. Residents only, since only they are ordered (a resident is far likelier to
        be used than the average expert of its bin). A sharp, reliable predictor keeps its probabilities and its
        choices stay sure uses; choices that are mostly wrong (router reuse on a random model) are read as the
        rarely used experts they are, and stop pushing the working set out. The same pass start updates each
        layer's recall: the share of its first uses in a pass that the prefetcher had chosen (`_first_use`)."""
        if pass_id == self._pass:
            return
        keep = self.decay ** abs(pass_id - self._pass)
        n, hit, used, now = self._trust_n, self._trust_used, self._demand_pass, self._pass
        for b in range(2 * TRUST_BINS):
            n[b] *= keep
            hit[b] *= keep
        for key, b in self._forecast.items():
            n[b] += 1.0
            if used.get(key) == now:
                hit[b] += 1.0
        self._forecast.clear()
        self._late.clear()
        prior = self._trust_prior
        self._trust = [(hit[b] + TRUST_PRIOR * prior[b]) / (n[b] + TRUST_PRIOR) for b in range(2 * TRUST_BINS)]
        recall_n, recall_hit = self._recall_n, self._recall_hit
        for j in range(len(recall_n)):
            recall_n[j] *= keep
            recall_hit[j] *= keep
        # 1 - recall, with TRUST_PRIOR pseudo-uses the prefetcher missed (no prefetch assumed until measured)
        self._uncovered = [(c - h + TRUST_PRIOR) / (c + TRUST_PRIOR) for c, h in zip(recall_n, recall_hit, strict=True)]
        copied_n, copied_late = self._copied_n, self._copied_late
        for j in range(len(copied_n)):
            copied_n[j] *= keep
            copied_late[j] *= keep
        self._late_share = [late / (n + 1.0) for n, late in zip(copied_n, copied_late, strict=True)]

    def _calibrate_table(self) -> None:
        """The learned table's wait, calibrated like the frequency's (`_calibrate`): the least-squares line
        y = a + b x over the reuses so far, x the table's extra passes predicted after a key's use, y the realized
        ones (capped at how long a resident stays), b clipped to [MIN_TRUST, 1], a >= 0. b near 1: the table's
        order as it is; b near 0 (its waits say little about reuse within a resident's stay: small caches), the
        order falls back to the layer distance of each entry's next chance (least-stale-reverse's)."""
        fit = _fit_line(self._table_sums)
        if fit is not None:
            self._table_slope = fit[0]
            self._table_shift = max(fit[1], 0.0)

    @cython.cfunc
    @cython.locals(j=cython.Py_ssize_t, tick=cython.longlong, touched=cython.Py_ssize_t, g=_Group)
    def _place(self, key: ExpertKey) -> None:
        """Entries for a resident just touched (now current, with a new tick)."""
        j, tick, touched = key[LAYER], self._tick, self._touched
        g = self._groups[touched][j]
        u = self._used_in_pass.get(key)
        if u is None or self._ema[key] * self.decay ** (self._pass - u) <= self.min_frequency:  # _frequency inlined
            entry = (tick, key)
            heap = g.floor
        else:  # log f at any later pass is this score plus a constant shared by all keys: a static order
            entry = (math.log(self._ema[key]) - u * self._log_decay, tick, key)
            heap = g.freq
        heappush(heap, entry)
        if key in self._prob:
            self._prob_pending.add(key)
            # a key with a probability in a predicted layer not behind the clock is no head candidate there
            # (`_refresh` stashes it): the layer's head only changes if it was this key (with its old tick). A
            # prefetch into the next layer then costs that layer no recomputation.
            head = self._head[touched][j]
            if j < self._layer or head is None or head[4] == key:
                self._dirty[touched].add(j)
        else:
            self._dirty[touched].add(j)
        if self._flat_value is not None:
            self._mark(key)

    def _flush_probabilities(self, defer: bool = True) -> None:
        """Make the probability entries of the marked keys that are still resident; with `defer`, set aside those
        no victim() reads at this clock (see `_prob_deferred`).

        An entry goes to its group's `due` heap (p >= threshold, t = j - l) or `partial` heap (p < threshold, ranked
        by (1 - p)(L + extra)), with a fresh probability stamp (older entries of the key go stale). The layer's head
        is marked for recomputation unless the new entry provably loses to it (made here, in one loop, rather than
        one call per key: this runs at nearly every victim() of the runtime's prefetch path)."""
        last, pending, deferred = self._last, self._prob_pending, self._prob_deferred
        if not defer:
            pending |= deferred
            deferred.clear()
        layer, prob, threshold, pstamp = self._layer, self._prob, self.threshold, self._pstamp
        split, groups, all_heads, dirty, now, last_pass = (
            self.split,
            self._groups,
            self._head,
            self._dirty,
            self._pass,
            self._last_pass,
        )
        heads = all_heads[STALE]
        skip_due = defer and not split and not self._all_due
        stamp = self._stamp
        for key in pending:
            if key in last:
                j = key[LAYER]
                if defer and j < layer:  # not read while the clock is past j; made if it moves back
                    continue
                p = prob[key]
                if skip_due and j == layer and p >= threshold:
                    head = heads[j]
                    if head is not None and head[4] == key:  # now a sure use of this layer: no longer its head
                        dirty[STALE].add(j)
                    deferred.add(key)
                    pstamp.pop(
                        key, None
                    )  # its older entry (a lower probability's, say) is outdated, as a push makes it
                    continue
                if deferred:
                    deferred.discard(key)
                stamp += 1
                pstamp[key] = stamp
                state = CURRENT if split and last_pass[key] == now else STALE
                g = groups[state][j]
                head = all_heads[state][j]
                tick = last[key]
                if p >= threshold:
                    heappush(g.due, (tick, stamp, key))
                    # t = j - l is below every other case's next use: it cannot displace a head of another case, nor a
                    # head of its own case (v = j) that is older (ties go to the least recently used)
                    if head is not None and head[4] != key and (-head[0] > j or (-head[0] == j and head[1] < tick)):
                        continue
                else:
                    later = self._num_layers() + self._extra_of(key)
                    score = -((1.0 - p) * later)
                    heappush(g.partial, (score, tick, stamp, key))
                    # its value as `_refresh` computes it (v = j - score): a head that beats it stays the head (a head
                    # is the best valid entry of its layer: any change to it marks the layer); no head for a layer
                    # behind the clock reads this entry
                    if head is not None and head[4] != key:
                        v, best = j - score, -head[0]
                        if j < layer or best > v or (best == v and head[1] < tick):
                            continue
                dirty[state].add(j)
        self._stamp = stamp
        pending.clear()

    def _expect(self, key: ExpertKey) -> None:
        # The prefetcher chose this expert by rank (top-k) for a later layer of this pass: that choice is the
        # prediction. Its probability alone undersells it when routing is sharp (the 2nd..k-th experts of a
        # peaked router have small softmax mass yet are always selected), and evicting it would waste the copy.
        if key[LAYER] > self._layer:
            b = self._forecast.get(key, TRUST_BINS - 1)  # its probability's bin (the top one if none came)
            b = self._forecast[key] = b % TRUST_BINS + TRUST_BINS
            self._prob[key] = self._trust[b] if self.calibrate_trust else 1.0
            if self._table is not None:
                # in table mode a choice is a sure use whatever its calibrated trust: keeping it costs its slot until
                # its layer passes (at most the prefetcher's horizon), while evicting it for another choice turns a
                # use the prefetcher foresaw into a collision miss; the table's entry for it is already the
                # predictor's own mix of "used in this pass" and "used later", so a mix with a low trust (the expected
                # wait p a + (1 - p) max(entry, a + L)) ranked it above farther choices and sure uses
                # (docs/results/least_stale.md: the runtime's bank at 5%, 3 layers ahead in 12 slots)
                self._due.add(key)
                self._mark_due(key)
            if key[LAYER] not in self._predicted_layers:
                self._see_layer(key[LAYER])
                self._predicted_layers.add(key[LAYER])
                for state in (STALE, CURRENT):
                    self._dirty[state].add(key[LAYER])
            self._prob_pending.add(key)

    @cython.cfunc
    @cython.locals(
        state=cython.Py_ssize_t,
        j=cython.Py_ssize_t,
        g=_Group,
        e=cython.double,
        floor=cython.double,
        log_decay=cython.double,
        layer=cython.longlong,
        groups=list,
        dirty=set,
        heads=list,
        prob=dict,
        last=dict,
        used=dict,
        ema=dict,
    )
    def _flush(self, state: int) -> None:
        """Heap entries, in the groups of `state`, for the keys accessed since the last flush (their last tick)."""
        last, used, ema, groups, floor = (
            self._last,
            self._used_in_pass,
            self._ema,
            self._groups[state],
            self.min_frequency,
        )
        dirty, log_decay, heads, prob, layer = (
            self._dirty[state],
            self._log_decay,
            self._head[state],
            self._prob,
            self._layer,
        )
        for key in self._pending:
            tick = last.get(key)
            if tick is None:
                continue  # evicted since
            j = key[LAYER]
            g = groups[j]
            e = ema[key]
            if e <= floor:  # accessed in its last used pass: its frequency then was its ema
                entry = (tick, key)
                heap = g.floor
            else:  # log f at any later pass is this score plus a constant shared by all keys: a static order
                entry = (math.log(e) - used[key] * log_decay, tick, key)
                heap = g.freq
            if j >= layer and key in prob:
                # _refresh would stash it at once (a key with a probability, in a predicted layer not behind the
                # clock; its probability and its layer's stay until the pass ends): straight to the stash, which is
                # put back into the heaps once the clock passes the layer or the pass ends. Only the layer's head
                # can have changed (it was this key with its old tick).
                g.stash.append(entry)
                head = heads[j]
                if head is None or head[4] == key:
                    dirty.add(j)
            else:
                heappush(heap, entry)
                dirty.add(j)
        self._pending.clear()

    @cython.cfunc
    @cython.locals(g=_Group, last=dict)
    def _unstash(self, g: _Group) -> None:
        last = self._last
        for entry in g.stash:
            if len(entry) == 2:
                if last.get(entry[1]) == entry[0]:
                    heappush(g.floor, entry)
            elif last.get(entry[2]) == entry[1]:
                heappush(g.freq, entry)
        g.stash.clear()

    # next use --------------------------------------------------------------------------------------------
    def next_use(self, key: ExpertKey) -> float:
        """Predicted layers until the next demand request of a resident `key` (the heuristic)."""
        j, layer = key[LAYER], self._layer
        extra = self._extra_of(key)
        later = self._num_layers() - layer + j + extra
        if j < layer:
            return later
        p = self._prob.get(key)
        if p is None:
            return later if j in self._predicted_layers else j - layer + extra
        if p >= self.threshold:
            return j - layer
        return p * (j - layer) + (1.0 - p) * later

    @cython.cfunc
    @cython.locals(
        heap=list,
        g=_Group,
        skipped=list,
        skip_p=cython.bint,
        kind=cython.int,
        last=dict,
        pstamp=dict,
        prob=dict,
        floor_limit=cython.double,
        valid=cython.bint,
    )
    def _best_of_heap(self, heap: list, g: _Group, candidates, skipped: list, skip_p: bool, kind: int):
        """The first valid, evictable entry of one heap (kind 0 floor, 1 freq, 2 due, 3 partial), or None.
        Outdated entries are dropped; non-candidates go to `skipped` (restored by the caller); with `skip_p`,
        keys that have a probability go to the group's stash."""
        last, pstamp, prob = self._last, self._pstamp, self._prob
        floor_limit = self.min_frequency
        while heap:
            entry = heap[0]
            key = entry[-1]
            if kind == 0:
                valid = last.get(key) == entry[0]
            elif kind == 1:
                valid = last.get(key) == entry[1]
            else:
                valid = last.get(key) == entry[-3] and pstamp.get(key) == entry[-2]
            if not valid:
                heappop(heap)
                continue
            if kind == 1 and self._frequency(key) <= floor_limit:  # decayed to the floor: its extra is the max
                heappush(g.floor, (entry[1], key))
                heappop(heap)
                continue
            if skip_p and key in prob:
                g.stash.append(heappop(heap))
                continue
            if key not in candidates:
                skipped.append((heap, heappop(heap)))
                continue
            return entry
        return None

    @cython.cfunc
    @cython.returns(cython.bint)
    @cython.locals(
        state=cython.Py_ssize_t,
        j=cython.Py_ssize_t,
        g=_Group,
        skipped=list,
        layer=cython.longlong,
        last=dict,
        prob=dict,
        skip_p=cython.bint,
        skip_due=cython.bint,
        heap=list,
        decay=cython.double,
        now=cython.longlong,
        floor=cython.double,
        f=cython.double,
        ema=dict,
        used=dict,
        u=cython.longlong,
        em=cython.double,
    )
    def _refresh(self, state: int, j: int, candidates) -> bool:
        """Recompute layer j's head in `state` and queue it; True if a non-candidate was skipped.

        The head is the group's (v, tick) maximum with v = t + l, which does not depend on l inside one case;
        each heap's first valid entry is taken in place when it is a candidate (the common case), otherwise
        `_best_of_heap` walks on."""
        g = self._groups[state][j]
        self._version += 1
        head = None
        skipped: list = []
        if g.count:
            num_layers, layer, last, prob = self.num_layers or self._seen_layers, self._layer, self._last, self._prob
            best_v, best_tick, best_key = -1.0, 0, None
            if j < layer or j not in self._predicted_layers:
                if g.stash:
                    self._unstash(g)
                offset = num_layers + j if j < layer else j
                skip_p = False
            else:
                offset, skip_p = num_layers + j, True
                # the current layer's sure uses (t = 0, its routed experts: pinned while it runs) lose to any other
                # candidate without the split: skipped (victim() looks again if nothing else is left)
                skip_due = j == layer and not self.split and not self._all_due
                e = self._best_of_heap(g.due, g, candidates, skipped, False, 2) if g.due and not skip_due else None
                if e is not None:
                    best_v, best_tick, best_key = float(j), e[0], e[2]
                e = self._best_of_heap(g.partial, g, candidates, skipped, False, 3) if g.partial else None
                if e is not None:
                    v = j - e[0]
                    if best_key is None or v > best_v or (v == best_v and e[1] < best_tick):
                        best_v, best_tick, best_key = v, e[1], e[3]
            # freq before floor: keys that decayed to the floor move there on the way
            # outdated first entries (the victim just evicted, keys touched since) are dropped here, as
            # `_best_of_heap` would drop them first, so that the common case needs no call
            heap = g.freq
            while heap and last.get(heap[0][2]) != heap[0][1]:
                heappop(heap)
            if heap:
                ema, used, decay, now, floor = self._ema, self._used_in_pass, self.decay, self._pass, self.min_frequency
                e = heap[0]
                key = e[2]
                u, em = used[key], ema[key]  # compiled: the power in C
                f = em * decay ** (now - u)
                if not ((not skip_p or key not in prob) and key in candidates and f > floor):
                    e = self._best_of_heap(heap, g, candidates, skipped, skip_p, 1)
                    if e is not None:
                        key = e[2]
                        u, em = used[key], ema[key]
                        f = em * decay ** (now - u)
                if e is not None:
                    v = offset + num_layers * (self._shift + self._slope / max(f, floor))
                    if best_key is None or v > best_v or (v == best_v and e[1] < best_tick):
                        best_v, best_tick, best_key = v, e[1], key
            heap = g.floor
            while heap and last.get(heap[0][1]) != heap[0][0]:
                heappop(heap)
            if heap:
                e = heap[0]
                key = e[1]
                if not ((not skip_p or key not in prob) and key in candidates):
                    e = self._best_of_heap(heap, g, candidates, skipped, skip_p, 0)
                if e is not None:
                    v = offset + num_layers * (self._shift + self._slope / self.min_frequency)
                    if best_key is None or v > best_v or (v == best_v and e[0] < best_tick):
                        best_v, best_tick, best_key = v, e[0], e[1]
            if best_key is not None:
                head = (-best_v, best_tick, j, self._version, best_key)
                heappush(self._top[state], head)
            for heap, entry in skipped:
                heappush(heap, entry)
        self._head[state][j] = head
        return bool(skipped)

    @cython.locals(split=cython.bint, state=cython.Py_ssize_t, dirty=set, top=list, heads=list)
    def victim(self, candidates: Collection[ExpertKey]) -> ExpertKey:
        if self._table is not None:
            return self._table_victim(candidates)
        if self._prob_pending:
            self._flush_probabilities()
        split = self.split
        best = None
        if not split and self._pending:
            self._flush(STALE)
        for state in (STALE, CURRENT) if split else (STALE,):
            if state == CURRENT and self._pending:
                self._flush(CURRENT)
            dirty, top, heads = self._dirty[state], self._top[state], self._head[state]
            retry = set()
            if dirty:
                for j in dirty:
                    if self._refresh(state, j, candidates):
                        retry.add(j)
                dirty.clear()
            found = None
            while top:
                entry = top[0]
                if heads[entry[2]] is not entry:
                    heappop(top)  # outdated head
                    continue
                key = entry[4]
                if key in candidates:
                    found = entry
                    break
                heappop(top)  # pinned since its layer was computed: recompute that layer without it
                retry.add(entry[2])
                self._refresh(state, entry[2], candidates)
            if retry:
                dirty.update(retry)  # heads computed around non-candidates may change when those are unpinned
            if len(top) > 4 * len(heads) + 64:
                top[:] = [h for h in heads if h is not None]
                heapify(top)
            if found is not None:
                if split:
                    return found[4]
                if best is None or (found[0], found[1]) < (best[0], best[1]):  # farther, or as far and older
                    best = found
        if best is not None:
            return best[4]
        if not split and not self._all_due:  # only the current layer's sure uses may be left: look at them too
            self._all_due = True
            self._prob_pending |= self._prob_deferred  # the current layer's deferred sure uses are read now
            self._prob_deferred.clear()
            current = [self._layer] if self._layer >= 0 else []  # (pass, -1): no current layer
            try:
                for state in (STALE, CURRENT):
                    self._dirty[state].update(current)
                return self.victim(candidates)
            finally:
                self._all_due = False
                for state in (STALE, CURRENT):
                    self._dirty[state].update(current)
        raise ValueError("least-stale-predicted: no candidate is a resident it knows")

    # learned next use ------------------------------------------------------------------------------------
    def _table_victim(self, candidates: Collection[ExpertKey]) -> ExpertKey:
        """The resident with the largest entry of the latest table, ties to the least recently used (vectorized:
        one argmax over the residents' entries, kept up to date by the hooks)."""
        outside = [k for k in self._outside if k in candidates]
        if outside:  # nothing predicts their use: farthest of all
            return min(outside, key=self._last.__getitem__)
        value, ticks, keys = self._flat_value, self._flat_tick, self._flat_keys
        skipped: list[tuple[int, float]] = []
        try:
            while True:
                index = int(value.argmax())
                best = value[index]
                if best == -np.inf:
                    break
                if np.count_nonzero(value == best) > 1:  # ties go to the least recently used
                    ties = np.flatnonzero(value == best)
                    index = int(ties[np.argmin(ticks[ties])])
                key = keys[index]
                if key in candidates:
                    return key
                skipped.append((index, value[index]))
                value[index] = -np.inf  # pinned or in flight: the next best
        finally:
            for index, entry in skipped:
                value[index] = entry
        raise ValueError("least-stale-predicted: no candidate is a resident it knows")


class LeastStalePredicted(_Core, EvictionPolicy):
    name = "least-stale-predicted"
    uses_current_routing = True  # drivers forward layer l's routed experts as probability 1 at layer start
    batched = True  # a group's hooks touch only its own keys (see victims()); tests/runtime/test_batched_requests.py

    def __init__(
        self,
        num_layers: int | None = None,
        threshold: float = 0.5,
        half_life: float = 16.0,
        min_frequency: float = 0.01,
        calibration_half_life: float = 1024.0,
        split: bool = False,
        calibrate_trust: bool = True,
        proposal_weight: float = 0.25,
        recall_weighting: bool = True,
    ) -> None:
        if not 0.0 <= proposal_weight <= 1.0:
            raise ValueError(f"least-stale-predicted: proposal_weight must be in [0, 1], got {proposal_weight!r}")
        self.proposal_weight = float(proposal_weight)
        self.recall_weighting = recall_weighting
        self.num_layers = num_layers
        self.split = split
        # without the split every resident lives in the STALE groups (one set of heaps per layer); with it, the
        # ones touched in this pass live in the CURRENT groups
        self._touched = CURRENT if split else STALE
        self._all_due = False  # victim()'s fallback: also the current layer's sure uses
        self.threshold = threshold
        self.decay = 0.5 ** (1.0 / half_life)
        self._log_decay = math.log(self.decay)
        self.min_frequency = min_frequency
        self._seen_layers = 0
        self._pass = 0
        self._layer = 0
        self._tick = 0
        self._stamp = 0
        self._last: dict[ExpertKey, int] = {}
        self._last_pass: dict[ExpertKey, int] = {}
        self._pstamp: dict[ExpertKey, int] = {}
        self._ema: dict[ExpertKey, float] = {}  # share of recent passes that used the expert, as of _used_in_pass
        self._used_in_pass: dict[ExpertKey, int] = {}  # the latest pass that requested it (frequency's clock)
        self._proposed: set[ExpertKey] = set()  # this pass: counted only as a prefetcher's choice so far
        self._demand_pass: dict[ExpertKey, int] = {}  # the latest pass that used it (demand)
        self._prob: dict[ExpertKey, float] = {}
        self._predicted_layers: set[int] = set()  # layers with any forwarded probability in this pass
        self._groups: tuple[list[_Group], list[_Group]] = ([], [])
        # accessed keys whose current-group heap entry is not made yet (a dict: a key accessed again before the
        # next victim() gets one entry, made with its last tick, not one per access)
        self._pending: dict[ExpertKey, None] = {}
        # keys whose probability entry is due (made at the next victim(): only victim reads those heaps, and every
        # event that changes an entry's order key re-marks the key, so the entry made then is the one an
        # immediate push would have left valid; the runtime's decode path then does no heap work per prediction)
        self._prob_pending: set[ExpertKey] = set()
        # marked keys whose probability entry no victim() reads while the clock does not move back: without the
        # split, the current layer's sure uses (skipped unless nothing else is left). Made when the clock moves back,
        # when L changes, or for victim()'s fallback. Marks of layers behind the clock are simply dropped (victim()
        # reads only the frequency heaps there); when the clock moves back, the forwarded keys of the layers it
        # passes are marked again. Most of a pass's forwarded routing then never needs a heap entry.
        self._prob_deferred: set[ExpertKey] = set()
        self._dirty: tuple[set[int], set[int]] = (set(), set())  # layers whose head must be recomputed
        self._top: tuple[list, list] = ([], [])  # (-v, tick, layer, version) of each layer's head, v = t + l
        self._head: tuple[list, list] = ([], [])  # the head entry of each layer, or None
        self._version = 0
        # learned next use: the table of this pass, flat [L * E], and once a table came, per (j, e) of it the
        # state (0 absent, 1 stale, 2 current) and tick, kept up to date by every hook so a victim is a few
        # vectorized operations instead of a pass over the residents in Python
        self._table: np.ndarray | None = None
        self._table_layer = 0  # the clock layer the latest table was made at
        self._table_pass = 0  # and its pass
        self._due: set[ExpertKey] = set()  # table mode: keys forwarded with p >= threshold (or prefetched) this pass
        self._flat_shape: tuple[int, int] | None = None
        self._flat_value: np.ndarray | None = None  # per (j, e): its table entry if resident, else -inf
        self._flat_tick: np.ndarray | None = None
        self._flat_keys: list[ExpertKey] = []
        self._outside: set[ExpertKey] = set()  # residents outside the table's shape: never predicted, farthest
        # calibration of the predicted wait (see `_calibrate`): decayed sums over observed reuses of the predicted
        # gap g_hat = 1 / f and the realized gap g, in passes; wait = L (shift + slope g_hat)
        self._calibration_decay = 0.5 ** (1.0 / calibration_half_life)
        self._n = self._sx = self._sy = self._sxx = self._sxy = 0.0  # n, sum g_hat, sum g, sum g_hat^2, sum g_hat g
        self._slope = 1.0
        self._shift = -1.0
        # the same calibration for a learned table's wait (see `_calibrate_table`): per reuse, the table's predicted
        # extra passes x = g - 1 (from the first table after that use) against the realized extra passes
        # y = min(gap - 1, memory); entries are mapped to o + L a + b (entry - o) at on_next_use
        self._table_sums = [0.0] * 5  # n, sum x, sum y, sum x^2, sum x y
        self._table_slope = 1.0
        self._table_shift = 0.0
        self._predicted_extra: dict[ExpertKey, float] = {}  # key -> the table's x after its latest use
        self._just_used: list[ExpertKey] = []  # first uses of this pass since the latest table
        self._evictions = 0  # in this pass
        self._eviction_rate = 0.0  # evictions per pass, moving average (half-life `half_life` passes)
        self._memory = math.inf  # passes a resident stays (Little's law: residents / evictions per pass)
        # trust in forecasts (see `_calibrate_trust`): per bin (probability bin, + TRUST_BINS when the prefetcher
        # chose the key), decayed counts of forecasts for a later layer of the pass and of those the pass used
        self.calibrate_trust = calibrate_trust
        self._forecast: dict[ExpertKey, int] = {}  # this pass: key -> bin of its latest forecast
        self._trust_n = [0.0] * (2 * TRUST_BINS)
        self._trust_used = [0.0] * (2 * TRUST_BINS)
        self._trust_prior = [(b + 0.5) / TRUST_BINS for b in range(TRUST_BINS)] + [1.0] * TRUST_BINS
        self._trust = list(self._trust_prior)  # calibrated probability per bin
        # per layer: decayed counts of first uses in a pass, and of those the prefetcher had chosen (its recall)
        self._recall_n: list[float] = []
        self._recall_hit: list[float] = []
        self._uncovered: list[float] = []  # 1 - recall per layer (smoothed), as of the last pass start
        self._late: set[ExpertKey] = set()  # this pass: keys whose demand found their prefetch copy in flight
        # per layer: decayed counts of first uses that found a prefetched copy, and of those that found it in flight
        self._copied_n: list[float] = []
        self._copied_late: list[float] = []
        self._late_share: list[float] = []  # late / (copied + 1) per layer, as of the last pass start
        self._arrival: dict[ExpertKey, int] = {}  # residents copied in (PREFETCHED or MISSED) and not used since
        self._grow(num_layers or 0)


class LeastStalePredictedHeuristic(LeastStalePredicted):
    """least-stale-predicted with its hand-made next use only: learned next-use tables are ignored, so that a
    report can show the two side by side under the same prefetcher (they are the same policy without a table)."""

    name = "least-stale-predicted-heuristic"
    batched = True  # declared here too: a subclass inherits the per-request path otherwise

    # tables are ignored: the base class's no-op, so that runtime.offload sees an evictor that does not read them
    # and does not run the predictor's next-use head at all
    on_next_use = EvictionPolicy.on_next_use
