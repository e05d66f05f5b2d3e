"""LightningDataModule over a harvested Arrow dataset, memory-mapped: one buffer of tokens at a time.

    dm = HarvestDataModule(harvest, horizon=3, batch_size=256)     # a data_pipelines Harvest or its path
    dm = HarvestDataModule(read_routing_trace(path, num_experts), previous=True)  # a routing trace: ids only
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    batch["hidden"]       # [N, L_kept, D]: router input at manifest["hidden_layers"] (absent for a routing trace)
    batch["expert_ids"]   # [N, L, K]: experts the same tokens chose at every MoE layer
    batch["router_logits"]  # [N, L, E], only with use_logits=True (KL distillation)
    batch["next_ids"]     # [N, K]: experts MoE layer 0 chose for the same sequence's next token (next pass)
    batch["has_next"]     # [N] bool: that next token exists in the harvest (False at a sequence's last token)
    batch["previous_ids"] # [N, L, K], with previous=True: the previous token's ids ("has_previous" [N] bool)
    batch["passes_NLE"]   # [N, L, E] uint8, with next_use=True: passes until each (j, e) is next used (next_use.py)
    batch["since_NLE"]    # [N, L, E] uint8, with next_use=True: passes since each (j, e) was last used (this one: 0)

A row holds one token at every layer, so one batch gives every (source layer l, target l+1..l+H) pair of
those tokens; the LightningModule slices them. Reading: contiguous chunks of rows are sliced from the
memory-mapped table (`with_format("torch")`; a slice is ~20x cheaper than gathering scattered rows), the
chunk order is shuffled, and rows are shuffled within a buffer of chunks, so only the buffer is in RAM. Training
reads short chunks (32 rows) into a buffer of 512 of them: the buffer's 16,384 rows then come from up to 512 places in
the corpus rather than from 8 runs of 2,048 consecutive tokens (64 sequences); at lr 1e-2 the batches of such
runs pull the predictor towards the few texts of each buffer in turn, which costs validation recall
(docs/results/predictors.md). Validation reads long chunks (order does not matter there).

The train and validation splits are the harvest's own, by sequence id (manifest). The next-pass targets are found
once per split by (sequence_id, position + 1), so they hold for any row order (generate-mode harvests included) and
live in memory beside the chunks (N x K small integers).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from specmd_predict.predictors import check_horizon
from specmd_predict.predictors.next_pass import next_pass_targets
from specmd_predict.predictors.next_use import next_use_targets
from specmd_predict.predictors.routing_only import previous_routing_ids


def open_harvest(harvest):
    """A data_pipelines Harvest from a path (clear error if missing), or the object passed in."""
    if not isinstance(harvest, (str, os.PathLike)):
        return harvest
    path = Path(harvest)
    if not (path / "manifest.json").is_file():
        raise FileNotFoundError(f"no harvest at {path} (expected {path / 'manifest.json'}); run specmd-harvest first")
    from data_pipelines import load_harvest

    return load_harvest(path)


TRAIN_CHUNK_ROWS = 32  # rows per contiguous slice when training (see the module docstring)
TRAIN_BUFFER_CHUNKS = 512  # slices per shuffle buffer: 16,384 rows in RAM, as 8 x 2,048 held before
EVAL_CHUNK_ROWS = 2048  # validation: every row once, in order; long slices are cheapest


class ChunkedBatches(IterableDataset):
    """Batches of rows of a harvest split: chunks in shuffled order, rows shuffled within a buffer of chunks.

    With shuffle=False: every row once, in order. Each epoch (each `iter`) draws a new order from one
    seeded generator, so a run is reproducible.

    Under DDP (`world_size` > 1) every rank draws the same chunk order and reads only its own chunks
    (`order[rank::world_size]`, memory-mapped like any other slice), so the ranks' rows are disjoint and RAM
    per rank stays one buffer. For training (shuffle=True) every rank yields the same number of batches (the
    fewest any rank has this epoch; a few rows of the others wait for the next epoch), since DDP's gradient
    all-reduce needs all ranks at every step; validation yields every row once across the ranks.
    """

    def __init__(
        self,
        split,
        columns: list[str],
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        chunk_size: int = TRAIN_CHUNK_ROWS,
        buffer_chunks: int = TRAIN_BUFFER_CHUNKS,
        extras: dict[str, torch.Tensor] | None = None,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.split, self.columns, self.batch_size, self.shuffle = split, columns, batch_size, shuffle
        self.extras = extras or {}  # in-memory tensors with one row per split row, batched alongside the columns
        # under DDP, chunks small enough that every rank gets one (a rank with no batch would leave the others
        # waiting at the next collective)
        self.chunk_size = min(chunk_size, max(len(split) // world_size, 1)) if world_size > 1 else chunk_size
        self.buffer_chunks = buffer_chunks
        self.rank, self.world_size = rank, world_size
        self.generator = torch.Generator().manual_seed(seed)  # the chunk order: the same on every rank
        # Rows within a buffer: under DDP a rank's own generator, reseeded each epoch from a draw of the shared one
        # (ranks' buffers differ in size, so sharing one would let their chunk orders drift apart; a draw of the
        # shared one keeps a resumed run's order, since checkpoints keep that generator); one process keeps the
        # single generator it always had.
        self.row_generator = self.generator if world_size == 1 else torch.Generator()

    def _starts(self, shuffle: bool) -> list[int]:
        starts = torch.arange(0, len(self.split), self.chunk_size)
        if shuffle:
            starts = starts[torch.randperm(len(starts), generator=self.generator)]
        return starts.tolist()

    def _rank_groups(self, starts: list[int], rank: int) -> list[list[int]]:
        mine = starts[rank :: self.world_size]
        return [mine[i : i + self.buffer_chunks] for i in range(0, len(mine), self.buffer_chunks)]

    def _group_rows(self, group: list[int]) -> int:
        return sum(min(self.chunk_size, len(self.split) - s) for s in group)

    def _num_batches(self, groups: list[list[int]]) -> int:
        return sum(math.ceil(self._group_rows(g) / self.batch_size) for g in groups)

    def _equal_steps(self, starts: list[int]) -> int | None:
        """Batches every rank yields this epoch when training under DDP (None: no limit)."""
        if self.world_size == 1 or not self.shuffle:
            return None
        return min(self._num_batches(self._rank_groups(starts, r)) for r in range(self.world_size))

    def __len__(self) -> int:
        starts = self._starts(shuffle=False)  # the count barely depends on the order (the short chunk's place)
        limit = self._equal_steps(starts)
        count = self._num_batches(self._rank_groups(starts, self.rank))
        return count if limit is None else min(count, limit)

    def __iter__(self) -> Iterator[dict]:
        view = self.split.with_format("torch", columns=self.columns)
        starts = self._starts(self.shuffle)
        if self.world_size > 1 and self.shuffle:
            epoch_seed = int(torch.randint(2**62, (1,), generator=self.generator))
            self.row_generator.manual_seed(epoch_seed + self.rank)
        groups = self._rank_groups(starts, self.rank)
        limit = self._equal_steps(starts)
        worker = get_worker_info()
        if worker is not None:  # each worker reads its own share of the buffers
            if limit is not None:
                raise ValueError("num_workers > 0 with several training processes is not supported; use num_workers 0")
            groups = groups[worker.id :: worker.num_workers]
        num_yielded = 0
        for group in groups:
            parts = [view[s : s + self.chunk_size] for s in group]
            buffer = {c: torch.cat([p[c] for p in parts]) for c in self.columns}
            for name, rows_N in self.extras.items():
                buffer[name] = torch.cat([rows_N[s : s + self.chunk_size] for s in group])
            num_rows = len(buffer[self.columns[0]])
            order = torch.randperm(num_rows, generator=self.row_generator) if self.shuffle else torch.arange(num_rows)
            for b in range(0, num_rows, self.batch_size):
                if limit is not None and num_yielded >= limit:
                    return
                rows = order[b : b + self.batch_size]
                num_yielded += 1
                yield {c: t[rows] for c, t in buffer.items()}


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
        next_pass: bool = True,
        next_use: bool = False,
        previous: bool = False,
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
        # an external routing trace (specmd-train --trace) has no router inputs: the routing kind reads ids only
        self.has_hidden = "hidden" in self.harvest.dataset.column_names
        self.columns = ["hidden", "expert_ids"] if self.has_hidden else ["expert_ids"]
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
        # the next pass's first layer is predicted from the last MoE layer: only when its router input is kept
        self.next_pass = next_pass and self.has_hidden and (self.num_layers - 1) in self.hidden_layers
        self.next_use = next_use
        self.previous = previous  # the routing-only kind reads the previous token's ids
        self._extras: dict[str, dict[str, torch.Tensor]] = {}

    def extras(self, split_name: str) -> dict[str, torch.Tensor]:
        """The next-pass and next-use targets of a split (computed once), for the heads being trained."""
        if split_name not in self._extras:
            split, extras = getattr(self.harvest, split_name), {}
            if self.next_pass:
                extras |= next_pass_targets(split)
            if self.next_use:
                extras |= next_use_targets(split, self.num_experts)
            if self.previous:
                extras |= previous_routing_ids(split)
            self._extras[split_name] = extras
        return self._extras[split_name]

    def train_dataloader(self) -> DataLoader:
        rank, world_size = self._ranks()
        batches = ChunkedBatches(
            self.harvest.train,
            self.columns,
            max(self.batch_size // world_size, 1),  # batch_size is the global batch: each step sees as many rows
            shuffle=True,
            seed=self.seed,
            extras=self.extras("train"),
            rank=rank,
            world_size=world_size,
        )
        return self._loader(batches)

    def val_dataloader(self) -> DataLoader:
        rank, world_size = self._ranks()
        batches = ChunkedBatches(
            self.harvest.validation,
            self.columns,
            self.eval_batch_size,
            shuffle=False,
            chunk_size=EVAL_CHUNK_ROWS,
            extras=self.extras("validation"),
            rank=rank,
            world_size=world_size,
        )
        return self._loader(batches)

    def _ranks(self) -> tuple[int, int]:
        """(global rank, world size) of the trainer running this module (Lightning DDP), else (0, 1)."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0, 1
        return trainer.global_rank, trainer.world_size

    def _loader(self, batches: ChunkedBatches) -> DataLoader:
        # batch_size=None: ChunkedBatches already yields whole batches
        return DataLoader(
            batches, batch_size=None, num_workers=self.num_workers, persistent_workers=self.num_workers > 0
        )
