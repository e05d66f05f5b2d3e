"""Open a finished harvest: the memory-mapped dataset, its manifest, and its train/validation split.

    from data_pipelines import load_harvest
    h = load_harvest("outputs/harvests/embedded-1a2b3c4d")
    h.manifest["model"]["num_layers"], len(h.train), len(h.validation)
    h.train.with_format("torch", columns=["hidden", "expert_ids"])[:1024]   # hidden [1024, L_kept, D]

Rows are stored sequence after sequence, position after position, so the validation sequences (the last
ones, by construction) are one contiguous range and the splits are plain slices of the Arrow table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
from datasets import Dataset, load_from_disk

from data_pipelines.manifest import DATA_NAME, verify_harvest


class SequenceSplits:
    """`train`/`validation` views of `self.dataset`, split by `self.manifest["validation_sequence_ids"]`.

    Shared by a harvest (Harvest) and an external routing trace (data_pipelines.routing_trace.RoutingTrace);
    the subclass provides the `dataset` and `manifest` attributes.
    """

    @property
    def validation_sequence_ids(self) -> list[int]:
        return self.manifest["validation_sequence_ids"]

    @cached_property
    def train(self) -> Dataset:
        return self._select(validation=False)

    @cached_property
    def validation(self) -> Dataset:
        return self._select(validation=True)

    def _select(self, validation: bool) -> Dataset:
        sequence_id = self.dataset.data.column("sequence_id").to_numpy()
        mask = np.isin(sequence_id, np.asarray(self.validation_sequence_ids, dtype=np.int64))
        return self.dataset.select(np.flatnonzero(mask if validation else ~mask))


@dataclass
class Harvest(SequenceSplits):
    path: Path
    dataset: Dataset
    manifest: dict = field(repr=False)

    def _select(self, validation: bool) -> Dataset:
        ids = self.validation_sequence_ids
        seq_len = self.manifest["seq_len"]
        num_sequences = self.manifest["num_sequences"]
        if ids == list(range(num_sequences - len(ids), num_sequences)):  # the layout harvest() writes
            cut = (num_sequences - len(ids)) * seq_len
            rows = range(cut, len(self.dataset)) if validation else range(cut)
            return self.dataset.select(rows)
        return super()._select(validation)


def load_harvest(path: str | Path) -> Harvest:
    """Open the harvest at `path` (a folder `harvest`/`ensure_harvest` returned), once its checksums match."""
    path = Path(path)
    manifest = verify_harvest(path)
    return Harvest(path, load_from_disk(str(path / DATA_NAME)), manifest)
