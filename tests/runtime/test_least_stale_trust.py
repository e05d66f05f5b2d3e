"""least-stale-predicted's trust in predictions, measured online: calibrated forecasts, a prefetcher's choices counted
as weighted requests, the pass-start clock, and the prefetcher's recall per layer in table mode.

    pytest tests/runtime/test_least_stale_trust.py

Tiny deterministic passes through the real ExpertCache (one token per pass, the drivers' hook order: layer start,
the layer's routing as probability 1, demand requests, then the prefetcher's forecasts and copies).
"""

from __future__ import annotations

import pytest
import torch

from runtime.expert_cache import ExpertCache
from runtime.policies import make_eviction
from runtime.policies.least_stale_predicted import TRUST_BINS
from specmd_predict.routing import ExpertKey

NUM_LAYERS = 4


def run_passes(cache, num_passes, routed, proposed, probability=0.95, table=None, num_experts=12):
    """`routed(p, j)` / `proposed(p, j)`: experts layer j uses / the prefetcher chooses for it in pass p (chosen at
    layer j - 1 with `probability`, every other expert of layer j at 0, as a predictor's full row; copied at once).
    Returns the demand misses of each pass."""
    misses_per_pass = []
    for p in range(num_passes):
        cache.start_pass()
        before = cache.stats.misses
        for layer in range(NUM_LAYERS):
            cache.start_layer(layer)
            keys = [ExpertKey(layer, e) for e in sorted(routed(p, layer))]
            cache.predictions(dict.fromkeys(keys, 1.0))
            for key in keys:
                cache.request(key)
                cache.pin(key)
            if table is not None:
                cache.next_use(layer, table)
            if layer + 1 < NUM_LAYERS:
                chosen = [ExpertKey(layer + 1, e) for e in sorted(proposed(p, layer + 1))]
                row = {ExpertKey(layer + 1, e): 0.0 for e in range(num_experts)}
                cache.predictions(row | dict.fromkeys(chosen, probability))
                for key in chosen:
                    if cache.prefetch(key) is not None:
                        cache.complete(key)
            cache.unpin_all()
        misses_per_pass.append(cache.stats.misses - before)
    return misses_per_pass


def test_choices_that_are_never_used_lose_their_trust_and_stop_evicting_the_working_set():
    # every layer uses experts 0 and 1; the prefetcher always chooses 6 and 7 (95% sure), never used. With one slot
    # beyond the working set, trusting the choices evicts a working-set expert for each wrong pair
    def routed(p, j):
        return {0, 1}

    def proposed(p, j):
        return {6, 7}

    misses = {}
    for calibrate in (False, True):
        policy = make_eviction("least-stale-predicted", num_layers=NUM_LAYERS, calibrate_trust=calibrate)
        misses[calibrate] = sum(run_passes(ExpertCache(9, policy, num_layers=NUM_LAYERS), 60, routed, proposed)[30:])
        if calibrate:
            assert policy._trust[2 * TRUST_BINS - 1] < 0.1  # a 95%-sure choice is borne out almost never
    assert misses[False] > 0
    assert misses[True] == 0


def test_choices_that_are_borne_out_keep_their_trust():
    def routed(p, j):
        return {p % 3, 3 + p % 2}

    policy = make_eviction("least-stale-predicted", num_layers=NUM_LAYERS)
    run_passes(ExpertCache(12, policy, num_layers=NUM_LAYERS), 40, routed, routed)
    assert policy._trust[2 * TRUST_BINS - 1] > 0.9


