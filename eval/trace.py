"""Turn a harvest (or plain arrays) into the cache simulator's passes: prefill over each prompt, then decode steps.

    trace = Trace.from_harvest(load_harvest(path), split="validation")
    trace = Trace.from_harvest(read_routing_trace("log.parquet", num_experts=64), split=None)  # external trace
    trace = Trace.from_arrays(expert_ids_NLK, sequence_ids_N, is_prompt_N, num_experts=32)   # hand-built
    trace = Trace.from_passes([[[0, 1], [3]], [[2], [3]]], num_experts=4)                   # per-layer sets

Rows are tokens in sequence order (N tokens, L MoE layers, K experts per token). Per sequence, the prompt
tokens form one prefill pass and each following token one decode pass. Passes are rebuilt from each row's
sequence, position and phase: rows with a `phase` column (a `specmd-harvest --mode generate` harvest, an
external trace read by `data_pipelines.routing_trace`) are prompt tokens when their phase is "prefill";
teacher-forced harvests, which have no phase, use their `is_prompt` flag (the first prompt_tokens tokens).
A pass requests, layer by layer 0 -> L-1, the union of its tokens' experts at that layer (ascending ids).
Keys are interned ExpertKey objects, so replaying a trace builds no tuples on the hot path.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch

from specmd_predict.routing import ExpertKey, Routing


class RequestIds(NamedTuple):
    """requests() numbered by the trace, for the cache driver's pass loop (`CacheDriver.run_pass`): key number
    t = layer * num_experts + expert, every request in replay order in `trace_ids`, pass p's layer l at
    `trace_ids[starts[p * L + l]:starts[p * L + l + 1]]`, and `key_of[t]` the interned ExpertKey."""

    trace_ids: array  # int64 ("q"), one per request
    starts: array  # int64, num_passes * num_layers + 1 offsets into trace_ids
    key_of: list  # number -> ExpertKey (the same objects as requests())


@dataclass
class Trace:
    """A harvested or hand-built routing trace cut into passes."""

    expert_ids_NLK: np.ndarray  # int, the experts each token chose at each MoE layer
    pass_bounds: list[tuple[int, int]]  # token rows [start, end) of each pass
    pass_is_prefill: list[bool]
    num_experts: int
    weights_NLK: np.ndarray | None = None
    hidden_NLD: np.ndarray | None = None  # router inputs at `hidden_layers` (second axis indexes that list)
    hidden_layers: list[int] = field(default_factory=list)
    manifest: dict = field(default_factory=dict)
    token_ids_N: np.ndarray | None = None  # each row's input token, for hash-routed layers' router reuse
    _requests: list[list[tuple[ExpertKey, ...]]] | None = field(default=None, repr=False)
    _request_ids: RequestIds | None = field(default=None, repr=False)
    _top_k: int | None = None  # only for traces built from passes, which have no per-token rows

    # construction ----------------------------------------------------------------------------------------
    @classmethod
    def from_arrays(
        cls,
        expert_ids_NLK: np.ndarray,
        sequence_ids_N: Sequence[int] | np.ndarray,
        is_prompt_N: Sequence[bool] | np.ndarray,
        num_experts: int | None = None,
        weights_NLK: np.ndarray | None = None,
        hidden_NLD: np.ndarray | None = None,
        hidden_layers: Sequence[int] | None = None,
        manifest: dict | None = None,
        token_ids_N: np.ndarray | None = None,
    ) -> Trace:
        """Passes from per-token arrays; rows of one sequence must be contiguous and in position order, with
        its prompt rows first."""
        ids = np.asarray(expert_ids_NLK)
        if ids.ndim != 3:
            raise ValueError(f"expert_ids must be [tokens, layers, top_k], got shape {ids.shape}")
        seq = np.asarray(sequence_ids_N)
        prompt = np.asarray(is_prompt_N, dtype=bool)
        if not (len(seq) == len(prompt) == len(ids)):
            raise ValueError(f"{len(ids)} expert rows but {len(seq)} sequence ids and {len(prompt)} prompt flags")
        if num_experts is None:
            num_experts = int(ids.max()) + 1 if ids.size else 0
        if ids.size and (ids.min() < 0 or ids.max() >= num_experts):
            raise ValueError(f"expert ids must be in [0, {num_experts}), got [{ids.min()}, {ids.max()}]")
        bounds: list[tuple[int, int]] = []
        is_prefill: list[bool] = []
        start = 0
        n = len(ids)
        seen: set[int] = set()
        while start < n:
            sid = int(seq[start])
            if sid in seen:
                raise ValueError(f"rows of sequence {sid} are not contiguous; sort by (sequence_id, position)")
            seen.add(sid)
            end = start
            while end < n and seq[end] == sid:
                end += 1
            prompt_end = start
            while prompt_end < end and prompt[prompt_end]:
                prompt_end += 1
            if prompt[prompt_end:end].any():
                raise ValueError(f"sequence {sid} has prompt (prefill) rows after its decode rows")
            if prompt_end > start:
                bounds.append((start, prompt_end))
                is_prefill.append(True)
            bounds.extend((i, i + 1) for i in range(prompt_end, end))
            is_prefill.extend([False] * (end - prompt_end))
            start = end
        layers = list(hidden_layers) if hidden_layers is not None else list(range(ids.shape[1]))
        return cls(
            ids,
            bounds,
            is_prefill,
            int(num_experts),
            weights_NLK,
            hidden_NLD,
            layers if hidden_NLD is not None else [],
            manifest or {},
            token_ids_N,
        )

    @classmethod
    def from_passes(cls, passes: Sequence[Sequence[Sequence[int]]], num_experts: int, top_k: int = 1) -> Trace:
        """A hand-built trace: passes[p][l] is the set of experts requested at layer l of pass p; `top_k` is
        the experts one token needs at once (the cache must hold that many)."""
        trace = cls(np.zeros((0, len(passes[0]) if passes else 0, 0), dtype=np.int64), [], [], num_experts)
        trace._requests = [
            [tuple(ExpertKey(layer, int(e)) for e in sorted(set(experts))) for layer, experts in enumerate(layers)]
            for layers in passes
        ]
        trace.pass_bounds = [(0, 0)] * len(passes)
        trace.pass_is_prefill = [False] * len(passes)
        trace._top_k = top_k
        return trace

    @classmethod
    def from_recording(cls, record, num_experts: int, token_ids_N: np.ndarray | None = None) -> Trace:
        """The passes of a `specmd_predict.capture.record_routing(adapter, keep_inputs=True)` recording (one per
        forward: the first a prefill, the others one decode step each) as a replayable trace, router inputs kept
        for the predictors; `token_ids_N`: each row's input token, where the caller knows them."""
        layers, passes = range(len(record.routings)), range(len(record.routings[0]))
        ids = [torch.stack([record.routings[j][p].expert_ids_TK for j in layers], dim=1) for p in passes]
        hidden = [torch.stack([record.inputs[j][p].float() for j in layers], dim=1) for p in passes]
        ends = np.cumsum([len(part) for part in ids]).tolist()
        return cls(
            expert_ids_NLK=torch.cat(ids).numpy(),
            pass_bounds=list(zip([0] + ends[:-1], ends, strict=True)),
            pass_is_prefill=[p == 0 for p in passes],
            num_experts=num_experts,
            hidden_NLD=np.ascontiguousarray(torch.cat(hidden).numpy()),
            hidden_layers=list(layers),
            token_ids_N=token_ids_N,
        )

    @classmethod
    def from_harvest(
        cls, harvest, split: str | None = "validation", max_sequences: int | None = None, with_hidden: bool = True
    ) -> Trace:
        """Passes from a `data_pipelines.load_harvest(...)` result (columns: `writer.harvest_features`).

        `split` is "train", "validation" or None (all rows); `with_hidden=False` skips the router inputs,
        which only predictor-driven prefetch needs.
        """
        dataset = harvest.dataset if split is None else getattr(harvest, split)
        return cls.from_dataset(dataset, harvest.manifest, max_sequences, with_hidden)

    @classmethod
    def from_dataset(cls, dataset, manifest: dict, max_sequences: int | None = None, with_hidden: bool = True) -> Trace:
        """Passes from harvested rows (a `datasets.Dataset` with the harvest columns) and the harvest manifest.

        The prompt of a sequence is its rows whose `phase` is "prefill" when the rows have a phase column,
        else its `is_prompt` rows."""
        if max_sequences is not None:
            keep = set(sorted(set(dataset.unique("sequence_id")))[:max_sequences])
            dataset = dataset.filter(lambda b: [s in keep for s in b["sequence_id"]], batched=True)
        if len(dataset) == 0:
            raise ValueError("no harvested rows to build a trace from")
        has_phase = "phase" in dataset.column_names
        columns = ["sequence_id", "position", "phase" if has_phase else "is_prompt", "expert_ids", "expert_weights"]
        if with_hidden and "hidden" in dataset.column_names:
            columns.append("hidden")
        if with_hidden and "token_id" in dataset.column_names:  # router reuse of hash-routed layers reads them
            columns.append("token_id")
        data = dataset.with_format("numpy", columns=columns)[:]
        order = np.lexsort((data["position"], data["sequence_id"]))
        hidden = data["hidden"][order] if "hidden" in data else None
        is_prompt = np.asarray(data["phase"]) == "prefill" if has_phase else np.asarray(data["is_prompt"])
        return cls.from_arrays(
            np.asarray(data["expert_ids"])[order].astype(np.int64),
            data["sequence_id"][order],
            is_prompt[order],
            num_experts=manifest.get("model", {}).get("num_experts"),
            weights_NLK=np.asarray(data["expert_weights"])[order].astype(np.float32),
            hidden_NLD=hidden,
            hidden_layers=manifest.get("hidden_layers"),
            manifest=dict(manifest),
            token_ids_N=data["token_id"][order] if "token_id" in data else None,
        )

    @classmethod
    def synthetic(
        cls,
        num_sequences: int = 8,
        prompt_tokens: int = 16,
        decode_tokens: int = 48,
        num_layers: int = 8,
        num_experts: int = 32,
        top_k: int = 4,
        skew: float = 1.2,
        seed: int = 0,
    ) -> Trace:
        """A seeded random trace with locality: each sequence draws, per layer, a Zipf(`skew`) preference
        over a random permutation of the experts, and its tokens pick top_k distinct experts from it."""
        rng = np.random.default_rng(seed)
        per_seq = prompt_tokens + decode_tokens
        ids = np.empty((num_sequences * per_seq, num_layers, top_k), dtype=np.int64)
        zipf = 1.0 / np.arange(1, num_experts + 1) ** skew
        for s in range(num_sequences):
            for layer in range(num_layers):
                prefs = np.empty(num_experts)
                prefs[rng.permutation(num_experts)] = zipf
                # Gumbel top-k = sampling top_k distinct experts without replacement by preference
                gumbel = np.log(prefs) - np.log(-np.log(rng.random((per_seq, num_experts))))
                ids[s * per_seq : (s + 1) * per_seq, layer] = np.argsort(-gumbel, axis=1)[:, :top_k]
        seq = np.repeat(np.arange(num_sequences), per_seq)
        prompt = np.tile(np.arange(per_seq) < prompt_tokens, num_sequences)
        return cls.from_arrays(np.sort(ids, axis=-1), seq, prompt, num_experts=num_experts)

    # views --------------------------------------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        if self._requests is not None and self._requests:
            return len(self._requests[0])
        return int(self.expert_ids_NLK.shape[1])

    @property
    def top_k(self) -> int:
        return self._top_k if self._top_k is not None else int(self.expert_ids_NLK.shape[-1])

    @property
    def num_passes(self) -> int:
        return len(self.pass_bounds)

    def pass_num_tokens(self, p: int) -> int:
        start, end = self.pass_bounds[p]
        return max(end - start, 1)

    def requests(self) -> list[list[tuple[ExpertKey, ...]]]:
        """requests()[p][l]: the ExpertKeys pass p requests at layer l, ascending expert id (cached)."""
        if self._requests is None:
            keys = [[ExpertKey(layer, e) for e in range(self.num_experts)] for layer in range(self.num_layers)]
            out = []
            ids = self.expert_ids_NLK
            for start, end in self.pass_bounds:
                rows = ids[start:end]
                if end - start == 1:
                    per_layer = [sorted(set(row.tolist())) for row in rows[0]]
                else:
                    per_layer = [np.unique(rows[:, layer]).tolist() for layer in range(rows.shape[1])]
                out.append([tuple(keys[layer][e] for e in experts) for layer, experts in enumerate(per_layer)])
            self._requests = out
        return self._requests

    def request_ids(self) -> RequestIds:
        """requests() as int key numbers with per-(pass, layer) offsets (cached; see RequestIds)."""
        if self._request_ids is None:
            num_experts = self.num_experts
            key_of = [None] * (self.num_layers * num_experts)
            trace_ids = array("q")
            starts = array("q", [0])
            for layers in self.requests():
                for keys in layers:
                    for key in keys:
                        t = key[0] * num_experts + key[1]
                        key_of[t] = key
                        trace_ids.append(t)
                    starts.append(len(trace_ids))
            for t, key in enumerate(key_of):  # numbers the trace never requests still name their key
                if key is None:
                    key_of[t] = ExpertKey(*divmod(t, num_experts))
            self._request_ids = RequestIds(trace_ids, starts, key_of)
        return self._request_ids

    def flat_keys(self) -> np.ndarray:
        """flat_requests() as integer keys layer * num_experts + expert (uint64), e.g. for libCacheSim."""
        keys = self.flat_requests()
        layer_N = np.fromiter((k.layer for k in keys), dtype=np.uint64, count=len(keys))
        expert_N = np.fromiter((k.expert for k in keys), dtype=np.uint64, count=len(keys))
        return layer_N * np.uint64(self.num_experts) + expert_N

    def flat_requests(self) -> list[ExpertKey]:
        """Every demand request in replay order (what Belady needs, and what benchmarks stream)."""
        return [key for layers in self.requests() for keys in layers for key in keys]

    def max_layer_requests(self) -> int:
        return max((len(keys) for layers in self.requests() for keys in layers), default=0)

    def routing(self, p: int, layer: int) -> Routing:
        """The routing of pass p at a layer (its tokens' expert ids and weights) for prefetch policies."""
        start, end = self.pass_bounds[p]
        ids_TK = torch.from_numpy(np.ascontiguousarray(self.expert_ids_NLK[start:end, layer])).long()
        if self.weights_NLK is not None:
            weights_TK = torch.from_numpy(np.ascontiguousarray(self.weights_NLK[start:end, layer])).float()
        else:
            weights_TK = torch.full(ids_TK.shape, 1.0 / max(ids_TK.shape[-1], 1))
        return Routing(ids_TK, weights_TK)

    def hidden(self, p: int, layer: int) -> torch.Tensor | None:
        """Router input [T, D] of pass p at `layer`, or None when the harvest did not keep that layer."""
        if self.hidden_NLD is None or layer not in self.hidden_layers:
            return None
        start, end = self.pass_bounds[p]
        index = self.hidden_layers.index(layer)
        return torch.from_numpy(np.ascontiguousarray(self.hidden_NLD[start:end, index])).float()

    def token_ids(self, p: int) -> torch.Tensor | None:
        """Input token ids [T] of pass p, or None when the trace has none."""
        if self.token_ids_N is None:
            return None
        start, end = self.pass_bounds[p]
        return torch.from_numpy(np.ascontiguousarray(self.token_ids_N[start:end])).long()

    def describe(self) -> dict:
        return {
            "num_passes": self.num_passes,
            "num_prefill_passes": int(sum(self.pass_is_prefill)),
            "num_layers": self.num_layers,
            "num_experts": self.num_experts,
            "top_k": self.top_k,
            "num_requests": sum(len(keys) for layers in self.requests() for keys in layers),
        }
