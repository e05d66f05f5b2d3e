"""LightningModule that trains one expert predictor (a plain nn.Module from specmd_predict) for all layers.

    module = PredictorModule(predictor, hidden_layers=list(range(L)), loss="bce", lr=1e-3)
    trainer.fit(module, datamodule)

Loss per source layer l and horizon h, averaged: "bce" on the multi-hot experts the token chose at l+h,
with the predictor's selection probabilities (1 - (1 - softmax)^K, computed in log space); or "kl"
distillation from the true router distribution softmax(router_logits at l+h) to softmax(predicted logits).
Validation logs recall@K per (layer, horizon) as `val/recall_l{l}_h{h}`, per horizon `val/recall_h{h}`,
and their mean `val/recall` (what the checkpoint and early stopping watch). A predictor with a next-pass head
(`attach_next_pass`) also learns MoE layer 0 of the next token from MoE layer L-1 (one more BCE pair in the
mean, on rows that have a next token) and logs `val/recall_next_pass`; a head with a token table (next_pass.py)
learns both with the next token and without it (two pairs), logging the former as `val/recall_next_pass` and the
latter as `val/recall_next_pass_state`. A next-use head (`attach_next_use`)
adds the mean squared error of log(passes until next use) at every kept source layer (`val/next_use_mse`), over
the entries an evictor compares (next_use.py's `resident_weight`).
"""

from __future__ import annotations

import math

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Timer

from specmd_predict.predictors import ExpertPredictor
from specmd_predict.predictors.metrics import multi_hot
from specmd_predict.predictors.next_use import resident_weight
from specmd_predict.predictors.recall import LayerHorizonRecall

LOSSES = ("bce", "kl")
LR_SCHEDULES = ("cosine", "constant")