def test_counting_the_prefetchers_choices_stops_copying_them_back_every_pass():
    # experts 0 and 1 every pass, one of 2..9 in turn (each every 8th pass), and the prefetcher always choosing 10
    # and 11, never used: without counting choices, those look never used, are evicted first and copied back each
    # pass (churn); counted at weight 0.25 they outrank the rarely used ones and stay
    def routed(p, j):
        return {0, 1, 2 + (p + j) % 8}

    def proposed(p, j):
        return {10, 11}

    copies, misses = {}, {}
    for weight in (0.0, 0.25):
        policy = make_eviction("least-stale-predicted", num_layers=NUM_LAYERS, proposal_weight=weight)
        cache = ExpertCache(24, policy, num_layers=NUM_LAYERS)
        run_passes(cache, 40, routed, proposed)
        issued = cache.stats.prefetches_issued
        misses[weight] = sum(run_passes(cache, 40, routed, proposed))
        copies[weight] = cache.stats.prefetches_issued - issued
    assert copies[0.0] >= 40 * 6  # the 6 wrong choices of every pass copied back
    assert copies[0.25] <= copies[0.0] / 10
    assert misses[0.25] <= misses[0.0]


def test_a_prefetch_at_the_pass_start_is_a_use_ahead_of_the_clock():
    # between a pass start and its first layer the clock is (p, -1): a layer-0 expert prefetched there (the next
    # token's layer 0) is a sure use of this pass, not a layer behind the clock
    policy = make_eviction("least-stale-predicted", num_layers=NUM_LAYERS, calibrate_trust=False)
    cache = ExpertCache(8, policy, num_layers=NUM_LAYERS)
    run_passes(cache, 5, lambda p, j: {0, 1}, lambda p, j: set())
    cache.start_pass()
    assert policy._layer == -1
    cache.predictions({ExpertKey(0, 5): 0.9})
    assert cache.prefetch(ExpertKey(0, 5)) is not None  # never used before: the lowest frequency there is
    cache.complete(ExpertKey(0, 5))
    assert policy.next_use(ExpertKey(0, 5)) == 1  # layer 0 is one layer-step ahead of (p, -1)
    assert policy.victim(set(cache.slots)) != ExpertKey(0, 5)


def test_layers_the_prefetcher_covers_give_their_experts_up_first_in_table_mode():
    # layers 0 and 1 each use one of six experts in turn, more than the cache holds; layer 1's comes back by prefetch
    # (chosen at layer 0, in time), layer 0's only by a miss. With a table that rates every resident alike, the
    # victims come from layer 1, whose next use will be prefetched in time, and layer 0's experts stay
    def routed(p, j):
        return {p % 6} if j < 2 else {7}

    table = torch.full((NUM_LAYERS, 8), 20.0)
    policy = make_eviction("least-stale-predicted", num_layers=NUM_LAYERS)
    cache = ExpertCache(8, policy, num_layers=NUM_LAYERS)
    proposed = lambda p, j: routed(p, j) if j == 1 else set()  # noqa: E731
    misses = run_passes(cache, 30, routed, proposed, table=table, num_experts=8)
    assert policy._uncovered[1] < 0.3 and policy._uncovered[0] == 1.0  # layer 0: every use a miss
    assert sum(misses[10:]) == 20  # one miss a pass: layer 0's six take five slots, layer 1's comes by prefetch
    cache.start_pass()
    assert sum(key[0] == 0 for key in cache.slots) == 5
    assert policy.victim(set(cache.slots))[0] == 1
    off = make_eviction("least-stale-predicted", num_layers=NUM_LAYERS, recall_weighting=False)
    assert (off.calibrated_table(1, table.double().reshape(-1).numpy(), (NUM_LAYERS, 8)) == 20.0).all()


@pytest.mark.parametrize("late", [False, True])
def test_only_a_prefetch_in_time_counts_as_recall(late):
    policy = make_eviction("least-stale-predicted", num_layers=NUM_LAYERS)
    cache = ExpertCache(8, policy, num_layers=NUM_LAYERS)
    cache.start_pass()
    cache.start_layer(0)
    cache.next_use(0, torch.full((NUM_LAYERS, 8), 5.0))  # recall is measured in table mode, where it is used
    key = ExpertKey(1, 3)
    assert cache.prefetch(key) is not None
    if not late:
        cache.complete(key)
    cache.start_layer(1)
    assert cache.request(key).status == ("late" if late else "hit")
    assert policy._recall_n[1] == 1.0 and policy._recall_hit[1] == (0.0 if late else 1.0)


