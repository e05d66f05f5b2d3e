"""The harvest stores exactly what the model's own routers did, in the layout and manifest `load_harvest` reads.

Tiny random models of four families (OLMoE, Mixtral, Qwen2-MoE with shared experts, DeepSeek-V3 with a
dense first layer and group-limited routing) are harvested on a
few stdlib files and checked against a fresh forward of the full model with router hooks; the embedded
model is checked the same way when it is present.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from datasets import load_from_disk
from transformers import AutoModelForCausalLM

from data_pipelines import HarvestConfig, HarvestError, ensure_harvest, harvest, load_harvest
from data_pipelines.sources import pack
from specmd_predict.adapters import get_adapter
from specmd_predict.capture import record_routing
from specmd_predict.embedded import EMBEDDED_MODEL_DIR
from specmd_predict.io import lock_path

SEQ_LEN = 32
MANIFEST_KEYS = {
    "format_version", "model", "corpus", "args", "versions", "git_commit", "num_tokens", "num_sequences",
    "hidden_layers", "prompt_tokens", "validation_sequence_ids", "created",
}  # fmt: skip
MODEL_KEYS = {
    "model_type", "num_layers", "num_experts", "top_k", "hidden_size", "router_fingerprint", "name_or_path",
    "revision", "expert_bytes", "dtype",
}  # fmt: skip


def tiny_config(model_dir, corpus, tmp_path, **overrides) -> HarvestConfig:
    args = dict(model=str(model_dir), dataset=str(corpus), seq_len=SEQ_LEN, max_tokens=SEQ_LEN * 12, batch_size=4,
                output_root=str(tmp_path / "harvests"), progress=False)  # fmt: skip
    return HarvestConfig(**{**args, **overrides})


def rerun_routers(model_dir, h, batch_size: int, dtype=torch.float32):
    """Per batch of stored sequences (same grouping as the harvest): the routers' outputs on a full forward."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, experts_implementation="eager").eval()
    adapter = get_adapter(model)
    tokens = h.dataset.with_format("numpy")[:]["token_id"].reshape(-1, h.manifest["seq_len"])
    for start in range(0, len(tokens), batch_size):
        ids_BS = torch.from_numpy(tokens[start : start + batch_size]).long()
        with torch.no_grad(), record_routing(adapter) as record:
            model(input_ids=ids_BS)  # the whole LM, not the decoder the harvest calls
        rows = slice(start * h.manifest["seq_len"], (start + len(ids_BS)) * h.manifest["seq_len"])
        yield adapter, rows, record


@pytest.mark.parametrize("family", ["olmoe", "mixtral", "qwen2_moe", "deepseek_v3"])
def test_stored_experts_are_the_routers_own_selection(family, tiny_model_dir, text_corpus, tmp_path):
    model_dir = tiny_model_dir(family)
    h = load_harvest(ensure_harvest(tiny_config(model_dir, text_corpus, tmp_path)))
    stored = h.dataset.with_format("torch", columns=["expert_ids", "expert_weights", "hidden"])[:]
    for adapter, rows, record in rerun_routers(model_dir, h, batch_size=4):
        for layer in range(adapter.num_layers):
            routing = record.routings[layer][0]
            assert torch.equal(stored["expert_ids"][rows, layer].long(), routing.expert_ids_TK)
            torch.testing.assert_close(stored["expert_weights"][rows, layer].float(), routing.weights_TK.float(),
                                       atol=1e-3, rtol=1e-3)  # fmt: skip
            torch.testing.assert_close(stored["hidden"][rows, layer].float(), record.inputs[layer][0].float(),
                                       atol=2e-3, rtol=2e-3)  # fmt: skip