def selection_bce(
    logits_xE: torch.Tensor,
    target_xE: torch.Tensor,
    top_k: int,
    mask_x: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """BCE of p = 1 - (1 - q)^K, q = softmax(logits), against a multi-hot target; stable in log space.

    `mask_x` (bool): average over these rows only (a weight, not an index: no host sync on a GPU).
    `label_smoothing` s: the target becomes (1 - s) x multi-hot + s x K / E (towards the uniform choice of K of E).
    """
    log_q = F.log_softmax(logits_xE.float(), dim=-1)
    log_not_p = top_k * torch.log1p(-log_q.exp().clamp(max=1 - 1e-6))  # log(1 - p)
    log_p = torch.log((-torch.expm1(log_not_p)).clamp(min=1e-12))
    target_xE = target_xE.float()
    if label_smoothing > 0:
        target_xE = target_xE * (1 - label_smoothing) + label_smoothing * top_k / target_xE.shape[-1]
    loss_xE = -(target_xE * log_p + (1 - target_xE) * log_not_p)
    if mask_x is None:
        return loss_xE.mean()
    weight_x = mask_x.float()
    return (loss_xE.mean(-1) * weight_x).sum() / weight_x.sum().clamp(min=1.0)


def distillation_kl(logits_xE: torch.Tensor, teacher_logits_xE: torch.Tensor) -> torch.Tensor:
    """KL(softmax(teacher) || softmax(logits)), mean over rows."""
    log_q = F.log_softmax(logits_xE.float(), dim=-1)
    log_t = F.log_softmax(teacher_logits_xE.float(), dim=-1)
    return F.kl_div(log_q.flatten(0, -2), log_t.flatten(0, -2), log_target=True, reduction="batchmean")


class PredictorModule(L.LightningModule):
    def __init__(
        self,
        predictor: ExpertPredictor,
        hidden_layers: list[int] | None = None,
        loss: str = "bce",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        router_lr_scale: float = 0.1,
        lr_schedule: str = "cosine",
        label_smoothing: float = 0.0,
    ):
        super().__init__()
        if lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"unknown lr_schedule {lr_schedule!r}; choose one of {', '.join(LR_SCHEDULES)}")
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
        self.predictor = predictor
        self.hidden_layers = list(range(predictor.num_layers)) if hidden_layers is None else list(hidden_layers)
        # source layers we can train: hidden kept there and at least one later layer
        self.source_layers = [l for l in self.hidden_layers if predictor.horizon_at(l) > 0]
        self.loss_name, self.lr, self.weight_decay, self.router_lr_scale = loss, lr, weight_decay, router_lr_scale
        self.lr_schedule, self.label_smoothing = lr_schedule, label_smoothing
        self.save_hyperparameters(ignore=["predictor"])
        self.val_recall = LayerHorizonRecall(predictor.num_layers, predictor.horizon, predictor.top_k)
        # the next token's first MoE layer, from the last MoE layer (when the predictor has that head)
        last = predictor.num_layers - 1
        self.trains_next_pass = predictor.predicts_next_pass and last in self.hidden_layers
        self.val_next_pass = LayerHorizonRecall(1, 1, predictor.top_k)
        self.val_next_pass_state = LayerHorizonRecall(1, 1, predictor.top_k)  # without the next token
        self.trains_next_use = predictor.predicts_next_use

    def next_pass_logits(self, batch: dict, with_token: bool = True) -> torch.Tensor:
        """[N, E] logits for MoE layer 0 of each token's next pass (given the next token, when the head has a token
        table, the batch has the tokens and `with_token`)."""
        hidden_ND = batch["hidden"][:, self.hidden_layers.index(self.predictor.num_layers - 1)].float()
        token_N = batch.get("next_token") if with_token and self.predictor.next_pass_uses_token else None
        return self.predictor.next_pass_logits(hidden_ND, token_N)

    def next_pass_variants(self, batch: dict) -> list[bool]:
        """The next-pass logits to train and validate: with the next token when possible, and always without."""
        with_token = self.predictor.next_pass_uses_token and "next_token" in batch
        return [True, False] if with_token else [False]

    def pair_logits(self, batch: dict) -> list[tuple[int, torch.Tensor]]:
        """(layer, logits [N, H_eff, E]) for every trainable source layer of the batch."""
        if getattr(self.predictor, "uses_routing", False):  # the routing-only kind: every layer's ids are known
            ids_NLK, previous = batch["expert_ids"].long(), batch.get("previous_ids")
            layers = [l for l in range(self.predictor.num_layers) if self.predictor.horizon_at(l) > 0]
            return [
                (l, self.predictor.logits_routing(l, ids_NLK[:, l], previous, batch.get("has_previous")))
                for l in layers
            ]
        hidden_NLD = batch["hidden"].float()
        return [(l, self.predictor.logits(l, hidden_NLD[:, self.hidden_layers.index(l)])) for l in self.source_layers]

    def compute_loss(self, batch: dict) -> torch.Tensor:
        losses = []
        for l, logits_NHE in self.pair_logits(batch):
            num_ahead = logits_NHE.shape[1]
            if self.loss_name == "kl":
                teacher_NHE = batch["router_logits"][:, l + 1 : l + 1 + num_ahead]
                losses.append(distillation_kl(logits_NHE, teacher_NHE))
            else:
                ids_NHK = batch["expert_ids"][:, l + 1 : l + 1 + num_ahead].long()
                target_xE = multi_hot(ids_NHK.flatten(0, 1), self.predictor.num_experts)
                losses.append(
                    selection_bce(
                        logits_NHE.flatten(0, 1), target_xE, self.predictor.top_k, label_smoothing=self.label_smoothing
                    )
                )
        if self.trains_next_pass and "next_ids" in batch:  # more (source, target) pairs, counted like the others
            target_NE = multi_hot(batch["next_ids"].long(), self.predictor.num_experts)
            for with_token in self.next_pass_variants(batch):
                logits_NE = self.next_pass_logits(batch, with_token)
                losses.append(
                    selection_bce(logits_NE, target_NE, self.predictor.top_k, batch["has_next"], self.label_smoothing)
                )
        loss = torch.stack(losses).mean()
        if self.trains_next_use and "passes_NLE" in batch:
            loss = loss + self.next_use_loss(batch)
        return loss

    def next_use_loss(self, batch: dict) -> torch.Tensor:
        """Mean squared error of log g (passes until next use), over kept source layers and tokens, each (j, e)
        weighted by `resident_weight` (the entries an evictor compares: experts the sequence used recently)."""
        hidden_NLD = batch["hidden"].float()
        target_NLE = batch["passes_NLE"].float().log()
        weight_NLE = resident_weight(batch["since_NLE"]) if "since_NLE" in batch else torch.ones_like(target_NLE)
        total = weight_NLE.sum().clamp(min=1.0)
        losses = [
            (weight_NLE * (self.predictor.next_use_log_passes(l, hidden_NLD[:, index]).float() - target_NLE) ** 2).sum()
            / total
            for index, l in enumerate(self.hidden_layers)
        ]
        return torch.stack(losses).mean()

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.compute_loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["expert_ids"].shape[0])
        return loss

    def on_validation_epoch_start(self) -> None:
        self.val_recall.reset()
        self.val_next_pass.reset()
        self.val_next_pass_state.reset()

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        num_tokens = batch["expert_ids"].shape[0]
        self.log("val/loss", self.compute_loss(batch), batch_size=num_tokens)
        for l, logits_NHE in self.pair_logits(batch):
            for h in range(logits_NHE.shape[1]):
                self.val_recall.update(l, h, logits_NHE[:, h], batch["expert_ids"][:, l + 1 + h])
        if self.trains_next_use and "passes_NLE" in batch:
            self.log("val/next_use_mse", self.next_use_loss(batch), batch_size=num_tokens)
        if self.trains_next_pass and "next_ids" in batch:
            for with_token in self.next_pass_variants(batch):
                state_only = self.predictor.next_pass_uses_token and not with_token
                metric = self.val_next_pass_state if state_only else self.val_next_pass
                metric.update(0, 0, self.next_pass_logits(batch, with_token), batch["next_ids"], batch["has_next"])

    def on_validation_epoch_end(self) -> None:
        recall_LH = self.validation_recall()
        per_horizon = []
        for h in range(self.predictor.horizon):
            values = [recall_LH[l, h] for l in self.source_layers if self.predictor.horizon_at(l) > h]
            for l in self.source_layers:
                if self.predictor.horizon_at(l) > h:
                    self.log(f"val/recall_l{l}_h{h + 1}", float(recall_LH[l, h]))
            per_horizon.append(sum(values) / len(values))
            self.log(f"val/recall_h{h + 1}", float(per_horizon[-1]))
        self.log("val/recall", float(sum(per_horizon) / len(per_horizon)), prog_bar=True)
        if self.trains_next_pass:  # logged beside, not inside, val/recall (which picks the checkpoint)
            for name, metric in (("", self.val_next_pass), ("_state", self.val_next_pass_state)):
                recall = metric.result()["recall"][0, 0, 0]
                if not torch.isnan(recall):
                    self.log(f"val/recall_next_pass{name}", float(recall))

    def validation_recall(self) -> torch.Tensor:
        """[L, H] recall@K of the last validation epoch, summed over all processes (NaN where no pair exists)."""
        return self.val_recall.result()["recall"][0].cpu()

    def configure_optimizers(self):
        # copied router weights (residual kind) move slower than the fresh correction: they start at the optimum
        # of router reuse and are small, so the full learning rate would wipe that start out in a few steps
        routers = [p for n, p in self.predictor.named_parameters() if n.startswith("router_")]
        others = [p for n, p in self.predictor.named_parameters() if not n.startswith("router_")]
        groups = [{"params": others}]
        if routers:  # and never decay towards zero: their start (the real routers) is the prior, not zero
            groups.append({"params": routers, "lr": self.lr * self.router_lr_scale, "weight_decay": 0.0})
        optimizer = torch.optim.AdamW(groups, lr=self.lr, weight_decay=self.weight_decay)
        if self.lr_schedule == "constant":
            return optimizer
        # cosine to zero over the whole planned run (max_epochs), or over max_time when that comes first: the last
        # steps settle instead of oscillating even when a busy machine gets fewer epochs done before the time cap
        # (Lightning validates when max_time stops a run, so the checkpoint sees the settled predictor). Under DDP
        # by steps only: each rank reads its own clock, and replicas must take identical optimizer steps.
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        timer = next((c for c in self.trainer.callbacks if isinstance(c, Timer)), None)
        timer = timer if self.trainer.world_size == 1 else None
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_to_budget(total, timer))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def cosine_to_budget(total_steps: int, timer: Timer | None = None):
    """LR factor by step: 0.5 (1 + cos(pi x progress)), progress the larger of the steps done out of `total_steps`
    and the time spent out of the timer's budget (Lightning's max_time), capped at 1.

    A plain function (a closure), so LambdaLR keeps it out of checkpoints; a resumed run's Timer restores its
    elapsed time, so the schedule continues where it stopped. `factor.clock_led` turns true once the time led: from
    then on the learning rates depend on the machine's speed, so the run is not repeatable bit for bit (specmd-train
    says so; `--max_time null` schedules by steps only)."""

    def factor(step: int) -> float:
        progress = step / total_steps
        remaining = None if timer is None else timer.time_remaining()
        if remaining is not None:
            elapsed = timer.time_elapsed()
            by_time = elapsed / max(elapsed + remaining, 1e-9)
            factor.clock_led = factor.clock_led or by_time > progress
            progress = max(progress, by_time)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    factor.clock_led = False
    return factor
