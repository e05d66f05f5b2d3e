"""Rebuild the embedded default model: a tiny OLMoE trained on the Python standard library's source.

    python scripts/build_embedded_model.py            # ~15 min on one CPU core, writes specmd_predict/embedded_model/
    python scripts/build_embedded_model.py --steps 20 --out outputs/smoke   # quick smoke run

Steps (all seeded): train a byte-level BPE tokenizer on the corpus's train split, pack the tokenized
files into fixed-length sequences, train `OlmoeForCausalLM` (load-balancing aux loss plus a
router-entropy penalty so experts specialize) with AdamW + cosine schedule, then measure validation
loss next to a unigram baseline and per-layer routing entropy next to the uniform maximum, and save
weights in bf16 with a model card.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import OlmoeConfig, OlmoeForCausalLM, PreTrainedTokenizerFast

from specmd_predict.embedded import EMBEDDED_MODEL_DIR, train_tokenizer
from specmd_predict.embedded_corpus import iter_corpus_texts
from specmd_predict.io import atomic_dir


def pack(tokenizer: PreTrainedTokenizerFast, split: str, seq_len: int) -> torch.Tensor:
    """Tokenize every file of `split`, join with EOS, cut into [N, seq_len] rows."""
    ids: list[int] = []
    for text in iter_corpus_texts(split):
        ids.extend(tokenizer(text)["input_ids"])
        ids.append(tokenizer.eos_token_id)
    num_rows = len(ids) // seq_len
    return torch.tensor(ids[: num_rows * seq_len], dtype=torch.long).view(num_rows, seq_len)


def build_config(tokenizer: PreTrainedTokenizerFast, seq_len: int) -> OlmoeConfig:
    return OlmoeConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=64,
        num_hidden_layers=8,
        num_attention_heads=4,
        num_key_value_heads=4,
        num_experts=32,
        num_experts_per_tok=4,
        max_position_embeddings=seq_len,
        router_aux_loss_coef=0.01,
        norm_topk_prob=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )


def router_token_entropy(router_logits: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Mean over layers and tokens of the entropy (nats) of one token's router distribution."""
    log_probs = torch.stack([logits.float().log_softmax(-1) for logits in router_logits])
    return -(log_probs.exp() * log_probs).sum(-1).mean()


@torch.no_grad()
def evaluate(model: OlmoeForCausalLM, rows: torch.Tensor, batch_size: int) -> tuple[float, list[float], list[float]]:
    """Validation loss, and per layer: mean per-token router entropy and entropy of expert usage (nats)."""
    model.eval()
    num_layers = model.config.num_hidden_layers
    total_loss, total_tokens = 0.0, 0
    token_entropy = [0.0] * num_layers
    usage = torch.zeros(num_layers, model.config.num_experts)
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        out = model(input_ids=batch, output_router_logits=True)
        n = batch.numel() - batch.shape[0]
        lm_loss = F.cross_entropy(out.logits[:, :-1].flatten(0, 1).float(), batch[:, 1:].flatten(), reduction="sum")
        total_loss += lm_loss.item()
        total_tokens += n
        for layer, logits in enumerate(out.router_logits):
            probs = logits.float().softmax(-1)
            token_entropy[layer] += -(probs * probs.clamp_min(1e-12).log()).sum(-1).sum().item()
            top = probs.topk(model.config.num_experts_per_tok, dim=-1).indices
            usage[layer] += torch.bincount(top.flatten(), minlength=model.config.num_experts).float()
    num_tokens = rows.numel()
    share = usage / usage.sum(-1, keepdim=True)
    usage_entropy = (-(share * share.clamp_min(1e-12).log()).sum(-1)).tolist()
    model.train()
    return total_loss / total_tokens, [e / num_tokens for e in token_entropy], usage_entropy


def unigram_loss(train_rows: torch.Tensor, val_rows: torch.Tensor, vocab_size: int) -> float:
    """Cross-entropy (nats) of validation tokens under add-one-smoothed train unigram frequencies."""
    counts = torch.bincount(train_rows.flatten(), minlength=vocab_size).double() + 1
    log_p = (counts / counts.sum()).log()
    return float(-log_p[val_rows[:, 1:].flatten()].mean())