def test_float16_hidden_reproduces_selection_exactly(tiny_model_dir, text_corpus, tmp_path):
    """A model run in float16 feeds its routers float16 inputs: storing them is lossless, so re-routing the
    stored hidden state must give the stored selection exactly (same rows in one call, as in the forward)."""
    model_dir = tiny_model_dir("olmoe")
    h = load_harvest(ensure_harvest(tiny_config(model_dir, text_corpus, tmp_path, dtype="float16")))
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float16).eval()
    adapter = get_adapter(model)
    data = h.dataset.with_format("torch", columns=["expert_ids", "hidden"])[:]
    rows_per_batch = 4 * SEQ_LEN
    for start in range(0, h.manifest["num_tokens"], rows_per_batch):
        rows = slice(start, start + rows_per_batch)
        for layer in range(adapter.num_layers):
            got = adapter.route(layer, data["hidden"][rows, layer].to(torch.float16))
            assert torch.equal(got.expert_ids_TK, data["expert_ids"][rows, layer].long())


def test_float32_hidden_reproduces_selection_up_to_near_ties(tiny_model_dir, text_corpus, tmp_path):
    """float32 router inputs are rounded to float16 when stored: a token whose k-th and (k+1)-th experts are
    within rounding error may flip. The exact float32 path is the first test (stored ids == routers' ids);
    here at least 99% of (token, layer) selections must match and every mismatch must be a near-tie."""
    model_dir = tiny_model_dir("olmoe")
    h = load_harvest(ensure_harvest(tiny_config(model_dir, text_corpus, tmp_path)))
    adapter = get_adapter(AutoModelForCausalLM.from_pretrained(model_dir).eval())
    data = h.dataset.with_format("torch", columns=["expert_ids", "hidden"])[:]
    agree, total = 0, 0
    for layer in range(adapter.num_layers):
        hidden_TD = data["hidden"][:, layer].float()
        got = adapter.route(layer, hidden_TD).sorted_by_expert().expert_ids_TK
        want = data["expert_ids"][:, layer].long().sort(dim=-1).values
        same_T = (got == want).all(dim=-1)
        agree += int(same_T.sum())
        total += len(same_T)
        if not same_T.all():
            scores_TE = adapter.selection_scores(layer, hidden_TD[~same_T]).sort(dim=-1, descending=True).values
            gap = scores_TE[:, adapter.top_k - 1] - scores_TE[:, adapter.top_k]
            assert (gap < 1e-2).all(), "a mismatch that is not a near-tie"
    assert agree / total >= 0.99


def test_teacher_forced_routing_equals_decode_routing(tiny_model_dir, text_corpus, tmp_path):
    """One forward over whole sequences stands for prefill + decode: replay one sequence with a KV cache."""
    model_dir = tiny_model_dir("olmoe")
    h = load_harvest(ensure_harvest(tiny_config(model_dir, text_corpus, tmp_path)))
    prompt = h.manifest["prompt_tokens"]
    row = h.dataset.with_format("torch", columns=["token_id", "expert_ids"])[:SEQ_LEN]
    model = AutoModelForCausalLM.from_pretrained(model_dir, experts_implementation="eager").eval()
    adapter = get_adapter(model)
    ids_S = row["token_id"].long()
    with torch.no_grad(), record_routing(adapter, keep_inputs=False) as record:
        cache = model(input_ids=ids_S[None, :prompt], use_cache=True).cache
        for position in range(prompt, SEQ_LEN):
            cache = model(input_ids=ids_S[None, position : position + 1], cache=cache, use_cache=True).cache
    for layer in range(adapter.num_layers):
        decoded_SK = torch.cat([r.sorted_by_expert().expert_ids_TK for r in record.routings[layer]])
        stored_SK = row["expert_ids"][:, layer].long().sort(dim=-1).values
        agreement = (decoded_SK == stored_SK).all(dim=-1).float().mean()
        assert agreement >= 0.95  # cached attention differs in the last bits; ties on a random model are rare


