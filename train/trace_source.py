"""`specmd-train --trace PATH`: the routing-only kind trained on routing logged outside this project.

    specmd-train --trace examples/routing_trace.jsonl --no-wandb
    specmd-train --trace serving_log.parquet --num-experts 64 --kind routing --horizon 2

The trace is read and checked by `data_pipelines.routing_trace.read_routing_trace` (the schema and one-line
errors of `specmd-eval --trace`), and split by sequence id, deterministically: the last 10% of the sorted ids
validate (at least one; what a harvest does). It has no hidden states, so only the routing kind can train on
it (`--kind auto` picks it). The bank records the trace's identity in place of a model's
(`trace_identity`: its MoE layers, experts, top-k and the sha256 of the trace), and `extra.trace` in its
config.json names the file and its split; `specmd-eval --trace` refuses it for a trace of other shapes.
"""

from __future__ import annotations

ROUTING_KIND = "routing"


def open_trace(config) -> tuple:
    """(the checked RoutingTrace with its train/validation splits, the identity its bank records)."""
    from data_pipelines.routing_trace import read_routing_trace, trace_identity

    trace = read_routing_trace(config.trace, num_experts=config.num_experts)
    if not trace.manifest["validation_sequence_ids"]:
        raise ValueError(
            f"the trace {config.trace} has {trace.manifest['num_sequences']} sequence(s): training needs at least 2 "
            "(the last 10% of sequence ids validate)"
        )
    return trace, trace_identity(trace)


def trace_kind(kind: str) -> str:
    """The routing kind (auto picks it, said in one line); any other kind is one line: it needs hidden states."""
    if kind == "auto":
        print("kind auto: routing (a routing trace has no router inputs, which every other kind reads)")
        return ROUTING_KIND
    if kind != ROUTING_KIND:
        raise ValueError(
            f"kind {kind!r} predicts from router inputs (hidden states), which a routing trace does not have; "
            "use --kind routing (or auto)"
        )
    return kind


def trace_record(trace) -> dict:
    """What the bank's config.json keeps about the trace it was trained on (extra.trace)."""
    manifest = trace.manifest
    validation = manifest["validation_sequence_ids"]
    return {
        "path": str(trace.path),
        "format": manifest["source"]["format"],
        "model": manifest["model"],
        "num_tokens": manifest["num_tokens"],
        "num_sequences": manifest["num_sequences"],
        "validation_sequence_ids": validation,
    }
