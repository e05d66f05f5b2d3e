"""What every expert predictor answers, and the one rule that turns router-like logits into probabilities.

    probs_THE = predictor.predict(layer, hidden_TD)   # [T, H_eff, E], H_eff = min(H, L-1-layer)

`probs_THE[:, h-1, e]` is the probability that expert e is among the top-k experts chosen at MoE layer
`layer + h` by the same token, given the router input `hidden_TD` at `layer`. Learned predictors emit
router-like logits (a softmax over E, like the OLMoE router), mapped to a selection probability by
`selection_probs`: the chance of being drawn at least once in K draws, 1 - (1 - q)^K. That is strictly
monotone in q (ranking unchanged, no ties from clipping), lies in [0, 1] and sums to about K over E.

Shape legend (specmd_predict/routing.py): T tokens, K top-k, E experts, D hidden, L MoE layers, H horizon.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar

import torch
from torch import nn

from specmd_predict.adapters.base import MoEAdapter, check_identity

IDENTITY_KEYS = ("model_type", "num_layers", "num_experts", "top_k", "hidden_size", "router_fingerprint")


def selection_probs(logits_xE: torch.Tensor, top_k: int) -> torch.Tensor:
    """P(expert among the K chosen) from router-like logits: 1 - (1 - softmax)^K, in float32."""
    q_xE = torch.softmax(logits_xE.float(), dim=-1)
    return -torch.expm1(top_k * torch.log1p(-q_xE.clamp(max=1 - 1e-6)))


def check_horizon(horizon: int, num_layers: int) -> None:
    """A clear error for a horizon that reaches beyond the last MoE layer."""
    if num_layers < 2:
        raise ValueError(f"the model has {num_layers} MoE layer(s): there is no later layer to predict")
    if not 1 <= horizon <= num_layers - 1:
        raise ValueError(
            f"horizon {horizon} reaches beyond the last MoE layer: the model has {num_layers} MoE layers, "
            f"so the horizon must be in 1..{num_layers - 1}"
        )


class ExpertPredictor(nn.Module):
    """Base of every predictor: model identity, horizon bookkeeping, `predict`, `check_model`.

    Subclasses set `kind`, implement `logits(layer, hidden_TD) -> [T, H_eff, E]` and `hparams()` (the
    constructor keyword arguments besides `identity` and `horizon`, so a bank can rebuild the module).
    """

    kind: ClassVar[str]

    def __init__(self, identity: dict, horizon: int = 3):
        super().__init__()
        missing = [k for k in IDENTITY_KEYS if k not in identity]
        if missing:
            raise ValueError(f"model identity lacks {', '.join(missing)}")
        self.identity = {k: identity[k] for k in IDENTITY_KEYS}
        self.num_layers: int = int(identity["num_layers"])
        self.num_experts: int = int(identity["num_experts"])
        self.top_k: int = int(identity["top_k"])
        self.hidden_size: int = int(identity["hidden_size"])
        check_horizon(horizon, self.num_layers)
        self.horizon = int(horizon)
        self.next_pass_head: nn.Module | None = None  # optional: see attach_next_pass
        self.next_use_head: nn.Module | None = None  # optional: see attach_next_use

    @property
    def predicts_next_pass(self) -> bool:
        """Whether `predict_next_pass` is available: a next-pass head is attached."""
        return self.next_pass_head is not None

    def attach_next_pass(self, head: nn.Module) -> None:
        """Add a head (e.g. `NextPassHead`) predicting MoE layer 0 of pass p + 1 from MoE layer L-1 of pass p."""
        self.next_pass_head = head

    @property
    def next_pass_uses_token(self) -> bool:
        """Whether `predict_next_pass` also takes the next token (the head holds a token table; next_pass.py)."""
        return self.next_pass_head is not None and getattr(self.next_pass_head, "uses_next_token", False)

    def next_pass_logits(self, hidden_TD: torch.Tensor, next_token_T: torch.Tensor | None = None) -> torch.Tensor:
        """[T, E] router-like logits for MoE layer 0 of the next pass, from MoE layer L-1's router input (and the
        token pass p + 1 receives, when given and the head has a token table)."""
        if self.next_pass_head is None:
            raise ValueError(f"this {self.kind} predictor has no next-pass head (predicts_next_pass is False)")
        if next_token_T is None:
            return self.next_pass_head(hidden_TD)
        return self.next_pass_head(hidden_TD, next_token_T)

    @torch.no_grad()
    def predict_next_pass(self, hidden_TD: torch.Tensor, next_token_T: torch.Tensor | None = None) -> torch.Tensor:
        """[T, E] probabilities that MoE layer 0 of pass p + 1 selects each expert, given layer L-1's router
        input `hidden_TD` at pass p (same probability rule as `predict`). `next_token_T` [T] (optional): the token
        each row's next pass receives (greedy decoding: the argmax of pass p's logits; any decoding: pass p + 1's
        input id); with a head that has a token table (`next_pass_uses_token`) it sharpens the prediction a lot."""
        return selection_probs(self.next_pass_logits(self._as_input(hidden_TD), next_token_T), self.top_k)

    @property
    def predicts_next_use(self) -> bool:
        """Whether `predict_next_use` is available (next_use.py): a next-use head is attached."""
        return self.next_use_head is not None

    def attach_next_use(self, head: nn.Module) -> None:
        """Add a head (`NextUseHead`) estimating every expert's layer-steps until next use."""
        self.next_use_head = head

    def next_use_log_passes(self, layer: int, hidden_TD: torch.Tensor) -> torch.Tensor:
        """[T, L, E] the next-use head's log g: passes after this one until each (j, e) is next used."""
        if self.next_use_head is None:
            raise ValueError(f"this {self.kind} predictor has no next-use head (predicts_next_use is False)")
        return self.next_use_head(layer, hidden_TD)

    @torch.no_grad()
    def predict_next_use(self, layer: int, hidden_TD: torch.Tensor) -> torch.Tensor:
        """[L, E] float32 expected layer-steps from (this pass, MoE layer `layer`) until each (j, e) is next used,
        across pass boundaries (next_use.py: this pass's use from `predict`, later passes from the head); the
        minimum over the pass's tokens (the first token that needs it)."""
        from specmd_predict.predictors.next_use import compose_next_use

        hidden_TD = self._as_input(hidden_TD)
        probs_THE = self.predict(layer, hidden_TD)
        return compose_next_use(layer, probs_THE, self.next_use_log_passes(layer, hidden_TD)).amin(dim=0)

    def head_hparams(self) -> dict:
        """The optional heads' constructor arguments, by head name (stored in a bank's config.json)."""
        heads = {}
        if self.next_pass_head is not None:
            heads["next_pass"] = self.next_pass_head.hparams()
        if self.next_use_head is not None:
            heads["next_use"] = self.next_use_head.hparams()
        return heads

    def horizon_at(self, layer: int) -> int:
        """H_eff: how many later layers a predictor at `layer` covers (0 at the last layer)."""
        if not 0 <= layer < self.num_layers:
            raise IndexError(f"layer {layer} out of range: the model has MoE layers 0..{self.num_layers - 1}")
        return min(self.horizon, self.num_layers - 1 - layer)

    def hparams(self) -> dict:
        return {}

    @abstractmethod
    def logits(self, layer: int, hidden_TD: torch.Tensor) -> torch.Tensor:
        """[T, H_eff, E] router-like logits for layers layer+1 .. layer+H_eff (differentiable)."""

    @torch.no_grad()
    def predict(self, layer: int, hidden_TD: torch.Tensor) -> torch.Tensor:
        """[T, H_eff, E] float32 probabilities in [0, 1] that each expert is selected at layer+1 .. layer+H_eff."""
        return selection_probs(self.logits(layer, self._as_input(hidden_TD)), self.top_k)

    def check_model(self, adapter: MoEAdapter) -> None:
        """Raise a clear ValueError when `adapter`'s model is not the one this predictor was made for."""
        check_identity(self.identity, adapter.identity(), what=f"{self.kind} predictor")

    def _as_input(self, hidden_TD: torch.Tensor) -> torch.Tensor:
        reference = next(iter(self.parameters()), None)
        if reference is None:
            reference = next(iter(self.buffers()), None)
        if reference is None:
            return hidden_TD.float()
        return hidden_TD.to(device=reference.device, dtype=reference.dtype)

    def _empty(self, hidden_TD: torch.Tensor) -> torch.Tensor:
        return hidden_TD.new_zeros((hidden_TD.shape[0], 0, self.num_experts), dtype=torch.float32)


