"""Bulk writes that never lose a document silently: items refused with 429 (or 5xx) are retried
with exponential backoff; any other per-document error is collected and reported."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from opensearchpy.exceptions import TransportError

from lifecycle_pipelines.resources.search.base import BulkItemError, BulkResult

log = logging.getLogger(__name__)


class BulkFailure(RuntimeError):
    """Documents the engine refused for good; the message lists ids and reasons."""

    def __init__(self, errors: list[BulkItemError]) -> None:
        shown = "; ".join(f"{e.doc_id}: {e.status} {e.reason}" for e in errors[:10])
        more = f" (+{len(errors) - 10} more)" if len(errors) > 10 else ""
        super().__init__(f"{len(errors)} documents refused by the search engine: {shown}{more}")
        self.errors = errors


def _retryable(error: BulkItemError) -> bool:
    return error.status == 429 or error.status >= 500


def _status_of(exc: TransportError) -> int | None:
    status = exc.status_code
    return status if isinstance(status, int) else None


@dataclass
class BulkOutcome:
    """Totals of a bulk write after retries."""

    written: int = 0
    retries: int = 0
    errors: list[BulkItemError] = field(default_factory=list)


def bulk_with_retry(
    call: Callable[[Sequence[Any]], BulkResult],
    items: Sequence[Any],
    item_id: Callable[[Any], str],
    *,
    max_retries: int = 5,
    base_delay: float = 0.5,
    sleep: Callable[[float], None] = time.sleep,
) -> BulkOutcome:
    """Write `items` with `call`, retrying throttled items; errors left are in the outcome."""
    outcome = BulkOutcome()
    pending = list(items)
    for attempt in range(max_retries + 1):
        if not pending:
            break
        try:
            result = call(pending)
        except TransportError as exc:  # the whole request throttled or failed
            status = _status_of(exc)
            if status is None or not (status == 429 or status >= 500) or attempt == max_retries:
                raise
            outcome.retries += 1
            log.warning("bulk request refused with %s; retry %d", status, attempt + 1)
            sleep(base_delay * 2**attempt)
            continue
        outcome.written += result.indexed + result.deleted
        retry_ids = {e.doc_id for e in result.errors if _retryable(e)}
        outcome.errors.extend(e for e in result.errors if not _retryable(e))
        pending = [item for item in pending if item_id(item) in retry_ids] if retry_ids else []
        if pending:
            if attempt == max_retries:
                outcome.errors.extend(e for e in result.errors if _retryable(e))
                break
            outcome.retries += 1
            log.warning("%d documents throttled; retry %d", len(pending), attempt + 1)
            sleep(base_delay * 2**attempt)
    return outcome


def bulk_table_with_retry(
    call: Callable[[pa.Table], BulkResult],
    table: pa.Table,
    id_column: str,
    *,
    max_retries: int = 5,
    base_delay: float = 0.5,
    sleep: Callable[[float], None] = time.sleep,
) -> BulkOutcome:
    """`bulk_with_retry` for the rows of an Arrow table (ids in `id_column`): throttled rows
    are sent again as a smaller table."""
    position = pa.array(range(table.num_rows), type=pa.int64())
    numbered = table.append_column("__position", position)
    keys = pc.cast(table.column(id_column), pa.string()).to_pylist()
    rows = list(range(table.num_rows))

    def send(items: Sequence[int]) -> BulkResult:
        if len(items) == table.num_rows:
            return call(table)
        chosen = pc.is_in(numbered.column("__position"), pa.array(items, type=pa.int64()))
        return call(numbered.filter(chosen).drop_columns(["__position"]))

    return bulk_with_retry(
        send,
        rows,
        lambda row: keys[row],
        max_retries=max_retries,
        base_delay=base_delay,
        sleep=sleep,
    )
