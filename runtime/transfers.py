"""Host -> slot copies: one copy per expert on a side CUDA stream, ordered with events; nothing here blocks the host.

    transfers = Transfers(store, pool)
    transfers.demand(layer, misses)          # a layer's demand misses, issued together (before any prefetch)
    in_flight = transfers.prefetch(key, slot)  # CUDA: queued behind them on the copy stream, True; CPU: done, False
    transfers.finished()                     # keys whose prefetch copy has landed (polled with event.query())
    transfers.land_for_slot(cache)           # a full cache: the earliest prefetch lands in the books (driver.py)
    transfers.ready(layer, slots)            # the compute stream waits (on the GPU) for every copy into `slots`
    transfers.used(slots)                    # the compute just queued read these slots
    transfers.stall_s(num_layers)            # per-layer seconds the compute stream waited, resolved lazily

Ordering on CUDA (everything is a stream/event dependency, the host never waits here):
- a copy into a slot first waits (on the copy stream) for the last compute that read the slot's previous
  expert (`used` records that event);
- the compute stream waits for the copies into the slots it is about to read (`ready`), whether the cache
  books them as misses, late prefetches or prefetches landed by force (`land_for_slot`);
- the copy stream is FIFO, so a layer's demand copies, issued before its prefetches, never wait behind them.
Stall time is the compute stream's wait, timed with a pair of CUDA events around it and summed only when
`stall_s()` is asked for (reading an event's time is a sync; never on the decode path).

On CPU every copy is synchronous: nothing is ever in flight and the stall is the wall time of the demand copies.
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
        self.in_flight: dict[ExpertKey, torch.cuda.Event] = {}  # prefetches not yet seen landed
        self._slot_written: dict[int, torch.cuda.Event] = {}  # copies into a slot that compute must wait for
        # slots read by compute since a copy into them last waited, and the event of the latest such read (`used`)
        self._slots_read: set[int] = set()
        self._read_event = torch.cuda.Event() if self.is_cuda else None
        self._timed: list[tuple[int, torch.cuda.Event, torch.cuda.Event]] = []  # (layer, start, end), unresolved
        self._stall_s: dict[int, float] = {}
        self.copies = 0  # expert copies issued (demand + prefetch)
        self.landed_by_force = 0  # prefetches counted landed to free a slot (land_for_slot)
        self.waits = 0  # times the compute stream waited (on the GPU) for copies into the slots it reads

    # ---- issuing copies ---------------------------------------------------------------------------------------
    def demand(self, layer: int, keys_slots: list[tuple[ExpertKey, int]]) -> None:
        """Copy a layer's demand misses, all together, ahead of anything issued later."""
        if not keys_slots:
            return
        if not self.is_cuda:
            start = time.perf_counter()
            for key, slot in keys_slots:
                self.pool.load(slot, self.store.row(*key))
            self.copies += len(keys_slots)
            self._stall_s[layer] = self._stall_s.get(layer, 0.0) + time.perf_counter() - start
            return
        with torch.cuda.stream(self.copy_stream):
            for _, slot in keys_slots:
                self._after_last_read(slot)
            for key, slot in keys_slots:
                self.pool.load(slot, self.store.row(*key), non_blocking=True)
            done = torch.cuda.Event()
            done.record(self.copy_stream)
        for _, slot in keys_slots:
            self._slot_written[slot] = done
        self.copies += len(keys_slots)

    def prefetch(self, key: ExpertKey, slot: int) -> bool:
        """Start copying `key` into `slot`; True if the copy is still in flight when this returns."""
        self.copies += 1
        if not self.is_cuda:
            self.pool.load(slot, self.store.row(*key))
            return False
        with torch.cuda.stream(self.copy_stream):
            self._after_last_read(slot)
            self.pool.load(slot, self.store.row(*key), non_blocking=True)
            done = torch.cuda.Event()
            done.record(self.copy_stream)
        self.in_flight[key] = done
        self._slot_written[slot] = done
        return True

    def _after_last_read(self, slot: int) -> None:
        if slot in self._slots_read:
            self._slots_read.discard(slot)
            self.copy_stream.wait_event(self._read_event)

    # ---- landing ----------------------------------------------------------------------------------------------
    def finished(self) -> list[ExpertKey]:
        """Prefetches that have landed since the last call (forgotten here, to be completed in the cache)."""
        if not self.in_flight:
            return []
        done = [key for key, event in self.in_flight.items() if event.query()]
        for key in done:
            del self.in_flight[key]
        return done

    def land_all(self) -> list[ExpertKey]:
        """Treat every in-flight prefetch as landed in the books, without waiting on the host: whoever reads
        its slot still waits for the copy on the GPU (`ready`). Returns their keys."""
        keys = list(self.in_flight)
        self.in_flight.clear()
        return keys

    def late(self, key: ExpertKey) -> None:
        """A late prefetch was demanded: from now on its wait is the slot's (`ready`), not the books'."""
        self.in_flight.pop(key, None)

    # the rest of the driver's Transport protocol (runtime/driver.py)
    def land_for_slot(self, cache) -> list[ExpertKey]:
        """The runtime's answer to a full cache: the earliest-issued in-flight prefetch (the copy stream is FIFO,
        so it lands first) counts as landed in the books at once; nothing waits on the host, and reads of its
        slot still wait for the copy on the GPU (`ready`)."""
        if not self.in_flight:
            return []
        key = next(iter(self.in_flight))
        del self.in_flight[key]
        self.landed_by_force += 1
        return [key]

    # ---- compute side -----------------------------------------------------------------------------------------
    def ready(self, layer: int, slots: list[int]) -> None:
        """Make the compute stream wait (on the GPU) for every copy into `slots`; that wait is the layer's stall."""
        if not self.is_cuda:
            return
        events = []
        for slot in slots:
            event = self._slot_written.pop(slot, None)
            if event is not None and event not in events:
                events.append(event)
        if not events:
            return
        stream = torch.cuda.current_stream(self.pool.device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        self.waits += 1
        start.record(stream)
        for event in events:
            stream.wait_event(event)
        end.record(stream)
        self._timed.append((layer, start, end))
        if len(self._timed) >= 1024:
            self._resolve_finished()

    def used(self, slots: list[int]) -> None:
        """The kernels just queued on the compute stream read `slots`: later copies into them must wait.

        One event, re-recorded at every call (no event created and destroyed per MoE layer): a copy into a slot
        waits for the compute stream's latest read of any slot (a wait takes the event's latest record), which is
        that slot's last read or a later one on the same stream. It never waits for more in practice: copies are
        issued after the engine's blocking read of the layer, by which time every read recorded before it is done;
        only a layer's later groups (more experts than slots) copy before that, and they must wait for the latest
        read: the staging of the group before."""
        if not self.is_cuda or not slots:
            return
        self._read_event.record(torch.cuda.current_stream(self.pool.device))
        self._slots_read.update(slots)

    # ---- results ----------------------------------------------------------------------------------------------
    def stall_s(self, num_layers: int) -> list[float]:
        """Seconds each layer waited for its copies (on CUDA this waits for the timed events: not a hot-path call)."""
        for layer, start, end in self._timed:
            end.synchronize()
            self._stall_s[layer] = self._stall_s.get(layer, 0.0) + start.elapsed_time(end) / 1e3
        self._timed.clear()
        return [self._stall_s.get(layer, 0.0) for layer in range(num_layers)]

    def reset_stall(self) -> None:
        """Zero the stall times and the copy, wait and forced-landing counts (e.g. after a warm-up)."""
        self.stall_s(0)  # resolve what is pending, then drop it
        self._stall_s.clear()
        self.copies = self.waits = self.landed_by_force = 0

    def _resolve_finished(self) -> None:
        """Fold the timed waits that are over into the totals (polled: keeps the list short on long generations)."""
        pending = []
        for layer, start, end in self._timed:
            if end.query():
                self._stall_s[layer] = self._stall_s.get(layer, 0.0) + start.elapsed_time(end) / 1e3
            else:
                pending.append((layer, start, end))
        self._timed = pending
