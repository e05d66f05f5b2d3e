"""Belady's MIN (oracle): evict the resident whose next demand request is farthest in the future.

    make_eviction("belady", future=trace.flat_requests())   # simulator only: needs the whole request sequence

`future` is the exact sequence of demand requests the cache will see; each `on_access` consumes the next one
(a mismatch raises: the oracle was given another trace). Residents never requested again go first. Without
prefetching this is the lower bound on misses for every policy under the same pins.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Collection, Sequence

from specmd_predict.policies import EvictionPolicy
from specmd_predict.routing import ExpertKey

NEVER = float("inf")


class Belady(EvictionPolicy):
    name = "belady"

    def __init__(self, future: Sequence[ExpertKey] | None = None) -> None:
        if future is None:
            raise ValueError("belady is an oracle for the simulator: pass future=<the demand request sequence>")
        self._future = list(future)
        positions: dict[ExpertKey, list[int]] = {}
        for i, key in enumerate(self._future):
            positions.setdefault(key, []).append(i)
        self._positions = positions
        self._following = [NEVER] * len(self._future)  # index of the same key's next request
        for idxs in positions.values():
            for a, b in zip(idxs, idxs[1:], strict=False):
                self._following[a] = b
        self._now = 0
        self._next: dict[ExpertKey, float] = {}

    def _next_from_now(self, key: ExpertKey) -> float:
        idxs = self._positions.get(key)
        if not idxs:
            return NEVER
        i = bisect_left(idxs, self._now)
        return idxs[i] if i < len(idxs) else NEVER

    def on_insert(self, key: ExpertKey, prefetched: bool) -> None:
        self._next[key] = self._next_from_now(key)

    def on_access(self, key: ExpertKey) -> None:
        now = self._now
        if now >= len(self._future) or self._future[now] != key:
            expected = self._future[now] if now < len(self._future) else "the end of the sequence"
            raise ValueError(f"belady: request {now} is {key}, but its future sequence has {expected}")
        self._next[key] = self._following[now]
        self._now = now + 1

    def on_evict(self, key: ExpertKey) -> None:
        del self._next[key]

    def victim(self, candidates: Collection[ExpertKey]) -> ExpertKey:
        nxt = self._next
        return max(candidates, key=nxt.__getitem__)
