"""What an offloaded model reports: the cache's counters plus stall time, per MoE layer and in total.

    stats = runtime.offload_stats(model)
    stats.hit_rate, stats.misses, stats.late_prefetches, stats.collision_misses, stats.bytes_moved, stats.stall_s
    print(stats)              # a table (rich), one row per MoE layer and a total row
    stats.as_dict()           # plain numbers, for JSON

Definitions (../shared/DESIGN.md section 4): a late prefetch was resident but still being copied when demanded
(counted apart from misses, its wait is stall time); a collision miss is a miss on an expert evicted
earlier in the same pass; stall time is the wall time a layer waited for its own experts' copies.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from runtime.expert_cache import CounterRates

if TYPE_CHECKING:
    from runtime.engine import OffloadEngine


@dataclass
class LayerStats(CounterRates):
    layer: int
    hits: int
    misses: int
    late_prefetches: int
    collision_misses: int
    stall_s: float


# the totals copied by name from the cache's books (CacheStats) and from the engine's own counters
CACHE_COUNTERS = ("hits", "misses", "late_prefetches", "collision_misses", "evictions")
CACHE_COUNTERS += ("prefetches_issued", "prefetches_used", "prefetches_wasted", "bytes_moved")
ENGINE_COUNTERS = ("prefetches_refused", "prefetches_over_budget", "host_reads")


@dataclass
class OffloadStats(CounterRates):
    eviction: str
    prefetch: str
    device: str
    num_slots: int
    capacity_bytes: int
    capacity_fraction: float
    expert_bytes: int
    passes: int
    hits: int
    misses: int
    late_prefetches: int
    collision_misses: int
    evictions: int
    prefetches_issued: int
    prefetches_used: int
    prefetches_wasted: int
    prefetches_refused: int
    prefetches_over_budget: int
    bytes_moved: int
    copies: int
    host_reads: int
    stall_s: float
    layers: list[LayerStats]

    @classmethod
    def collect(cls, engine: OffloadEngine) -> OffloadStats:
        c = engine.cache.stats  # per-layer lists sized num_layers from the start
        stall_s = engine.layer_stall_s  # resolves the CUDA stall events: a sync, fine outside decoding
        layers = [
            LayerStats(
                layer,
                c.layer_hits[layer],
                c.layer_misses[layer],
                c.layer_late[layer],
                c.layer_collisions[layer],
                stall_s[layer],
            )
            for layer in range(engine.num_layers)
        ]
        total_expert_bytes = engine.cache.expert_bytes * engine.num_experts * engine.num_layers
        return cls(
            eviction=engine.eviction_name,
            prefetch=engine.prefetch_name,
            device=str(engine.pool.device),
            num_slots=engine.pool.num_slots,
            capacity_bytes=engine.pool.num_slots * engine.cache.expert_bytes,
            capacity_fraction=engine.pool.num_slots * engine.cache.expert_bytes / total_expert_bytes,
            expert_bytes=engine.cache.expert_bytes,
            passes=engine.num_passes,
            **{name: getattr(c, name) for name in CACHE_COUNTERS},
            **{name: getattr(engine, name) for name in ENGINE_COUNTERS},
            copies=engine.transfers.copies,
            stall_s=sum(stall_s),
            layers=layers,
        )

    def as_dict(self) -> dict:
        out = asdict(self)
        out.update(
            requests=self.requests,
            hit_rate=self.hit_rate,
            prefetch_precision=self.prefetch_precision,
            prefetch_recall=self.prefetch_recall,
            host_reads_per_pass=self.host_reads / self.passes if self.passes else 0.0,
        )
        return out

    def __rich__(self):
        from rich.table import Table

        title = (
            f"expert offloading: {self.eviction} eviction, {self.prefetch} prefetch, {self.num_slots} slots "
            f"({_mib(self.capacity_bytes)}, {self.capacity_fraction:.1%} of experts) on {self.device}, "
            f"{self.passes} passes"
        )
        table = Table(title=title)
        for column in ("layer", "requests", "hit rate", "hits", "misses", "late", "collisions", "stall ms"):
            table.add_column(column, justify="right")
        for s in self.layers:
            table.add_row(
                str(s.layer),
                str(s.requests),
                f"{s.hit_rate:.1%}",
                str(s.hits),
                str(s.misses),
                str(s.late_prefetches),
                str(s.collision_misses),
                f"{s.stall_s * 1e3:.1f}",
            )
        table.add_row(
            "all",
            str(self.requests),
            f"{self.hit_rate:.1%}",
            str(self.hits),
            str(self.misses),
            str(self.late_prefetches),
            str(self.collision_misses),
            f"{self.stall_s * 1e3:.1f}",
            style="bold",
        )
        table.caption = (
            f"moved {_mib(self.bytes_moved)}; prefetches issued {self.prefetches_issued}, used "
            f"{self.prefetches_used} ({self.prefetch_precision:.0%}), wasted {self.prefetches_wasted}, refused "
            f"{self.prefetches_refused}; "
            f"evictions {self.evictions}"
        )
        return table

    def __str__(self) -> str:
        from rich.console import Console

        buffer = io.StringIO()
        Console(file=buffer, width=120, color_system=None).print(self)
        return buffer.getvalue().rstrip()


def _mib(num_bytes: int) -> str:
    return f"{num_bytes / 2**20:.1f} MiB"
