"""PostgreSQL: one table's hour streamed into the warehouse while it is extracted.

The batches are encoded as binary COPY tuples and sent by a writer thread (a short queue: the
encoder waits for the COPY rather than run ahead of it) into the target itself
(direct and split tables; for a split one only the rows above the bound, the others are spooled
to a local file and COPYed into the stage after the stream) or into a stage (an UNLOGGED
table of the load's transaction, `sql.create_stage`). The same batches are written to the
staged Parquet by the single worker of a pool (in order, at most a few batches behind), which
then uploads it.
"""

from __future__ import annotations

import tempfile
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from lifecycle_pipelines.warehouse import sql
from lifecycle_pipelines.warehouse.binary_copy import HEADER, TRAILER, BinaryCopyEncoder
from lifecycle_pipelines.warehouse.copy_writer import BoundedQueuedWriter
from lifecycle_pipelines.warehouse.plan import TableHour
from lifecycle_pipelines.warehouse.staging import ParquetStage, closing

PARQUET_QUEUE_BATCHES = 4  # batches waiting for the background Parquet writer
SPOOL_CHUNK_BYTES = 1 << 20  # a split load's spooled rows go to the stage in chunks of this


def stream_table_hour(
    cur: Any,
    item: TableHour,
    batches: Iterator[pa.RecordBatch],
    *,
    schema: str,
    folder: Path,
    pool: ThreadPoolExecutor,
    upload: Callable[[Path], str],
) -> Future[str]:
    """COPY `batches` (the hour's rows of `item`'s table, as the warehouse takes them) into the
    target `schema.<table>` or into the item's stage, by its route; stages are analysed after
    (a new table has no statistics until then, and the MERGE would plan for a guessed size).
    Returns the Parquet's upload, which `pool` runs after the writes: `upload(path)` gives the
    object's URI."""
    plan = item.plan
    order = BinaryCopyEncoder.copy_order(plan.columns)
    columns = [name for name, _ in order]
    into: sql.Relation = (schema, plan.table.name)
    if item.direct is None:
        cur.execute(sql.create_stage(item.stage, plan.columns, "postgres"))
        into = item.stage
    encoder = BinaryCopyEncoder(order)
    parquet = ParquetStage(
        folder / f"{plan.table.name}.parquet", plan.batch_schema(), plan.table.key
    )
    pending: deque[Future[None]] = deque()
    with ExitStack() as stack:
        spool = None
        if item.split and item.direct is not None:
            spool = stack.enter_context(tempfile.TemporaryFile(dir=folder))
            spool.write(HEADER)
            bound = item.direct.key
        with cur.copy(sql.copy_binary(into, columns), writer=BoundedQueuedWriter(cur)) as copy:
            copy.write(HEADER)
            with closing(batches) as stream:
                for batch in stream:
                    pending.append(pool.submit(parquet.write, batch))
                    if spool is None:
                        copy.write(encoder.encode(batch))
                    else:
                        new = pc.greater(batch.column(plan.table.key), bound)
                        copy.write(encoder.encode(batch.filter(new)))
                        spool.write(encoder.encode(batch.filter(pc.invert(new))))
                    while len(pending) > PARQUET_QUEUE_BATCHES or (pending and pending[0].done()):
                        pending.popleft().result()
            copy.write(TRAILER)
        if spool is not None:
            spool.write(TRAILER)
            spool.seek(0)
            cur.execute(sql.create_stage(item.stage, plan.columns, "postgres"))
            with cur.copy(sql.copy_binary(item.stage, columns)) as copy:
                while chunk := spool.read(SPOOL_CHUNK_BYTES):
                    copy.write(chunk)
        if item.has_stage:
            cur.execute(sql.analyze(item.stage))

    def written_and_uploaded() -> str:  # runs after the writes (one worker, in order)
        for write in pending:
            write.result()
        return upload(parquet.close())

    return pool.submit(written_and_uploaded)
