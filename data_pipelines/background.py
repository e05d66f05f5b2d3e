"""A writer thread: turns recorded batches into Arrow records while the next forward runs.

    with ShardWriter(folder, features, fingerprint) as shards, BackgroundWriter(shards) as writer:
        for ids_BS in batches:
            writer.submit(recorder.record(ids_BS, first_id))   # returns at once; the thread writes it

The forward's thread never waits on Arrow, the disk or column bookkeeping; it waits only when every host
buffer of the recorder is still queued here (the recorder's buffer pool is the bound on memory in flight).
An error on the thread is raised in the caller's thread at the next `submit` or at `close`; batches after it
are released unwritten, so the forward's thread can never block on a dead writer.
"""

from __future__ import annotations

import queue
import threading

from data_pipelines.recorder import PendingBatch
from data_pipelines.writer import CloseOrAbort, ShardWriter

_STOP = object()


class BackgroundWriter(CloseOrAbort):
    def __init__(self, shards: ShardWriter):
        self.shards = shards
        self._queue: queue.Queue = queue.Queue()  # bounded by the recorder's buffers, not here
        self._error: BaseException | None = None
        self._skip = False
        self._thread = threading.Thread(target=self._run, name="harvest-writer", daemon=True)
        self._thread.start()

    def submit(self, pending: PendingBatch) -> None:
        self._raise_if_failed()
        self._queue.put(pending)

    def _run(self) -> None:
        while (item := self._queue.get()) is not _STOP:
            try:
                if self._error is None and not self._skip:
                    self.shards.write(item.columns())
            except BaseException as err:  # handed to the caller's thread
                self._error = err
            finally:
                item.release()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        """Write what is queued, stop the thread, raise its error if it had one."""
        self._queue.put(_STOP)
        self._thread.join()
        self._raise_if_failed()

    def abort(self) -> None:
        """Stop without writing what is still queued (the harvest failed)."""
        self._skip = True
        self._queue.put(_STOP)
        self._thread.join()
