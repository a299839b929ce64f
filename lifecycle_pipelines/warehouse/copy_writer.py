"""A COPY writer that sends from a thread of its own but keeps only a few megabytes queued.

psycopg's `QueuedLibpqWriter` queues up to 1024 chunks of 128 KiB: a whole hour of encoded rows
fits in it. On a busy machine the warehouse's COPY backend then falls behind the extraction,
and when the extraction ends it is left to work alone through the backlog while the other core
idles (0.8 s of 3.8 s for 1M rows, seen by sampling the machine's CPU). With a short queue the
encoder waits for the COPY instead, the extraction and the psql child wait for the encoder, and
the COPY keeps a core for itself all along: the same 1M-row load took 0.3-0.6 s less in four
alternating runs (bench/warehouse_load).
"""

from __future__ import annotations

import threading
from queue import Queue
from typing import Any

from psycopg.copy import LibpqWriter

CHUNK_BYTES = 128 * 1024  # libpq is given at most this much at a time (psycopg's own limit)
QUEUED_CHUNKS = 64  # 8 MiB in flight: about one encoded batch


class BoundedQueuedWriter(LibpqWriter):
    """`LibpqWriter` whose writes go to the server from a worker thread; `write` blocks while
    `queued_chunks` chunks are waiting, so the producer cannot run ahead of the server."""

    def __init__(self, cursor: Any, queued_chunks: int = QUEUED_CHUNKS) -> None:
        super().__init__(cursor)
        self._queue: Queue[memoryview | None] = Queue(maxsize=queued_chunks)
        self._worker: threading.Thread | None = None
        self._error: BaseException | None = None

    def _send(self) -> None:
        try:
            while (data := self._queue.get()) is not None:
                super().write(data)
        except BaseException as err:  # noqa: BLE001 - re-raised in the producer by write/finish
            self._error = err
            while self._queue.get() is not None:  # drain, or the producer blocks for good
                pass

    def write(self, data: Any) -> None:
        if self._error is not None:
            raise self._error
        if self._worker is None:
            self._worker = threading.Thread(target=self._send, name="copy-writer", daemon=True)
            self._worker.start()
        view = memoryview(data).cast("B")
        for start in range(0, len(view), CHUNK_BYTES):
            self._queue.put(view[start : start + CHUNK_BYTES])

    def finish(self, exc: BaseException | None = None) -> None:
        self._queue.put(None)
        if self._worker is not None:
            self._worker.join()
            self._worker = None
        if self._error is not None:
            raise self._error
        super().finish(exc)
