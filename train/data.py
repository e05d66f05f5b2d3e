"""LightningDataModule over a harvested Arrow dataset, memory-mapped: one batch of tokens at a time.

    dm = HarvestDataModule(harvest, horizon=3, batch_size=512)     # a data_pipelines Harvest or its path
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    batch["hidden"]       # [N, L_kept, D] float16: router input at manifest["hidden_layers"]
    batch["expert_ids"]   # [N, L, K] int: experts the same tokens chose at every MoE layer
    batch["router_logits"]  # [N, L, E] float16, only with use_logits=True (KL distillation)

A row holds one token at every layer, so one batch gives every (source layer l, target l+1..l+H) pair of
those tokens; the LightningModule slices them. Rows are fetched with a list of indices from the
memory-mapped table (`with_format("torch")`), so the dataset never has to fit in RAM. The train and
validation splits are the harvest's own, by sequence id (manifest `validation_sequence_ids`).
"""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler

from specmd_predict.predictors import check_horizon


def open_harvest(harvest):
    """A data_pipelines Harvest from a path (clear error if missing), or the object passed in."""
    if not isinstance(harvest, (str, os.PathLike)):
        return harvest
    path = Path(harvest)
    if not (path / "manifest.json").is_file():
        raise FileNotFoundError(f"no harvest at {path} (expected {path / 'manifest.json'}); run specmd-harvest first")
    from data_pipelines import load_harvest

    return load_harvest(path)


class HarvestDataModule(L.LightningDataModule):
    def __init__(
        self,
        harvest,
        horizon: int = 3,
        batch_size: int = 512,
        eval_batch_size: int = 4096,
        use_logits: bool = False,
        num_workers: int = 0,
        seed: int = 0,
    ):
        super().__init__()
        self.harvest = open_harvest(harvest)
        self.manifest = self.harvest.manifest
        model = self.manifest["model"]
        self.num_layers, self.num_experts = int(model["num_layers"]), int(model["num_experts"])
        check_horizon(horizon, self.num_layers)
        self.hidden_layers: list[int] = list(self.manifest.get("hidden_layers") or range(self.num_layers))
        self.horizon, self.batch_size, self.eval_batch_size = horizon, batch_size, eval_batch_size
        self.num_workers, self.seed = num_workers, seed
        self.columns = ["hidden", "expert_ids"]
        if use_logits:
            if "router_logits" not in self.harvest.dataset.column_names:
                raise ValueError(
                    "loss 'kl' needs router logits, but this harvest has none; harvest with router logits kept "
                    "or train with loss 'bce'"
                )
            self.columns.append("router_logits")
        for name, split in (("train", self.harvest.train), ("validation", self.harvest.validation)):
            if len(split) == 0:
                raise ValueError(f"the harvest's {name} split is empty; harvest more sequences")

    @property
    def train_split(self):
        return self.harvest.train.with_format("torch", columns=self.columns)

    @property
    def validation_split(self):
        return self.harvest.validation.with_format("torch", columns=self.columns)

    def train_dataloader(self) -> DataLoader:
        split = self.train_split
        # one seeded generator for the whole fit: a new, reproducible order every epoch
        sampler = RandomSampler(split, generator=torch.Generator().manual_seed(self.seed))
        return self._loader(split, BatchSampler(sampler, self.batch_size, drop_last=False))

    def val_dataloader(self) -> DataLoader:
        split = self.validation_split
        return self._loader(split, BatchSampler(SequentialSampler(split), self.eval_batch_size, drop_last=False))

    def _loader(self, split, batch_sampler) -> DataLoader:
        # batch_size=None + a batch sampler: the dataset is indexed with a whole list of rows at once
        return DataLoader(
            split,
            sampler=batch_sampler,
            batch_size=None,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )
