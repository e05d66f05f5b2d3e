"""Predictor-driven prefetch: a predictor bank's top-k or probability threshold, 1..H layers ahead.

    make_prefetch("predictor", predictor=load_predictors(bank_dir), horizon=2, top_k=4)        # per-token top-k
    make_prefetch("predictor", predictor=bank, horizon=3, threshold=0.3)                     # or a threshold

`predictor` is any object with `.predict(layer, hidden_TD) -> [T, H_eff, E]` probabilities (the interface
of specmd_predict/predictors/base.py); if it also has `predicts_next_pass`, the last MoE layer's call adds the
next pass's MoE layer 0 from `.predict_next_pass(hidden_TD) -> [T, E]`. An expert's score is the probability
that at least one of the T tokens selects it, 1 - prod_t(1 - p_t). After each `propose`, `self.probabilities`
holds the scores of every expert of this pass's predicted layers (not only the chosen ones; the next pass's
are left out: they are not about this pass); the driver forwards them with `cache.predictions()` so that
predicted-next-use evictors see them. Candidates come nearest layer first, best score first within a layer.

Two halves, so that the runtime reads nothing back from the device but the routing:
    scores = policy.prepare(layer, hidden_TD, ids_TK)  # device: [R, 2, E] float32 (score, chosen) rows, no sync
    candidates = policy.select(layer, scores_cpu)      # host: after the driver's one device-to-host copy
`propose(layer, hidden_TD, routing)` is the two in a row (the simulator's path, with the routing's ids).
The decode fast path: for one token, a per-token top-k and no probability map wanted (`keep_probabilities`
off: the evictor ignores predictions), the rows are packed as [R, 2, k] (each row's k best scores and their
expert ids), so the host reads k values per row instead of E; a predictor with `predict_top` (router reuse)
makes them itself in a few kernels, as two tensors (scores [R, k], ids [R, k]: no cast, no stack), and turns its
k scores into probabilities on the host (`probability_of_score`). Same candidates, scores and order as the full
rows (tests/runtime/test_packed_prefetch.py).

A routing-only predictor (`uses_routing`, specmd_predict/predictors/routing_only.py) scores from the layer's
routing ids `ids_TK` instead of the hidden state, and from the previous token's ids at the predicted layers.
The policy keeps those itself: at every prepare it copies the last token's ids of the layer into a device
buffer [L, K] (no host read), and a call at a layer <= the previous call's starts a new pass, whose buffer the
next pass reads. The previous pass's last token is the previous token of a one-token (decode) pass; a pass of
several tokens (a prefill, or batched decode) gets no previous ids (scored like a sequence's first token,
the one case without them in training). Nothing marks a new sequence, so a decode pass that starts one reads the
last token of the one before (as in the runtime, the simulator replays the same way).

The next token's first MoE layer (issue 11.4): a bank whose next-pass head holds a token table
(`next_pass_uses_token`) predicts MoE layer 0 of pass p + 1 far better once that pass's input token is known. The
driver's owner switches that on (`token_at_pass_start = True`, only where `uses_next_token`: the runtime's
pass-start hook, runtime/pass_start.py, and the simulator for a trace with token ids); then the last MoE layer's
call keeps its router input (on the device, no copy) instead of adding the state-only NEXT_PASS row, and when the
next pass starts
    scores = policy.prepare_pass_start(next_token_T)   # device: rows for MoE layer 0 from (kept state, token)
    candidates = policy.select(0, scores_cpu)          # host: layer 0's candidates, its probabilities kept
`propose_pass_start(next_token_T, hidden_TD)` is the two in a row (the simulator's path, with pass p's state given).
Rows are paired with the pass's tokens by `pair_rows`. `next_token=False` keeps the state-only path.

If the predictor `predicts_next_use` (and `keep_next_use` is on), its next-use table rides in the same rows (one
row per MoE layer; a [T, L, E] answer is reduced to its minimum over tokens, the soonest use), and after `select`
`self.next_use` holds it as a CPU float32 [L, E] tensor (else None); the cache driver forwards it with
`cache.next_use(layer, next_LE)`.
"""

from __future__ import annotations

import torch

from specmd_predict.policies import PrefetchPolicy
from specmd_predict.routing import ExpertKey, Routing


def any_token_probability(probs_TE: torch.Tensor) -> torch.Tensor:
    """[T, ...] per-token probabilities ([T, E], or [T, R, E] for R rows at once) -> [...] the probability that
    at least one token selects each expert."""
    if probs_TE.shape[0] == 1:  # decode: the one token's probabilities (the product below is the identity)
        return probs_TE[0].float().clamp(0.0, 1.0)
    probs_TE = probs_TE.float().clamp(0.0, 1.0)
    return 1.0 - torch.exp(torch.log1p(-probs_TE.clamp(max=1 - 1e-7)).sum(dim=0))


NEXT_PASS, NEXT_USE = -1, -2  # row targets besides this pass's later layers


def pair_rows(hidden_TD: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """[num_tokens, D]: for each token of the pass that starts, the previous pass's row of the same sequence,
    the way a generate loop lays passes out (tokens flattened batch-major): as many rows as tokens (batched decode)
    pair one to one; T = B x S rows for B tokens (a batched prefill, then its first decode) give each sequence's
    last row (T = S, one token: the last row); otherwise (a new prompt) every token gets the last row."""
    num_rows = hidden_TD.shape[0]
    if num_rows == num_tokens:
        return hidden_TD
    if num_rows % num_tokens == 0:
        return hidden_TD.reshape(num_tokens, num_rows // num_tokens, -1)[:, -1]
    return hidden_TD[-1:].expand(num_tokens, -1)


def _best_then_id(pair: tuple[int, float]) -> tuple[float, int]:
    """Sort key of an (expert id, score) pair: best score first, ascending ids among equal scores."""
    return -pair[1], pair[0]


class PredictorPrefetch(PrefetchPolicy):
    name = "predictor"
    # whether select() fills `probabilities` (an evictor that hears predictions needs them; the runtime turns
    # this off for one that does not, saving a Python pass over E scores per predicted layer)
    keep_probabilities = True
    # whether prepare() runs the predictor's next-use head, if it has one (only an evictor that orders by the table
    # reads it: for the others the runtime turns this off, sparing the head, its [L, E] read-back and the packed
    # decode path it would otherwise rule out)
    keep_next_use = True

    def __init__(
        self,
        predictor=None,
        horizon: int = 1,
        top_k: int | None = None,
        threshold: float | None = None,
        next_token: bool = True,
    ) -> None:
        if predictor is None:
            raise ValueError(f"prefetch {self.name!r} needs predictor=<object with .predict(layer, hidden_TD)>")
        if (top_k is None) == (threshold is None) and type(self) is PredictorPrefetch:
            raise ValueError("prefetch 'predictor' takes exactly one of top_k=<int> or threshold=<probability>")
        if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
            raise ValueError(f"prefetch horizon must be an int >= 1 (layers ahead), got {horizon!r}")
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise ValueError(f"prefetch top_k must be an int >= 1, got {top_k!r}")
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise ValueError(f"prefetch threshold is a probability in [0, 1], got {threshold!r}")
        if not isinstance(next_token, bool):
            raise ValueError(f"prefetch next_token must be true or false, got {next_token!r}")
        self.predictor = predictor
        self.horizon = horizon
        # the next token's first MoE layer from the token at pass start (see the module docstring): possible with
        # a token-table bank and `next_token`; on only once the driver's owner will call prepare_pass_start
        self.uses_next_token = next_token and bool(getattr(predictor, "next_pass_uses_token", False))
        self.token_at_pass_start = False
        self._kept_hidden_TD: torch.Tensor | None = None  # the last MoE layer's router input of the latest pass
        self.top_k = top_k
        self.threshold = threshold
        self.probabilities: dict[ExpertKey, float] = {}
        self.next_use: torch.Tensor | None = None  # [L, E] CPU float32 after each select, if the predictor has it
        self._targets: list[int] = []
        self.uses_routing = bool(getattr(predictor, "uses_routing", False))
        self._ids_LK: torch.Tensor | None = None  # this pass's last-token ids per layer (device), routing-only
        self._previous_LK: torch.Tensor | None = None  # the previous pass's
        self._has_previous = False  # a whole earlier pass was seen
        self._last_layer: int | None = None
        self._key_lists: dict[int, list[ExpertKey]] = {}  # ExpertKey(layer, e) for every e, per layer
        # whether the last prepare() packed its rows as [R, 2, k] (each row's top-k scores, descending, and their
        # expert ids) instead of [R, 2, E]: one token, per-token top-k, no probability map wanted (the decode path)
        self._packed = False
        self._num_experts = 0  # E of the last packed prepare()
        # a predictor that scores a token's top-k itself (`predict_top`, router reuse): the decode fast path asks it
        # for [R, 2, k] directly, with its `probability_of_score` applied on the host to the k scores read back
        self._predict_top = None if self.uses_routing else getattr(predictor, "predict_top", None)
        self._score_to_probability = None  # set by a prepare() that used predict_top
        self._top_plans: dict[int, tuple] = {}  # layer -> `_top_plan(layer)`
        self._top_keys: list[list[ExpertKey]] = []  # the last `_prepare_top`'s ExpertKey list per row

    # ---- device half ------------------------------------------------------------------------------------------
    def prepare(
        self, layer: int, hidden_TD: torch.Tensor | None, ids_TK: torch.Tensor | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None:
        """[R, 2, E] float32 on the predictor's device: per predicted layer, each expert's any-token score and
        whether it is chosen (0/1); or, packed (`self._packed`, see `_packed_rows`), [R, 2, k]: each row's k
        chosen scores and expert ids, or, through a predictor's `predict_top`, the same as two tensors (scores
        [R, k] float32, ids [R, k] int64). Launches kernels only; `self._targets` names each row's layer.

        `ids_TK`: this layer's routing ids, on the device where the runtime has them; only a routing-only
        predictor reads them (and the policy keeps them for the next pass)."""
        self._targets = []
        self._packed = False
        self._score_to_probability = None
        if self._predict_top is not None and hidden_TD is not None and hidden_TD.shape[0] == 1 and self._packs():
            return self._prepare_top(layer, hidden_TD)
        if self.uses_routing:
            if ids_TK is None:
                return None
            previous_TLK = self._remember(layer, ids_TK)
        elif hidden_TD is None:
            return None
        parts: list[torch.Tensor] = []  # [R_i, 2, E] blocks of rows, concatenated once at the end
        with torch.no_grad():
            if self.uses_routing:
                probs_THE = self.predictor.predict_routing(layer, ids_TK, previous_TLK)
            else:
                probs_THE = self.predictor.predict(layer, hidden_TD)
            if probs_THE.shape[1] > self.horizon:
                probs_THE = probs_THE[:, : self.horizon]
            self._targets = list(range(layer + 1, layer + 1 + probs_THE.shape[1]))
            last = layer == self.predictor.num_layers - 1
            # the optional heads read the hidden state: a routing-only trace has none, so they sit out
            if last and self.token_at_pass_start:
                self._kept_hidden_TD = hidden_TD  # scored with the next token when its pass starts
            elif hidden_TD is not None and getattr(self.predictor, "predicts_next_pass", False) and last:
                next_T1E = self.predictor.predict_next_pass(hidden_TD).unsqueeze(1)
                probs_THE = torch.cat((probs_THE, next_T1E), dim=1) if self._targets else next_T1E
                self._targets.append(NEXT_PASS)
            wants_next_use = (
                self.keep_next_use and hidden_TD is not None and getattr(self.predictor, "predicts_next_use", False)
            )
            if self._targets and not wants_next_use and self._can_pack(probs_THE):
                self._packed = True
                return self._packed_rows(probs_THE)
            if self._targets:
                parts.append(self._rows(probs_THE))
            if wants_next_use:
                next_LE = self.predictor.predict_next_use(layer, hidden_TD).float()
                if next_LE.dim() == 3:  # [T, L, E]: the soonest use by any of the tokens
                    next_LE = next_LE.amin(dim=0)
                next_LE = next_LE.to(parts[0].device if parts else next_LE.device)
                parts.append(torch.stack((next_LE, torch.zeros_like(next_LE)), dim=1))
                self._targets += [NEXT_USE] * next_LE.shape[0]
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def prepare_pass_start(
        self, next_token_T: torch.Tensor, hidden_TD: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        """Device rows (as `prepare`'s, one row: MoE layer 0 of the pass that starts) from the pass's input tokens
        `next_token_T` [T'] and the previous pass's last MoE layer router input `hidden_TD` (default: the one
        kept by `prepare`); None without a state or tokens. Launches kernels only."""
        self._targets = []
        self._packed = False
        self._score_to_probability = None
        if hidden_TD is None:
            hidden_TD = self._kept_hidden_TD
        if hidden_TD is None or hidden_TD.shape[0] == 0 or next_token_T.numel() == 0:
            return None
        with torch.no_grad():
            rows_TD = pair_rows(hidden_TD, next_token_T.shape[0])
            probs_T1E = self.predictor.predict_next_pass(rows_TD, next_token_T.reshape(-1)).unsqueeze(1)
            self._targets = [0]
            if self._can_pack(probs_T1E):
                self._packed = True
                return self._packed_rows(probs_T1E)
            return self._rows(probs_T1E)

    def propose_pass_start(
        self, next_token_T: torch.Tensor, hidden_TD: torch.Tensor | None = None
    ) -> list[tuple[ExpertKey, float]]:
        """`prepare_pass_start` then `select`: MoE layer 0's candidates at the start of a pass (the simulator)."""
        prepared = self.prepare_pass_start(next_token_T, hidden_TD)
        return self.select(0, None if prepared is None else prepared.cpu())

    def _can_pack(self, probs_THE: torch.Tensor) -> bool:
        """The decode fast path applies: one token, a per-token top-k by this class's own rule, and no map of every
        expert's score wanted (`keep_probabilities` off): the host then needs only the k chosen per row."""
        return probs_THE.shape[0] == 1 and self._packs()

    def _packs(self) -> bool:
        own_rule = type(self)._chosen is PredictorPrefetch._chosen
        return self.threshold is None and not self.keep_probabilities and own_rule

    def _prepare_top(self, layer: int, hidden_TD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """One token through a predictor's own `predict_top`: the rows `prepare` would pack, as (scores [R, k],
        ids [R, k]) in a few kernels."""
        plan = self._top_plans.get(layer)
        if plan is None:  # the layer's row targets and router layers: fixed for a predictor, worked out once
            plan = self._top_plans[layer] = self._top_plan(layer)
        targets, router_layers, k, self._top_keys = plan
        if not targets:
            return None
        self._targets, self._packed = targets, True
        self._score_to_probability = self.predictor.probability_of_score
        self._num_experts = self.predictor.num_experts
        return self._predict_top(layer, hidden_TD, router_layers, k)

    def _top_plan(self, layer: int) -> tuple[list[int], list[int], int, list[list[ExpertKey]]]:
        """(row targets, the router layer of each, k, each row's ExpertKey list) of `_prepare_top` at `layer`."""
        predictor = self.predictor
        ahead = min(self.horizon, predictor.horizon_at(layer))
        targets = list(range(layer + 1, layer + 1 + ahead))
        if layer == predictor.num_layers - 1 and getattr(predictor, "predicts_next_pass", False):
            if not self.token_at_pass_start:
                targets.append(NEXT_PASS)
        router_layers = [max(target, 0) for target in targets]
        keys = [self._keys(router_layer, predictor.num_experts) for router_layer in router_layers]
        return targets, router_layers, min(self.top_k, predictor.num_experts), keys

    def _packed_rows(self, probs_THE: torch.Tensor) -> torch.Tensor:
        """[R, 2, k] float32: per predicted layer, the one token's k best scores (descending) and their expert ids.
        Two kernels for every row at once, and k values per row (not E) for the host to read."""
        self._num_experts = probs_THE.shape[-1]
        scores_RK, ids_RK = probs_THE[0].topk(min(self.top_k, probs_THE.shape[-1]), dim=-1)
        return torch.stack((scores_RK.float(), ids_RK.float()), dim=1)  # ids < 2^24: exact in float32

    def _rows(self, probs_THE: torch.Tensor) -> torch.Tensor:
        """[R, 2, E] float32: per predicted layer (dim 1 of `probs_THE`), each expert's any-token score and
        whether it is chosen (0/1); every row at once (a few kernels per layer call, not a few per row)."""
        if type(self)._chosen is not PredictorPrefetch._chosen:  # a subclass's own per-row rule
            return torch.stack([torch.stack(self._row(probs_THE[:, r])) for r in range(probs_THE.shape[1])])
        any_RE = any_token_probability(probs_THE)
        if self.threshold is not None:
            chosen_RE = (any_RE >= self.threshold).float()
        else:  # each token's top-k of each row, their union over the tokens
            k = min(self.top_k, probs_THE.shape[-1])
            if probs_THE.shape[0] == 1:
                top_RK = probs_THE[0].topk(k, dim=-1).indices
            else:
                top_RK = probs_THE.topk(k, dim=-1).indices.transpose(0, 1).reshape(probs_THE.shape[1], -1)
            chosen_RE = torch.zeros_like(any_RE).scatter_(1, top_RK, 1.0)
        return torch.stack((any_RE, chosen_RE), dim=1)

    def _remember(self, layer: int, ids_TK: torch.Tensor) -> torch.Tensor | None:
        """Keep this layer's last-token ids on the device; return the previous token's ids at every layer as
        [1, L, K] for a one-token pass that follows a whole pass, else None. No host read."""
        num_layers = self.predictor.num_layers
        if self._ids_LK is None or self._ids_LK.shape[1] != ids_TK.shape[1] or self._ids_LK.device != ids_TK.device:
            self._ids_LK = torch.zeros(num_layers, ids_TK.shape[1], dtype=torch.long, device=ids_TK.device)
            self._previous_LK, self._has_previous, self._last_layer = torch.zeros_like(self._ids_LK), False, None
        if self._last_layer is not None and layer <= self._last_layer:  # a new pass: this one becomes previous
            self._ids_LK, self._previous_LK = self._previous_LK, self._ids_LK
            self._has_previous = True
        self._last_layer = layer
        if ids_TK.shape[0] > 0:
            self._ids_LK[layer].copy_(ids_TK[-1], non_blocking=True)
        if ids_TK.shape[0] != 1 or not self._has_previous:
            return None
        return self._previous_LK.unsqueeze(0)

    def _row(self, probs_TE: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """([E] any-token score, [E] chosen as 0/1 float32) of one predicted layer."""
        any_E = any_token_probability(probs_TE)
        return any_E, self._chosen(probs_TE, any_E)

    def _chosen(self, probs_TE: torch.Tensor, any_E: torch.Tensor) -> torch.Tensor:
        """[E] float32 0/1: the experts this policy proposes (computed on the device)."""
        if self.threshold is not None:
            return (any_E >= self.threshold).float()
        k = min(self.top_k, probs_TE.shape[-1])
        chosen_E = torch.zeros_like(any_E, dtype=torch.float32)
        return chosen_E.index_fill_(0, probs_TE.topk(k, dim=-1).indices.flatten(), 1.0)

    # ---- host half --------------------------------------------------------------------------------------------
    def select(self, layer: int, prepared: torch.Tensor | None) -> list[tuple[ExpertKey, float]]:
        """Candidates from `prepare`'s rows, already on the host; sets `self.probabilities`."""
        self.probabilities = {}
        self.next_use = None
        if prepared is None:
            return []
        out: list[tuple[ExpertKey, float]] = []
        if self._packed:
            return self._select_packed(prepared)
        if self._targets and self._targets[-1] == NEXT_USE:
            first = self._targets.index(NEXT_USE)
            # its own copy: `prepared` may be the engine's pinned buffer, overwritten at the next layer
            self.next_use = prepared[first:, 0].to("cpu", torch.float32, copy=True)
            prepared, targets = prepared[:first], self._targets[:first]
        else:
            targets = self._targets
        for target, (scores_E, chosen_E) in zip(targets, prepared.tolist(), strict=True):
            if target >= 0 and self.keep_probabilities:
                self.probabilities.update(zip(self._keys(target, len(scores_E)), scores_E, strict=True))
            picked = sorted((e for e, c in enumerate(chosen_E) if c), key=lambda e: -scores_E[e])
            out.extend((ExpertKey(max(target, 0), e), scores_E[e]) for e in picked)
        return out

    def _select_packed(self, prepared) -> list[tuple[ExpertKey, float]]:
        """Candidates from packed rows, [R, 2, k] or (scores [R, k], ids [R, k]) from `predict_top`: each row's k
        chosen, best first as top-k left them (a tie, rare, is re-sorted to ascending ids, the order of the full
        rows)."""
        if isinstance(prepared, tuple):
            return self._select_top(prepared)
        out: list[tuple[ExpertKey, float]] = []
        to_probability = self._score_to_probability
        num_experts = self._num_experts
        for target, (scores_K, ids_K) in zip(self._targets, prepared.tolist(), strict=True):
            keys = self._keys(max(target, 0), num_experts)
            if to_probability is None:  # a predictor's probabilities, kept in [0, 1] as the full rows keep them
                scores_K = [min(max(score, 0.0), 1.0) for score in scores_K]
            else:  # router reuse's selection shares -> probabilities (increasing: the order stays)
                scores_K = [to_probability(score) for score in scores_K]
            pairs = list(zip(ids_K, scores_K, strict=True))
            if any(a[1] == b[1] for a, b in zip(pairs, pairs[1:], strict=False)):
                pairs.sort(key=_best_then_id)
            out += [(keys[int(e)], score) for e, score in pairs]
        return out

    def _select_top(self, prepared: tuple[torch.Tensor, torch.Tensor]) -> list[tuple[ExpertKey, float]]:
        """`_select_packed` for `predict_top`'s (scores [R, k], ids [R, k] int64): the decode path's host half, in
        as few Python steps as the same candidates allow (ids are ints already, keys come from the layer's plan)."""
        out: list[tuple[ExpertKey, float]] = []
        to_probability = self._score_to_probability
        for keys, scores_K, ids_K in zip(self._top_keys, prepared[0].tolist(), prepared[1].tolist(), strict=True):
            probs_K = [to_probability(score) for score in scores_K]  # increasing: the order stays
            if len(set(probs_K)) < len(probs_K):  # a tie (rare; equal values sit side by side): ascending ids
                out += [(keys[e], p) for e, p in sorted(zip(ids_K, probs_K, strict=True), key=_best_then_id)]
            else:
                out += [(keys[e], p) for e, p in zip(ids_K, probs_K, strict=True)]
        return out

    def _keys(self, layer: int, num_experts: int) -> list[ExpertKey]:
        """ExpertKey(layer, e) for every e, built once per layer (the select path runs every layer call)."""
        keys = self._key_lists.get(layer)
        if keys is None or len(keys) != num_experts:
            keys = self._key_lists[layer] = [ExpertKey(layer, e) for e in range(num_experts)]
        return keys

    def propose(self, layer: int, hidden_TD: torch.Tensor | None, routing: Routing) -> list[tuple[ExpertKey, float]]:
        prepared = self.prepare(layer, hidden_TD, routing.expert_ids_TK if self.uses_routing else None)
        if isinstance(prepared, tuple):  # predict_top's (scores, ids)
            return self.select(layer, (prepared[0].cpu(), prepared[1].cpu()))
        return self.select(layer, None if prepared is None else prepared.cpu())
