"""Generation-mode harvest (`specmd-harvest --mode generate`): record every forward pass of batched generation.

    with GenerateRecorder(model, adapter, hidden_layers=[0, 3], keep_router_logits=False, new_tokens=64,
                          do_sample=True, temperature=0.8, top_p=0.95, seed=0) as rec:
        columns = rec(prompts_BP, first_sequence_id=0)   # the harvest columns plus pass, phase, sequence

Each batch of equal-length prompts goes through `model.generate` with its KV cache: one prefill pass over the
prompts, then one decode pass per new token, each reading one token and the cache. The routers' own outputs
are taken from `specmd_predict.capture.record_routing` hooks on every call, so what is stored is what the
model selected in that pass (hidden states: the router inputs of that pass). `new_tokens` is the number of
decode passes recorded per sequence: generate samples new_tokens + 1 tokens, and the last one is never read
by a pass. Rows come out sequence by sequence, position by position, as in a teacher-forced harvest:
`sequence_id` / `sequence` (the same id), `position`, `token_id` (the token the pass read), `pass` (0 for
the prefill, s for the s-th decode step), `phase` ("prefill" or "decode"), `is_prompt`, expert ids and
weights [L, k], and the kept hidden states / router logits. `phase_view(harvest, "decode")` keeps one
phase's rows in a Harvest-shaped object, for training a predictor on one phase.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import torch
from datasets import Dataset, Features, Value
from torch import nn

from data_pipelines.recorder import RoutingHooks
from specmd_predict.adapters.base import MoEAdapter

PHASES = ("prefill", "decode")


def generate_features(features: Features) -> Features:
    """A harvest's columns plus the pass, phase and sequence columns of a generation-mode harvest."""
    return Features({**features, "sequence": Value("int32"), "pass": Value("int32"), "phase": Value("string")})


class GenerateRecorder(RoutingHooks):
    """Like `data_pipelines.recorder.BatchRecorder`, but each batch is generated from, pass by pass."""

    def __init__(
        self,
        model: nn.Module,
        adapter: MoEAdapter,
        hidden_layers: list[int],
        keep_router_logits: bool,
        new_tokens: int,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int = 0,
    ):
        super().__init__(model, adapter, hidden_layers, keep_router_logits)
        self.new_tokens = new_tokens
        self.sampling = (
            {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0}
            if do_sample
            else {"do_sample": False}
        )
        self.seed = seed

    @torch.inference_mode()
    def generate(self, prompts_BP: torch.Tensor, first_sequence_id: int) -> torch.Tensor:
        """Token ids [B, P + new_tokens + 1]; seeded per batch by its first sequence id (reproducible, resumable)."""
        generator_seed = self.seed * 1_000_003 + first_sequence_id
        torch.manual_seed(generator_seed)
        pad = self.model.generation_config.pad_token_id
        return self.model.generate(
            input_ids=prompts_BP,
            attention_mask=torch.ones_like(prompts_BP),
            max_new_tokens=self.new_tokens + 1,
            min_new_tokens=self.new_tokens + 1,  # no early stop at EOS: every sequence has the same passes
            use_cache=True,
            pad_token_id=pad if pad is not None else 0,
            **self.sampling,
        )

    def __call__(self, prompts_BP: torch.Tensor, first_sequence_id: int) -> dict[str, np.ndarray]:
        self._start_batch()
        batch, prompt_len = prompts_BP.shape
        tokens_BS = self.generate(prompts_BP, first_sequence_id)
        num_passes = self.new_tokens + 1
        num_layers = self.adapter.num_layers
        calls = [len(self._routing.routings[l]) for l in range(num_layers)]
        if calls != [num_passes] * num_layers:
            raise RuntimeError(f"expected {num_passes} router calls per MoE layer (1 prefill + decode), got {calls}")
        seq_len = prompt_len + self.new_tokens

        def per_token(per_pass: list[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
            """Pass outputs (prefill [B*P, X], then decode [B, X] each) -> [B * seq_len, X] in sequence order."""
            prefill = per_pass[0].to(dtype).reshape(batch, prompt_len, -1)
            decode = torch.stack([t.to(dtype) for t in per_pass[1:]], dim=1)  # [B, new_tokens, X]
            return torch.cat([prefill, decode], dim=1).reshape(batch * seq_len, -1)

        def stack_layers(per_layer: list[list[torch.Tensor]], dtype: torch.dtype) -> np.ndarray:
            return torch.stack([per_token(p, dtype) for p in per_layer], dim=1).cpu().numpy()

        routings = [self._routing.routings[l] for l in range(num_layers)]
        position_T = np.tile(np.arange(seq_len, dtype=np.int32), batch)
        pass_T = np.maximum(position_T - prompt_len + 1, 0).astype(np.int32)
        sequence_T = np.repeat(np.arange(first_sequence_id, first_sequence_id + batch, dtype=np.int32), seq_len)
        columns = {
            "sequence_id": sequence_T,
            "sequence": sequence_T,
            "position": position_T,
            "token_id": tokens_BS[:, :seq_len].reshape(-1).cpu().numpy().astype(np.int32),
            "is_prompt": position_T < prompt_len,
            "pass": pass_T,
            "phase": np.where(position_T < prompt_len, "prefill", "decode").astype(object),
            "expert_ids": stack_layers([[r.expert_ids_TK for r in rs] for rs in routings], torch.int16),
            "expert_weights": stack_layers([[r.weights_TK for r in rs] for rs in routings], torch.float16),
        }
        if self.hidden_layers:
            columns["hidden"] = stack_layers([self._inputs.inputs[l] for l in self.hidden_layers], torch.float16)
        if self.keep_router_logits:
            columns["router_logits"] = stack_layers([[r.logits_TE for r in rs] for rs in routings], torch.float16)
        self._routing.clear()
        self._inputs.clear()
        return columns


@dataclass
class PhaseHarvest:
    """The rows of one phase of a generation-mode harvest, shaped like a `Harvest` (what `train_predictors`
    and `specmd-eval` read): `dataset`, `train` and `validation` hold only that phase's rows."""

    path: Path
    dataset: Dataset
    manifest: dict
    train: Dataset
    validation: Dataset
    phase: str


def rows_of_phase(dataset: Dataset, phase: str) -> Dataset:
    """The rows of `dataset` (with a phase column) whose phase is `phase`."""
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {', '.join(PHASES)}, got {phase!r}")
    if "phase" not in dataset.column_names:
        raise ValueError("these rows have no phase column: harvest with --mode generate (or read a routing trace)")
    mask = pc.equal(dataset.data.column("phase"), phase).to_numpy(zero_copy_only=False)
    return dataset.select(np.flatnonzero(mask))


def phase_view(harvest, phase: str) -> PhaseHarvest:
    """Only the prefill (or only the decode) rows of a harvest, e.g. to train a predictor on one phase:
    `train_predictors(config, harvest=phase_view(load_harvest(path), "decode"))`."""
    view = PhaseHarvest(
        Path(harvest.path), rows_of_phase(harvest.dataset, phase), {**harvest.manifest, "phase": phase},
        rows_of_phase(harvest.train, phase), rows_of_phase(harvest.validation, phase), phase,
    )  # fmt: skip
    if len(view.train) == 0 or len(view.validation) == 0:
        raise ValueError(f"the harvest at {harvest.path} has no {phase} rows in its train or validation split")
    return view
