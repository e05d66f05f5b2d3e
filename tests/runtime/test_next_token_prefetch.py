"""The next token's first MoE layer prefetched at pass start (runtime/pass_start.py): a bank whose next-pass head
holds a token table scores MoE layer 0 from the pass's input token when the pass starts, the plain model's tokens
come out unchanged, and a bank without a table (or `next_token=False`) keeps the last layer's state-only proposal.

Run: pytest tests/runtime/test_next_token_prefetch.py
"""

from __future__ import annotations

import copy

import pytest
import torch
from tiny_moe import greedy, tiny_model

import runtime
from runtime.policies.prefetch_predictor import PredictorPrefetch, pair_rows
from specmd_predict.adapters import get_adapter
from specmd_predict.predictors import make_predictor
from specmd_predict.predictors.next_pass import NextPassHead

NEW_TOKENS = 6


def token_experts(token: int, num_experts: int, top_k: int) -> list[int]:
    """The experts the sharp token table below gives `token` (ascending)."""
    return sorted({(3 * token + i) % num_experts for i in range(top_k)})


def token_bank(adapter, vocab_size: int, with_table: bool = True):
    """A seeded residual bank with a next-pass head; with a token table that names `token_experts` for every
    token and a scale that lets it outweigh the state (so the prefetched experts say which token was read)."""
    torch.manual_seed(0)
    bank = make_predictor("residual", adapter=adapter, horizon=1)
    head = NextPassHead.from_adapter(adapter, rank=8, vocab_size=vocab_size if with_table else 0)
    if with_table:
        counts_VE = torch.zeros(vocab_size, adapter.num_experts)
        for token in range(vocab_size):
            counts_VE[token, token_experts(token, adapter.num_experts, adapter.top_k)] = 100.0
        head.set_token_table(counts_VE)
        with torch.no_grad():
            head.token_scale.fill_(100.0)
    bank.attach_next_pass(head)
    return bank


@pytest.fixture(scope="module")
def model():
    return tiny_model("olmoe")  # 3 MoE layers, 8 experts, top-3


def prompt() -> torch.Tensor:
    return torch.randint(2, 120, (1, 7), generator=torch.Generator().manual_seed(5))


def spy_prefetches(engine) -> list[tuple[int, list]]:
    """Record every `CacheDriver.prefetch` call as (the cache's layer clock then, the candidate keys)."""
    calls: list[tuple[int, list]] = []
    issue = engine.driver.prefetch

    def recording(layer, candidates, probabilities, next_use=None, *, transport, pinned=0):
        calls.append((engine.cache.layer, [key for key, _ in candidates]))
        return issue(layer, candidates, probabilities, next_use, transport=transport, pinned=pinned)

    engine.driver.prefetch = recording
    return calls


def test_layer0_prefetched_at_pass_start_from_the_token(model):
    adapter = get_adapter(model)
    bank = token_bank(adapter, model.config.vocab_size)
    ids = prompt()
    want = greedy(model, ids, NEW_TOKENS)
    offloaded = runtime.offload(copy.deepcopy(model), predictors=bank, capacity=0.5, device="cpu")
    engine = runtime.offload_engine(offloaded)
    assert engine.prefetcher.token_at_pass_start
    calls = spy_prefetches(engine)
    got = greedy(offloaded, ids, NEW_TOKENS)
    assert torch.equal(got, want)  # prefetching changes nothing the model computes

    at_start = [keys for clock, keys in calls if clock == -1]  # before the pass's first MoE layer
    # pass 0 has no earlier state; every later pass starts with a layer-0 proposal from its input token
    assert len(at_start) == engine.num_passes - 1 == NEW_TOKENS - 1
    for p, keys in enumerate(at_start, start=1):
        token = int(got[0, ids.shape[1] + p - 1])  # pass p's input: the token pass p - 1 produced
        assert all(key.layer == 0 for key in keys)
        assert sorted(key.expert for key in keys) == token_experts(token, adapter.num_experts, adapter.top_k)
    # the last MoE layer no longer proposes the next pass's layer 0 from its state alone
    last = adapter.num_layers - 1
    assert all(key.layer != 0 for clock, keys in calls if clock == last for key in keys)
    stats = runtime.offload_stats(offloaded)
    assert stats.prefetches_issued > 0 and engine.pass_start_reads == 0  # CPU: nothing is a blocking read


@pytest.mark.parametrize("case", ["no table", "next_token off"])
def test_state_only_path_stays_without_a_token_table(model, case):
    adapter = get_adapter(model)
    bank = token_bank(adapter, model.config.vocab_size, with_table=case != "no table")
    prefetch = PredictorPrefetch(bank, horizon=1, top_k=adapter.top_k, next_token=False)
    offloaded = runtime.offload(
        copy.deepcopy(model),
        predictors=bank,
        capacity=0.5,
        prefetch=prefetch if case == "next_token off" else None,
        device="cpu",
    )
    engine = runtime.offload_engine(offloaded)
    assert not engine.prefetcher.token_at_pass_start
    assert not offloaded.get_input_embeddings()._forward_pre_hooks  # no pass-start hook installed
    calls = spy_prefetches(engine)
    greedy(offloaded, prompt(), NEW_TOKENS)
    assert all(clock != -1 for clock, _ in calls)
    last = adapter.num_layers - 1
    from_last = [keys for clock, keys in calls if clock == last]
    assert len(from_last) == NEW_TOKENS and all(keys and keys[0].layer == 0 for keys in from_last)


def test_pair_rows_matches_each_token_with_its_sequence_state():
    hidden_TD = torch.arange(12.0).reshape(6, 2)
    assert torch.equal(pair_rows(hidden_TD, 6), hidden_TD)  # batched decode: one to one
    assert torch.equal(pair_rows(hidden_TD, 1), hidden_TD[-1:])  # decode after a prefill: the last row
    assert torch.equal(pair_rows(hidden_TD, 2), hidden_TD[[2, 5]])  # 2 sequences of 3: each one's last row
    assert torch.equal(pair_rows(hidden_TD, 4), hidden_TD[[5, 5, 5, 5]])  # a new prompt: the last row for all


def test_next_token_option_is_checked():
    with pytest.raises(ValueError, match="next_token"):
        PredictorPrefetch(object(), horizon=1, top_k=2, next_token="yes")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_reads_at_most_one_more_per_pass(model):
    adapter = get_adapter(model)
    bank = token_bank(adapter, model.config.vocab_size)
    ids = prompt()
    want = greedy(model, ids, NEW_TOKENS)
    offloaded = runtime.offload(copy.deepcopy(model), predictors=bank, capacity=0.5, device="cuda")
    got = greedy(offloaded, ids.cuda(), NEW_TOKENS)
    assert torch.equal(got.cpu(), want)
    engine = runtime.offload_engine(offloaded)
    assert engine.host_reads == engine.num_passes * adapter.num_layers  # the engine's one per MoE layer
    assert engine.pass_start_reads == engine.num_passes - 1  # plus this one at each later pass's start
