"""The next token's first MoE layer, prefetched when its pass starts (issue 11.4).

    handle = install_pass_start(model, engine)   # offload() does this; None where it does not apply

A predictor bank whose next-pass head holds a token table (`next_pass_uses_token`, specmd_predict/predictors/
next_pass.py) predicts MoE layer 0 of pass p + 1 from MoE layer L-1's router input of pass p AND the token pass
p + 1 receives. That token is known only when pass p + 1 starts: a forward pre-hook on the model's input
embeddings sees `input_ids` (on the device) before the embedding, attention or any dense layer runs. There:
  1. the engine starts the pass (`OffloadEngine.start_pass`: the cache's clock moves on, so the prefetched
     experts count as this pass's; layer 0 then does not start another pass);
  2. the prefetch policy scores MoE layer 0 from the kept state and the tokens (`prepare_pass_start`, kernels
     only), and its rows come to the host: on CUDA one blocking device-to-host read, the ONLY one besides the
     engine's one per MoE layer (counted in `engine.pass_start_reads`); on CPU nothing waits;
  3. the host half picks the candidates (`select`) and the cache driver issues them as it issues every
     prefetch (`CacheDriver.prefetch`: same transport, budget of `prefetch_budget` copies for the one layer,
     layer 0's probabilities to the evictor). The simulator does the same at its pass boundary (eval/simulate.py).
Without a token table, or with `next_token=False` on the policy, nothing is installed: the last MoE layer
proposes the next pass's layer 0 from its state alone, as before. A forward given `inputs_embeds` instead of ids
runs no hook: its layer 0 gets no prefetch.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle


def install_pass_start(model: nn.Module, engine) -> RemovableHandle | None:
    """Install the pass-start prefetch on `model`'s input embeddings when `engine`'s prefetch policy can use the
    next token; returns the hook's handle, or None (nothing installed, behaviour unchanged)."""
    prefetcher = engine.prefetcher
    if not getattr(prefetcher, "uses_next_token", False) or not hasattr(model, "get_input_embeddings"):
        return None
    embeddings = model.get_input_embeddings()
    if embeddings is None:
        return None
    prefetcher.token_at_pass_start = True  # the last MoE layer now keeps its state for this hook

    def before_embedding(module: nn.Module, args: tuple) -> None:
        input_ids = args[0] if args else None
        if isinstance(input_ids, torch.Tensor) and not input_ids.is_floating_point():
            prefetch_at_pass_start(engine, input_ids.reshape(-1))

    return embeddings.register_forward_pre_hook(before_embedding)


def prefetch_at_pass_start(engine, next_token_T: torch.Tensor) -> None:
    """Start a pass of `engine` whose input tokens are `next_token_T` [T] and prefetch its MoE layer 0."""
    if torch.is_grad_enabled():
        with torch.no_grad():
            return prefetch_at_pass_start(engine, next_token_T)
    engine.start_pass()
    prefetcher = engine.prefetcher
    prepared = prefetcher.prepare_pass_start(next_token_T)
    if prepared is None:  # the first pass: no earlier state yet
        return
    if prepared.device.type == "cuda":
        engine.pass_start_reads += 1  # the pass's one extra blocking read (see the module docstring)
    candidates = prefetcher.select(0, prepared.cpu())
    probabilities = getattr(prefetcher, "probabilities", None)
    engine.driver.prefetch(0, candidates, probabilities, transport=engine.transfers)
