"""Host -> slot copies: prefetches on a side CUDA stream with one event each, demand copies at once.

    transfers = Transfers(store, pool)
    in_flight = transfers.prefetch(key, slot)   # CUDA: queued on the copy stream, True; CPU: done, False
    transfers.finished()                        # keys whose prefetch copy has landed (polled, never blocks)
    stall_s = transfers.fetch_now(misses) + transfers.wait(late_keys)
    transfers.used(slots)                       # the compute just queued reads these slots

Ordering on CUDA: a prefetch into a slot first waits (on the GPU) for the last compute that read the slot's
previous expert (`used` records that event), so it overlaps everything else. Demand copies go on the
compute stream itself, ahead of the kernels that need them. The CPU waits (and the wait counts as stall)
only for copies a layer needs now: the layer's expert ids are on the CPU anyway, so it is in step with
the GPU at that point. On CPU every copy is synchronous and nothing is ever in flight.
"""

from __future__ import annotations

import time

import torch

from runtime.store import HostExpertStore, SlotPool
from specmd_predict.routing import ExpertKey


class Transfers:
    def __init__(self, store: HostExpertStore, pool: SlotPool):
        self.store = store
        self.pool = pool
        self.is_cuda = pool.device.type == "cuda"
        self.copy_stream = torch.cuda.Stream(device=pool.device) if self.is_cuda else None
        self.in_flight: dict[ExpertKey, torch.cuda.Event] = {}
        self._slot_last_read: dict[int, torch.cuda.Event] = {}

    def prefetch(self, key: ExpertKey, slot: int) -> bool:
        """Start copying `key` into `slot`; True if the copy is still in flight when this returns."""
        if not self.is_cuda:
            self.pool.load(slot, self.store.expert(*key))
            return False
        with torch.cuda.stream(self.copy_stream):
            last_read = self._slot_last_read.pop(slot, None)
            if last_read is not None:
                self.copy_stream.wait_event(last_read)
            self.pool.load(slot, self.store.expert(*key), non_blocking=True)
            done = torch.cuda.Event()
            done.record(self.copy_stream)
        self.in_flight[key] = done
        return True

    def finished(self) -> list[ExpertKey]:
        """Prefetches that have landed since the last call (forgotten here, to be completed in the cache)."""
        done = [key for key, event in self.in_flight.items() if event.query()]
        for key in done:
            del self.in_flight[key]
        return done

    def fetch_now(self, keys_slots: list[tuple[ExpertKey, int]]) -> float:
        """Demand copies on the compute stream; returns the seconds the layer waited for them."""
        if not keys_slots:
            return 0.0
        start = time.perf_counter()
        for key, slot in keys_slots:
            self._slot_last_read.pop(slot, None)  # the compute stream is ordered after that read already
            self.pool.load(slot, self.store.expert(*key), non_blocking=self.is_cuda)
        if self.is_cuda:
            torch.cuda.current_stream(self.pool.device).synchronize()
        return time.perf_counter() - start

    def wait(self, keys: list[ExpertKey]) -> float:
        """Block until these in-flight prefetches land; returns the seconds waited."""
        start = time.perf_counter()
        for key in keys:
            event = self.in_flight.pop(key, None)
            if event is not None:
                event.synchronize()
        return time.perf_counter() - start if keys else 0.0

    def wait_all(self) -> list[ExpertKey]:
        """Land every in-flight prefetch; returns their keys."""
        keys = list(self.in_flight)
        self.wait(keys)
        return keys

    def used(self, slots: list[int]) -> None:
        """The kernels just queued on the compute stream read `slots`: later copies into them must wait."""
        if not self.is_cuda or not slots:
            return
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(self.pool.device))
        for slot in slots:
            self._slot_last_read[slot] = event
