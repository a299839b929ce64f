"""User activity in search: monthly indices `users-activity-YYYY-MM`.

The platform spec keeps user activity in DynamoDB and OpenSearch; the services write the events
to search as they happen. This module plays that part for the local stack and the tests: it
indexes one month of the shop's `user_activity` rows, so that search holds personal data of users
(by `user_id`) that erasure must find and remove in every monthly index.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from lifecycle_pipelines.resources.search.base import SearchBackend
from lifecycle_pipelines.search_sync.bulk import BulkFailure, bulk_with_retry

log = logging.getLogger(__name__)

#: `{service}-{table}` of the `user_activity_search` data type in retention.yaml
ACTIVITY_INDEX_PREFIX = "users-activity"
#: the index pattern erasure matches (RetentionPolicy.subject_search_indices())
ACTIVITY_INDEX_PATTERN = f"{ACTIVITY_INDEX_PREFIX}-*"
#: the keyword field naming the data subject
ACTIVITY_SUBJECT_FIELD = "user_id"
BATCH_SIZE = 5_000

_SELECT = """
SELECT event_id::text AS event_id,
       user_id::text AS user_id,
       session_id,
       event_type,
       product_id,
       host(ip_address) AS ip_address,
       user_agent,
       to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS occurred_at
FROM user_activity
WHERE occurred_at >= %(start)s AND occurred_at < %(end)s
  -- soft-deleted (erased) users are left out from the soft delete on
  AND NOT EXISTS (SELECT 1 FROM users u WHERE u.user_id = user_activity.user_id
                  AND u.deleted_at IS NOT NULL)
ORDER BY event_id
"""


def activity_index_body() -> dict[str, Any]:
    """The index body of a monthly activity index: strict mappings, keyword ids (exact term
    match, which erasure relies on), the user agent as text and the event time as a date."""
    return {
        "mappings": {
            "dynamic": "strict",
            "properties": {
                "event_id": {"type": "keyword"},
                "user_id": {"type": "keyword"},
                "session_id": {"type": "keyword"},
                "event_type": {"type": "keyword"},
                "product_id": {"type": "long"},
                "ip_address": {"type": "keyword"},
                "user_agent": {"type": "text"},
                "occurred_at": {"type": "date"},
            },
        }
    }


def activity_index_name(month: date) -> str:
    """`users-activity-YYYY-MM` of the month containing `month`."""
    return f"{ACTIVITY_INDEX_PREFIX}-{month:%Y-%m}"


def _month_bounds(month: date) -> tuple[datetime, datetime]:
    start = datetime(month.year, month.month, 1, tzinfo=UTC)
    if month.month == 12:
        return start, datetime(month.year + 1, 1, 1, tzinfo=UTC)
    return start, datetime(month.year, month.month + 1, 1, tzinfo=UTC)


def _document(row: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return str(row["event_id"]), {key: value for key, value in row.items() if value is not None}


def index_activity_month(shop: psycopg.Connection[Any], backend: SearchBackend, month: date) -> int:
    """Index the shop's `user_activity` events of the month containing `month` (UTC) into
    `users-activity-YYYY-MM`, created when missing; documents are upserted by event id, so a
    re-run replaces rather than duplicates. Returns the number of events indexed.

    One SELECT read through a server-side cursor, written in batches of BATCH_SIZE with throttled
    documents retried; BulkFailure when the engine refuses any for good.
    """
    index = activity_index_name(month)
    start, end = _month_bounds(month)
    if not backend.index_exists(index):
        backend.create_index(index, activity_index_body())
    written = 0
    with (
        shop.transaction(),
        shop.cursor(name="lifecycle_user_activity_month", row_factory=dict_row) as cursor,
    ):
        cursor.itersize = BATCH_SIZE
        cursor.execute(_SELECT, {"start": start, "end": end})
        while rows := cursor.fetchmany(BATCH_SIZE):
            outcome = bulk_with_retry(
                lambda batch: backend.bulk_upsert(index, batch),
                [_document(row) for row in rows],
                lambda item: item[0],
            )
            if outcome.errors:
                raise BulkFailure(outcome.errors)
            written += outcome.written
    backend.refresh(index)
    log.info("indexed %d activity events into %s", written, index)
    return written