def test_layout_manifest_and_splits(tiny_model_dir, tiny_tokenizer, text_corpus, tmp_path):
    config = tiny_config(tiny_model_dir("olmoe"), text_corpus, tmp_path, hidden_layers=[0, 2], keep_router_logits=True)
    path = ensure_harvest(config)
    h = load_harvest(path)
    m = h.manifest
    assert MANIFEST_KEYS <= set(m) and MODEL_KEYS <= set(m["model"])
    assert json.loads((path / "manifest.json").read_text()) == m
    assert m["num_sequences"] == 12 and m["num_tokens"] == 12 * SEQ_LEN == len(h.dataset)
    assert m["hidden_layers"] == [0, 2] and m["prompt_tokens"] == SEQ_LEN * 3 // 4
    assert m["validation_sequence_ids"] == [11]  # round(12 * 0.1), the tail
    assert {"torch", "transformers", "datasets"} <= set(m["versions"])
    assert m["model"]["checkpoint_dtype"] == "float32" and m["model"]["checkpoint_expert_bytes"] == 3 * 16 * 32 * 4
    assert path.name.startswith(f"{tiny_model_dir('olmoe').name}-") and len(path.name.rsplit("-", 1)[1]) == 8

    raw = load_from_disk(str(path / "data"))
    assert raw.features["expert_ids"].dtype == "int16" and raw.features["hidden"].shape == (2, 32)
    assert raw.features["router_logits"].shape == (3, 8) and raw.features["expert_weights"].dtype == "float16"
    cols = raw.with_format("numpy")[:]
    assert (cols["position"] == np.tile(np.arange(SEQ_LEN), 12)).all()
    assert (cols["sequence_id"] == np.repeat(np.arange(12), SEQ_LEN)).all()
    assert (cols["is_prompt"] == (cols["position"] < m["prompt_tokens"])).all()
    # Tokens: the corpus's files in order, each tokenized and followed by EOS, cut into rows.
    files = sorted(text_corpus.glob("*.txt"))
    expected = np.stack(list(pack((f.read_text() for f in files), tiny_tokenizer, SEQ_LEN, 12)))
    assert (cols["token_id"].reshape(12, SEQ_LEN) == expected).all()
    # Router logits agree with the selection: OLMoE's top-k of softmax(logits) is the top-k of the logits.
    top_TLK = np.argsort(-cols["router_logits"].astype(np.float32), axis=-1, kind="stable")[..., :2]
    assert (np.sort(top_TLK, -1) == np.sort(cols["expert_ids"], -1)).all(-1).mean() >= 0.99

    assert len(h.train) == 11 * SEQ_LEN and len(h.validation) == SEQ_LEN
    assert set(h.validation[:]["sequence_id"]) == {11} and 11 not in set(h.train[:]["sequence_id"])


def test_same_arguments_reuse_the_harvest(tiny_model_dir, text_corpus, tmp_path):
    config = tiny_config(tiny_model_dir("olmoe"), text_corpus, tmp_path, max_tokens=SEQ_LEN * 4, hidden_layers=[])
    path = ensure_harvest(config)
    created = load_harvest(path).manifest["created"]
    (path / "marker").write_text("still here")
    assert ensure_harvest(config) == path and (path / "marker").exists()  # not redone
    assert load_harvest(path).manifest["created"] == created
    assert "hidden" not in load_harvest(path).dataset.column_names
    other = tiny_config(tiny_model_dir("olmoe"), text_corpus, tmp_path, max_tokens=SEQ_LEN * 5, hidden_layers=[])
    assert other.output_path() != path
    # A fixed output_dir holding a harvest of other arguments is only replaced when asked.
    fixed = tiny_config(tiny_model_dir("olmoe"), text_corpus, tmp_path, max_tokens=SEQ_LEN * 5, output_dir=str(path))
    with pytest.raises(HarvestError, match="other arguments"):
        ensure_harvest(fixed)
    fixed.overwrite = True
    assert ensure_harvest(fixed) == path and not (path / "marker").exists()
    assert load_harvest(path).manifest["num_sequences"] == 5


