"""`specmd-harvest --mode generate` (data_pipelines/generate.py): every pass of real KV-cache generation is
recorded with pass, phase and position, in the harvest layout, and sampling is seeded.

    pytest tests/data_pipelines/test_generate.py
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from data_pipelines import HarvestConfig, HarvestError, ensure_harvest, load_harvest
from data_pipelines.cli import main
from specmd_predict.adapters import get_adapter
from specmd_predict.capture import record_routing

PROMPT, NEW = 12, 10


def gen_config(model_dir, corpus, tmp_path, **overrides) -> HarvestConfig:
    args = dict(model=str(model_dir), dataset=str(corpus), mode="generate", prompt_tokens=PROMPT, new_tokens=NEW,
                max_tokens=(PROMPT + NEW) * 6, batch_size=4, device="cpu", output_root=str(tmp_path / "harvests"),
                progress=False)  # fmt: skip
    return HarvestConfig(**{**args, **overrides})


@pytest.fixture(scope="module")
def greedy(tiny_model_dir, text_corpus, tmp_path_factory):
    model_dir = tiny_model_dir("olmoe")
    return model_dir, load_harvest(ensure_harvest(gen_config(model_dir, text_corpus, tmp_path_factory.mktemp("g"))))


def test_layout_pass_phase_position(greedy):
    _, h = greedy
    m = h.manifest
    assert (m["mode"], m["num_sequences"], m["seq_len"], m["num_tokens"]) == ("generate", 6, PROMPT + NEW, 6 * 22)
    assert {"pass", "phase", "sequence", "sequence_id", "position", "token_id", "hidden"} <= set(h.dataset.features)
    rows = h.dataset.with_format("numpy", columns=["sequence", "sequence_id", "position", "pass", "phase"])[:]
    assert (rows["sequence"] == rows["sequence_id"]).all()
    assert (rows["sequence"] == np.repeat(np.arange(6), PROMPT + NEW)).all()
    first = slice(0, PROMPT + NEW)
    assert rows["position"][first].tolist() == list(range(PROMPT + NEW))
    assert rows["pass"][first].tolist() == [0] * PROMPT + list(range(1, NEW + 1))
    assert rows["phase"][first].tolist() == ["prefill"] * PROMPT + ["decode"] * NEW
    assert len(h.validation) == PROMPT + NEW  # one of six sequences held out, whole


def test_each_pass_is_what_the_model_did(greedy):
    """Stored experts = routers on a full forward over the generated text; generated tokens = greedy argmax."""
    model_dir, h = greedy
    model = AutoModelForCausalLM.from_pretrained(model_dir, experts_implementation="eager").eval()
    adapter = get_adapter(model)
    data = h.dataset.with_format("torch", columns=["token_id", "expert_ids"])[:]
    tokens_BS = data["token_id"].long().reshape(-1, PROMPT + NEW)
    with torch.no_grad(), record_routing(adapter, keep_inputs=False) as record:
        logits_BSV = model(input_ids=tokens_BS).logits
    for layer in range(adapter.num_layers):
        full_TK = record.routings[layer][0].sorted_by_expert().expert_ids_TK
        stored_TK = data["expert_ids"][:, layer].long().sort(dim=-1).values
        assert (full_TK == stored_TK).all(dim=-1).float().mean() >= 0.95  # cached attention: last-bit differences
    # each decode pass read the token the previous pass chose greedily
    chosen = logits_BSV[:, PROMPT - 1 : -1].argmax(-1)
    assert (chosen == tokens_BS[:, PROMPT:]).float().mean() >= 0.95


def test_prompts_are_the_text_and_sampling_is_seeded(greedy, tiny_model_dir, text_corpus, tmp_path):
    model_dir, h = greedy
    teacher = load_harvest(ensure_harvest(HarvestConfig(
        model=str(model_dir), dataset=str(text_corpus), seq_len=PROMPT, max_tokens=PROMPT * 6, device="cpu",
        output_root=str(tmp_path / "tf"), progress=False)))  # fmt: skip
    prompts = np.asarray(h.dataset["token_id"]).reshape(6, -1)[:, :PROMPT]
    assert (prompts == np.asarray(teacher.dataset["token_id"]).reshape(6, PROMPT)).all()

    def sampled(seed: int, root: str) -> np.ndarray:  # a fresh folder each time: generated, not reused
        config = gen_config(model_dir, text_corpus, tmp_path / root, do_sample=True, temperature=1.5, top_p=0.95,
                            seed=seed, max_tokens=(PROMPT + NEW) * 2, hidden_layers=[])  # fmt: skip
        return np.asarray(load_harvest(ensure_harvest(config)).dataset["token_id"]).reshape(2, -1)[:, PROMPT:]

    first, again, other = sampled(0, "a"), sampled(0, "b"), sampled(1, "c")
    assert (first == again).all() and not (first == other).all()
    assert not (first == np.asarray(h.dataset["token_id"]).reshape(6, -1)[:2, PROMPT:]).all()  # not greedy


def test_fingerprints_and_bad_generation_options(tiny_model_dir, text_corpus, tmp_path, capsys):
    model_dir = tiny_model_dir("olmoe")
    teacher = HarvestConfig(model=str(model_dir), output_root=str(tmp_path))
    # generation options do not touch a teacher-forced harvest's identity
    assert HarvestConfig(model=str(model_dir), output_root=str(tmp_path), new_tokens=5).fingerprint() == (
        teacher.fingerprint()
    )
    base = gen_config(model_dir, text_corpus, tmp_path)
    assert base.fingerprint() != teacher.fingerprint()
    assert gen_config(model_dir, text_corpus, tmp_path, new_tokens=NEW + 1).fingerprint() != base.fingerprint()
    assert gen_config(model_dir, text_corpus, tmp_path, temperature=0.5).fingerprint() == base.fingerprint()  # greedy
    for bad, message in [({"temperature": 0.0}, "temperature must be above 0"),
                         ({"top_p": 1.5}, "top_p must be in (0, 1]"),
                         ({"new_tokens": 0}, "new_tokens must be at least 1"),
                         ({"mode": "beam"}, "mode must be one of teacher-forced, generate")]:  # fmt: skip
        with pytest.raises(HarvestError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
            gen_config(model_dir, text_corpus, tmp_path, **bad)
    out = tmp_path / "never"
    code = main(
        [
            "--model",
            str(model_dir),
            "--dataset",
            str(text_corpus),
            "--mode",
            "generate",
            "--prompt-tokens",
            "40",
            "--new-tokens",
            "30",
            "--output-dir",
            str(out),
            "--progress",
            "false",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err == "specmd-harvest: error: prompt_tokens + new_tokens 70 is above the model's maximum length 64"
    assert not out.exists()


def test_interrupted_generation_leaves_nothing_and_cli_reports(tiny_model_dir, text_corpus, tmp_path, interrupted,
                                                              capsys):  # fmt: skip
    from data_pipelines import generate, harvest

    config = gen_config(tiny_model_dir("olmoe"), text_corpus, tmp_path, hidden_layers=[0])
    with interrupted(generate.GenerateRecorder, "__call__") as calls, pytest.raises(KeyboardInterrupt):
        harvest(config)
    target = config.output_path()
    assert calls["n"] == 2 and not target.exists()
    assert not [p for p in target.parent.iterdir() if ".partial" in p.name or ".tmp" in p.name]
    code = main(["--model", config.model, "--dataset", config.dataset, "--mode", "generate", "--prompt-tokens",
                 str(PROMPT), "--new-tokens", str(NEW), "--max-tokens", str(config.max_tokens), "--hidden-layers",
                 "[0]", "--device", "cpu", "--output-root", config.output_root, "--progress", "false"])  # fmt: skip
    assert code == 0
    assert f"harvest: {target.resolve()}" in capsys.readouterr().out
    assert load_harvest(target).manifest["num_tokens"] == 6 * (PROMPT + NEW)
