"""DeepSeek-V4 (deepseek-ai/DeepSeek-V4-Flash): sqrt-softplus scores; the first MoE layers are hash-routed.

Every decoder layer is an MoE layer (`mlp`: router `gate`, stacked `experts`, one `shared_experts` MLP that every
token uses, always resident). `mlp_layer_types[i]` says how layer i chooses:

- "moe": scores = score_fn(logits) (`scoring_func`: sqrt(softplus) in the released model, or sigmoid, softmax),
  logits in the router input's dtype; top-k over scores + `e_score_correction_bias` (no groups).
- "hash_moe" (the first `num_hash_layers`): the k experts are `tid2eid[token id]`, a frozen [vocab, K] table in
  the checkpoint; the hidden state only weights them. So `route` and `selection_scores` of such a layer need the
  token ids (base.py: `token_ids_for`), and a prefetch for it is exact as soon as the token is known.

Both: the weights are the chosen experts' unbiased scores divided by their sum (+1e-20; always, whatever
`norm_topk_prob` says), times `routed_scaling_factor`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from specmd_predict.adapters.base import MoEAdapter
from specmd_predict.routing import Routing


class DeepseekV4Adapter(MoEAdapter):
    model_type = "deepseek_v4"
    moe_block_attr = "mlp"
    router_attr = "gate"
    shared_experts_attr = "shared_experts"

    @property
    def renormalize(self) -> bool:
        return True

    def hash_table(self, layer: int) -> torch.Tensor | None:
        return self.router(layer).tid2eid if self.moe_blocks[layer].is_hash else None

    def _scores(self, layer: int, hidden_TD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        router = self.router(layer)
        logits_TE = F.linear(hidden_TD.to(router.weight.dtype), router.weight)
        return logits_TE, router.score_fn(logits_TE)

    def _choice(
        self, layer: int, scores_TE: torch.Tensor, token_ids_T: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(the hash table's ids, None) for a hash-routed layer; (None, scores + correction bias) otherwise."""
        table = self.hash_table(layer)
        if table is not None:
            return table[self.token_ids_for(layer, scores_TE.shape[0], token_ids_T)].long(), None
        return None, scores_TE + self.router(layer).e_score_correction_bias

    def selection_scores(
        self, layer: int, hidden_TD: torch.Tensor, token_ids_T: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Biased scores; for a hash-routed layer 1 at the token's table entries and 0 elsewhere (its choice)."""
        scores_TE = self._scores(layer, hidden_TD)[1]
        ids_TK, choice_TE = self._choice(layer, scores_TE, token_ids_T)
        if ids_TK is None:
            return choice_TE
        return torch.zeros_like(scores_TE, dtype=torch.float32).scatter_(1, ids_TK, 1.0)

    def route(self, layer: int, hidden_TD: torch.Tensor, token_ids_T: torch.Tensor | None = None) -> Routing:
        logits_TE, scores_TE = self._scores(layer, hidden_TD)
        ids_TK, choice_TE = self._choice(layer, scores_TE, token_ids_T)
        if ids_TK is None:
            ids_TK = torch.topk(choice_TE, self.top_k, dim=-1, sorted=False).indices
        weights_TK = scores_TE.gather(1, ids_TK)
        weights_TK = weights_TK / (weights_TK.sum(dim=-1, keepdim=True) + 1e-20)
        return Routing(ids_TK, weights_TK * self.config.routed_scaling_factor, logits_TE)
