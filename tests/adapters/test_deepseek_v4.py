"""DeepSeek-V4's hash-routed layers: token ids are their routing input, in the adapter, the harvest and the runtime.

Run: pytest tests/adapters/test_deepseek_v4.py
The tiny model (tests/tiny_models.py) has two hash-routed MoE layers (0, 1) before a top-k one (2), with random
token-to-experts tables; test_adapters.py checks every layer's routing against the model's own routers.
"""

from __future__ import annotations

import copy

import pytest
import torch

import runtime
from data_pipelines.recorder import BatchRecorder
from specmd_predict.adapters import get_adapter
from specmd_predict.predictors.router_reuse import RouterReusePredictor
from tests.tiny_models import tiny_model

HASH_LAYERS = [0, 1]


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return tiny_model("deepseek_v4", eos_token_id=None)  # no early stop: generations run to max_new_tokens


def token_ids(num_tokens: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(1, 128, (1, num_tokens), generator=torch.Generator().manual_seed(seed))


def test_hash_layers_choose_from_the_token_alone(model):
    adapter = get_adapter(model)
    assert adapter.hash_routed_layers == HASH_LAYERS
    ids_T = token_ids(9).reshape(-1)
    generator = torch.Generator().manual_seed(0)
    for layer in HASH_LAYERS:
        table_VK = adapter.hash_table(layer)
        a, b = (adapter.route(layer, torch.randn(9, 32, generator=generator), token_ids_T=ids_T) for _ in range(2))
        assert torch.equal(a.expert_ids_TK, table_VK[ids_T]) and torch.equal(b.expert_ids_TK, table_VK[ids_T])
        assert not torch.allclose(a.weights_TK, b.weights_TK)  # the hidden state still weights them
    assert adapter.hash_table(2) is None


def test_a_hash_layer_without_token_ids_is_a_clear_error_unless_they_are_watched(model):
    adapter = get_adapter(model)
    hidden_TD = torch.randn(6, 32, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="MoE layer 1 of this deepseek_v4 model is hash-routed"):
        adapter.route(1, hidden_TD)
    adapter.route(2, hidden_TD)  # a top-k layer needs none
    handle = adapter.watch_routing_inputs()
    try:
        ids_BS = token_ids(6)
        with torch.no_grad():
            model(ids_BS)
        watched = adapter.route(1, hidden_TD)
    finally:
        handle.remove()
    assert torch.equal(watched.expert_ids_TK, adapter.route(1, hidden_TD, token_ids_T=ids_BS[0]).expert_ids_TK)
    with pytest.raises(ValueError, match="pass token_ids_T for the 4 rows"):  # watched ids of another batch
        adapter.route(1, hidden_TD[:4])


def test_router_reuse_predicts_a_hash_layer_exactly_and_not_the_next_pass(model):
    adapter = get_adapter(model)
    ids_T = token_ids(5).reshape(-1)
    adapter.token_ids_T = ids_T
    predictor = RouterReusePredictor(adapter, horizon=1)
    probs_THE = predictor.predict(0, torch.randn(5, 32, generator=torch.Generator().manual_seed(0)))
    predicted_TK = probs_THE[:, 0].topk(adapter.top_k).indices.sort(-1).values
    assert torch.equal(predicted_TK, adapter.hash_table(1)[ids_T].sort(-1).values)
    assert not predictor.predicts_next_pass  # layer 0 of the next pass follows a token not yet sampled


def test_the_harvest_records_the_tables_choice_and_the_token(model):
    adapter = get_adapter(model)
    ids_BS = torch.cat([token_ids(8, seed=2), token_ids(8, seed=3)])
    with BatchRecorder(model, adapter, hidden_layers=[], keep_router_logits=False, prompt_tokens=4) as recorder:
        columns = recorder(ids_BS, first_sequence_id=0)
    assert torch.equal(torch.from_numpy(columns["token_id"]).long(), ids_BS.reshape(-1))
    for layer in HASH_LAYERS:
        expected_TK = adapter.hash_table(layer)[ids_BS.reshape(-1)]
        assert torch.equal(torch.from_numpy(columns["expert_ids"][:, layer]).long(), expected_TK)


def test_offloaded_generation_is_identical(model):
    prompt_BS = torch.cat([token_ids(10, seed=4), token_ids(10, seed=5)])

    def greedy(m):
        return m.generate(prompt_BS, max_new_tokens=8, do_sample=False, pad_token_id=0)

    reference = greedy(model)
    offloaded = runtime.offload(copy.deepcopy(model), capacity=0.3)
    assert torch.equal(greedy(offloaded), reference)
    stats = runtime.offload_stats(offloaded)
    assert stats.prefetch == "router-reuse" and stats.passes == 8 and stats.evictions > 0
    assert stats.hits + stats.misses + stats.late_prefetches == stats.requests


def test_the_fingerprint_sees_the_hash_table(model):
    adapter = get_adapter(copy.deepcopy(model))
    before = adapter.router_fingerprint()
    with torch.no_grad():
        table_VK = adapter.hash_table(0)
        table_VK[3] = table_VK[3].roll(1)  # token 3 goes to the same experts in another order: other weights' slots
        table_VK[5] = table_VK[4]
    assert adapter.router_fingerprint() != before


def test_harvested_rows_lend_their_tokens_to_router_reuse(model):
    """Replayed on a harvest's rows (no forward to watch), router reuse of a hash-routed layer reads the rows'
    token_id column; a split without one is a clear error, and the watched ids are back afterwards."""
    from specmd_predict.predictors.row_tokens import rows_token_ids, token_columns

    adapter = get_adapter(model)
    predictor = RouterReusePredictor(adapter, horizon=1)
    hidden_TD = torch.randn(7, 32, generator=torch.Generator().manual_seed(0))
    ids_T = token_ids(7, seed=6).reshape(-1)
    adapter.token_ids_T = watched = token_ids(3, seed=7).reshape(-1)
    with rows_token_ids([predictor], ids_T):
        predicted_TK = predictor.predict(0, hidden_TD)[:, 0].topk(adapter.top_k).indices.sort(-1).values
    assert torch.equal(predicted_TK, adapter.hash_table(1)[ids_T].sort(-1).values)
    assert adapter.token_ids_T is watched
    with pytest.raises(ValueError, match=r"MoE layers \[0, 1\] .* no token_id column"):
        with rows_token_ids([predictor], None):
            pass

    class Split:  # the one attribute token_columns reads of a datasets.Dataset
        column_names = ["hidden", "expert_ids", "token_id"]

    assert token_columns([predictor], Split()) == ["token_id"]
    olmoe = RouterReusePredictor(get_adapter(tiny_model("olmoe")), horizon=1)
    assert token_columns([olmoe], Split()) == []  # a family without hash-routed layers reads nothing more


def test_the_residual_kind_is_refused_in_words_a_cli_user_reads(model):
    from specmd_predict.predictors.residual import router_fits_residual

    reason = router_fits_residual(get_adapter(model))
    assert reason == (
        "MoE layer 0 of this deepseek_v4 model is hash-routed (its experts follow from the token id, not from a "
        "router's logits)"
    )