def test_interrupted_harvest_leaves_nothing(tiny_model_dir, text_corpus, tmp_path, interrupted):
    from data_pipelines import recorder

    config = tiny_config(tiny_model_dir("olmoe"), text_corpus, tmp_path / "new" / "root")
    target = config.output_path()
    stale = target.parent / f".{target.name}.partial-999999999"
    with interrupted(recorder.BatchRecorder, "record") as calls, pytest.raises(KeyboardInterrupt):
        harvest(config)
    assert calls["n"] == 2
    # no data, no temp folder: the folders it made hold only the lock file, which must stay (a waiter may hold it)
    left = sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "new").rglob("*") if p.is_file())
    assert left == [lock_path(target).relative_to(tmp_path).as_posix()]
    stale.mkdir(parents=True)  # left by a killed process: removed by the next harvest of the same target
    path = harvest(config)
    assert load_harvest(path).manifest["num_sequences"] == 12 and not stale.exists()
    assert sorted(p.name for p in path.parent.iterdir()) == sorted([path.name, lock_path(path).name])


@pytest.mark.skipif(not (EMBEDDED_MODEL_DIR / "config.json").exists(), reason="embedded model not built yet")
def test_embedded_model_on_embedded_corpus(tmp_path):
    config = HarvestConfig(max_tokens=256 * 8, batch_size=4, output_root=str(tmp_path), progress=False)
    h = load_harvest(ensure_harvest(config))
    assert h.manifest["model"]["name_or_path"] == "embedded" and h.manifest["corpus"]["source"] == "embedded"
    assert h.manifest["validation_sequence_ids"] == [7]
    stored = h.dataset.with_format("torch", columns=["expert_ids", "hidden"])[:]
    for adapter, rows, record in rerun_routers(EMBEDDED_MODEL_DIR, h, batch_size=4):
        for layer in range(adapter.num_layers):
            assert torch.equal(stored["expert_ids"][rows, layer].long(), record.routings[layer][0].expert_ids_TK)
            torch.testing.assert_close(stored["hidden"][rows, layer].float(), record.inputs[layer][0],
                                       atol=2e-3, rtol=2e-3)  # fmt: skip


def test_concurrent_requests_for_one_harvest_run_it_once(tiny_model_dir, text_corpus, tmp_path, monkeypatch):
    from data_pipelines import pipeline

    config = tiny_config(tiny_model_dir("olmoe"), text_corpus, tmp_path, max_tokens=SEQ_LEN * 4)
    real_write, writes = pipeline._write, []

    def counting_write(*args, **kwargs):
        writes.append(1)
        return real_write(*args, **kwargs)

    monkeypatch.setattr(pipeline, "_write", counting_write)
    with ThreadPoolExecutor(2) as pool:
        paths = list(pool.map(lambda _: ensure_harvest(config), range(2)))
    assert paths[0] == paths[1] and len(writes) == 1
    # no temp files left; the lock file stays (filelock keeps it so that waiters share one inode)
    assert sorted(p.name for p in paths[0].parent.iterdir()) == sorted([paths[0].name, lock_path(paths[0]).name])


def test_only_content_arguments_change_the_folder_name(tmp_path):
    base = HarvestConfig(output_root=str(tmp_path))
    same = HarvestConfig(output_root=str(tmp_path), batch_size=3, device="cpu", num_threads=1, progress=False)
    assert base.output_path() == same.output_path()
    for change in ({"seq_len": 128}, {"hidden_layers": [0]}, {"keep_router_logits": True}, {"seed": 1}):
        assert HarvestConfig(output_root=str(tmp_path), **change).output_path() != base.output_path()


def test_small_model_runs_on_one_thread_and_gives_the_setting_back(tiny_model_dir, text_corpus, tmp_path):
    torch.set_num_threads(2)
    try:
        config = tiny_config(tiny_model_dir("olmoe"), text_corpus, tmp_path, max_tokens=SEQ_LEN * 2)
        assert load_harvest(harvest(config)).manifest["args"]["num_threads"] == 1  # hidden size 32 < 1024
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)  # as conftest set it