@pytest.mark.parametrize("weight", [-0.1, 1.5])
def test_a_proposal_weight_outside_zero_one_is_refused(weight):
    with pytest.raises(ValueError, match="proposal_weight"):
        make_eviction("least-stale-predicted", proposal_weight=weight)


def test_a_prefetched_expert_then_used_counts_by_whether_its_use_waited():
    # the prefetcher's choice counts proposal_weight w; a demand in the same pass that still waited for the copy
    # (late) brings the pass's weight to 1, as a demand alone; one whose copy landed in time counts w + s (1 - w),
    # s its layer's measured late share of prefetched uses (0 while every copy landed in time)
    decay, w = 0.5 ** (1 / 16), 0.25

    def weight_of_last(uses):  # one pass per use, each of a new expert of layer 1: "demand", "late" or "in time"
        policy = make_eviction("least-stale-predicted", num_layers=NUM_LAYERS, proposal_weight=w)
        cache = ExpertCache(8, policy, num_layers=NUM_LAYERS)
        for e, use in enumerate(uses):
            key = ExpertKey(1, e)
            cache.start_pass()
            cache.start_layer(0)
            if use != "demand":
                assert cache.prefetch(key) is not None
                if use == "in time":
                    cache.complete(key)
            cache.start_layer(1)
            assert cache.request(key).status == {"demand": "miss", "late": "late", "in time": "hit"}[use]
        return policy, policy.state_of(key)["frequency"] / (1 - decay)

    assert weight_of_last(["demand"])[1] == pytest.approx(1.0)
    assert weight_of_last(["late"])[1] == pytest.approx(1.0)
    assert weight_of_last(["in time"])[1] == pytest.approx(w)
    # after two late uses at layer 1 its late share is late / (uses + 1), both counts decayed at each pass start
    policy, weight = weight_of_last(["late", "late", "in time"])
    share = (decay + 1) * decay / ((decay + 1) * decay + 1)
    assert policy._late_share[1] == pytest.approx(share)
    assert weight == pytest.approx(w + share * (1 - w))


def test_a_prefetched_expert_never_used_counts_only_the_proposal_weight():
    policy = make_eviction("least-stale-predicted", num_layers=NUM_LAYERS, proposal_weight=0.25)
    cache = ExpertCache(8, policy, num_layers=NUM_LAYERS)
    cache.start_pass()
    cache.start_layer(0)
    cache.prefetch(ExpertKey(2, 5))
    cache.complete(ExpertKey(2, 5))
    cache.start_pass()  # the next pass uses it: a fresh pass, a full request
    cache.start_layer(2)
    cache.request(ExpertKey(2, 5))
    decay = 0.5 ** (1 / 16)
    assert policy.state_of(ExpertKey(2, 5))["frequency"] == pytest.approx((1 - decay) * (0.25 * decay + 1.0))


def test_a_choice_is_a_sure_use_in_table_mode_whatever_its_trust():
    # the prefetcher keeps choosing experts 6 and 7 that are never used: their calibrated trust falls below the
    # threshold. A new choice for the next layer must still outrank a sure use two layers farther as a keeper (the
    # farther one goes first, as by layer distance); read as an expected wait, its low trust made the choice the victim
    def routed(p, j):
        return {0, 1}

    def proposed(p, j):
        return {6, 7}

    table = torch.full((NUM_LAYERS, 12), 20.0)
    policy = make_eviction("least-stale-predicted", num_layers=NUM_LAYERS)
    cache = ExpertCache(12, policy, num_layers=NUM_LAYERS)
    run_passes(cache, 30, routed, proposed, table=table)
    assert policy._trust[2 * TRUST_BINS - 1] < policy.threshold  # 95%-sure choices, rarely borne out
    cache.start_pass()
    cache.start_layer(0)
    cache.next_use(0, table)
    near, far = ExpertKey(1, 6), ExpertKey(3, 0)
    cache.predictions({far: 1.0})
    if cache.prefetch(near) is not None:
        cache.complete(near)
    assert near in cache.slots and far in cache.slots
    assert policy.state_of(near)["probability"] < policy.threshold
    assert policy.victim({near, far}) == far