def write_model_card(out: Path, stats: dict) -> None:
    layers = "\n".join(
        f"| {i} | {t:.2f} | {u:.2f} | {stats['uniform_max_entropy']:.2f} |"
        for i, (t, u) in enumerate(zip(stats["router_token_entropy"], stats["expert_usage_entropy"], strict=True))
    )
    out.joinpath("README.md").write_text(
        f"""# specmd-predict embedded default model

A tiny mixture-of-experts model in the OLMoE architecture, trained by `scripts/build_embedded_model.py`
(seed {stats["seed"]}) on the Python standard library's own source files (Python {stats["python"]}),
with a byte-level BPE tokenizer trained on the same corpus. It exists so that every stage of the project
(harvest, training, evaluation, runtime) has a real, learned routing to work on with no download.

- parameters: {stats["parameters"]:,} ({stats["moe_layers"]} MoE layers x {stats["experts"]} experts,
  top-{stats["top_k"]}, hidden {stats["hidden"]}, expert intermediate {stats["intermediate"]}), stored in bf16
- tokens trained: {stats["tokens_trained"]:,} ({stats["steps"]} steps x {stats["batch_size"]} x {stats["seq_len"]})
- validation loss: **{stats["val_loss"]:.3f}** nats/token; unigram baseline: {stats["unigram_loss"]:.3f}
- training time: {stats["train_seconds"] / 60:.1f} min on {stats["threads"]} CPU thread(s)
- loss: next-token cross-entropy + 0.01 x load balancing (OLMoE's aux loss)
  + {stats["router_entropy_coef"]} x mean router entropy (confident, specialized routing)

Routing per MoE layer, on the validation split. *Token entropy* is the mean entropy of one token's
router distribution (low = confident, specialized routing); *usage entropy* is the entropy of how often
each expert is selected (high = balanced load). Uniform maximum: ln({stats["experts"]}).

| layer | token entropy | usage entropy | uniform max |
|---|---|---|---|
{layers}
"""
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=EMBEDDED_MODEL_DIR, help="output folder")
    parser.add_argument("--steps", type=int, default=700, help="optimizer steps")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--router-entropy-coef", type=float, default=0.01, help="weight of the routing entropy penalty")
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=1, help="1 avoids OpenMP spin-waits on a busy machine")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)

    tokenizer = train_tokenizer(iter_corpus_texts("train"), args.vocab_size)
    train_rows = pack(tokenizer, "train", args.seq_len)
    val_rows = pack(tokenizer, "validation", args.seq_len)[:256]
    print(f"corpus: {train_rows.numel():,} train tokens, {val_rows.numel():,} validation tokens")

    config = build_config(tokenizer, args.seq_len)
    config._experts_implementation = "grouped_mm"  # ~1.5x faster than eager for training on CPU
    model = OlmoeForCausalLM(config)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1, betas=(0.9, 0.95))
    warmup = max(1, args.steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / args.steps))),
    )
    order = torch.randperm(len(train_rows), generator=torch.Generator().manual_seed(args.seed))
    start = time.time()
    for step in range(args.steps):
        idx = order[(step * args.batch_size + torch.arange(args.batch_size)) % len(order)]
        batch = train_rows[idx]
        out = model(input_ids=batch, labels=batch, output_router_logits=True)
        # out.loss already holds the load-balancing term (keeps usage spread over experts); the entropy
        # term makes each token's routing confident, i.e. experts specialize.
        entropy = router_token_entropy(out.router_logits)
        (out.loss + args.router_entropy_coef * entropy).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if step % 50 == 0 or step == args.steps - 1:
            elapsed = time.time() - start
            print(
                f"step {step}/{args.steps} loss {out.loss.item():.3f} aux {out.aux_loss.item():.3f} "
                f"router entropy {entropy.item():.3f} {elapsed:.0f}s"
            )
    train_seconds = time.time() - start

    val_loss, token_entropy, usage_entropy = evaluate(model, val_rows, args.batch_size)
    stats = {
        "seed": args.seed,
        "python": ".".join(map(str, __import__("sys").version_info[:3])),
        "parameters": sum(p.numel() for p in model.parameters()),
        "moe_layers": config.num_hidden_layers,
        "experts": config.num_experts,
        "top_k": config.num_experts_per_tok,
        "hidden": config.hidden_size,
        "intermediate": config.intermediate_size,
        "tokens_trained": args.steps * args.batch_size * args.seq_len,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
        "threads": args.threads,
        "router_entropy_coef": args.router_entropy_coef,
        "train_seconds": train_seconds,
        "val_loss": val_loss,
        "unigram_loss": unigram_loss(train_rows, val_rows, len(tokenizer)),
        "router_token_entropy": token_entropy,
        "expert_usage_entropy": usage_entropy,
        "uniform_max_entropy": math.log(config.num_experts),
    }
    print(json.dumps(stats, indent=1))

    # Write to a temp folder next to the target, then swap it in: never a half-written model folder.
    model.config._experts_implementation = "eager"
    model.config.output_router_logits = False
    with atomic_dir(args.out) as tmp:
        model.to(torch.bfloat16).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        tmp.joinpath("training_stats.json").write_text(json.dumps(stats, indent=1) + "\n")
        write_model_card(tmp, stats)
    print(f"saved to {args.out}")


if __name__ == "__main__":
    main()