class RankedPredictor(ExpertPredictor):
    """Base of the kinds sized by a hidden `rank` with `dropout` (lowrank, shared, residual): keeps both as
    hparams and builds their MLP block, D -> rank -> GELU -> dropout [-> rank -> GELU -> dropout] -> `out_features`
    with `depth` hidden layers (kinds that take `depth`: lowrank, residual)."""

    def __init__(self, identity: dict, horizon: int = 3, rank: int = 64, dropout: float = 0.0, depth: int = 1):
        super().__init__(identity, horizon)
        if int(depth) < 1:
            raise ValueError(f"depth must be at least 1 (hidden layers of the MLP), got {depth}")
        self.rank, self.dropout, self.depth = int(rank), float(dropout), int(depth)

    def hparams(self) -> dict:
        # depth only when above 1: banks saved before it existed (and one-layer banks) load with the default
        return {"rank": self.rank, "dropout": self.dropout} | ({"depth": self.depth} if self.depth > 1 else {})

    def rank_mlp(self, out_features: int) -> nn.Sequential:
        """Linear(D, rank) -> GELU -> Dropout, then (depth - 1) x [Linear(rank, rank) -> GELU -> Dropout], then
        Linear(rank, out_features); the last module is always the output Linear."""
        blocks: list[nn.Module] = [nn.Linear(self.hidden_size, self.rank), nn.GELU(), nn.Dropout(self.dropout)]
        for _ in range(self.depth - 1):
            blocks += [nn.Linear(self.rank, self.rank), nn.GELU(), nn.Dropout(self.dropout)]
        return nn.Sequential(*blocks, nn.Linear(self.rank, out_features))
