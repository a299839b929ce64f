"""Soft delete of one data subject, at once after the request (spec 8.3).

- PostgreSQL: the user is marked deleted and their personal fields masked, with their
  addresses, in one transaction (orders keep their shipping snapshot until the hard delete).
- DynamoDB: the subject's Sessions (through `userId-index`) and UserPreferences are deleted.
- Search: the subject's documents are removed from every index (the search eraser).
Each store's result (counts only, never the data) goes to the append-only erasure ledger. A
dry run counts what would change and changes nothing. Running again finds nothing more.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg
from boto3.dynamodb.conditions import Key

from lifecycle_pipelines.erasure.stores import StoreResult

MASK = "[erased]"


def soft_delete_postgres(
    shop: psycopg.Connection[Any], subject_id: str, *, dry_run: bool
) -> list[StoreResult]:
    """Mark the user deleted and mask their personal fields and addresses."""
    user = int(subject_id)
    with shop.transaction(force_rollback=dry_run):
        found_user = shop.execute(
            "SELECT count(*) FROM users WHERE user_id = %s", (user,)
        ).fetchone()
        users = shop.execute(
            "UPDATE users SET deleted_at = coalesce(deleted_at, now()),"
            " email = 'erased+' || user_id || '@invalid.example', full_name = %s, phone = NULL"
            " WHERE user_id = %s AND full_name <> %s",
            (MASK, user, MASK),
        ).rowcount
        found_addresses = shop.execute(
            "SELECT count(*) FROM addresses WHERE user_id = %s", (user,)
        ).fetchone()
        addresses = shop.execute(
            "UPDATE addresses SET recipient = %s, line1 = %s, line2 = NULL, city = %s,"
            " postal_code = '', phone = NULL, deleted_at = coalesce(deleted_at, now())"
            " WHERE user_id = %s AND recipient <> %s",
            (MASK, MASK, MASK, user, MASK),
        ).rowcount
    return [
        StoreResult("postgres.users", int(found_user[0]) if found_user else 0, users),
        StoreResult(
            "postgres.addresses", int(found_addresses[0]) if found_addresses else 0, addresses
        ),
    ]


def soft_delete_dynamodb(
    sessions: Any, preferences: Any, subject_id: str, *, dry_run: bool
) -> list[StoreResult]:
    """Delete the subject's sessions (found through userId-index) and preferences."""
    keys: list[dict[str, Any]] = []
    query: dict[str, Any] = {
        "IndexName": "userId-index",
        "KeyConditionExpression": Key("userId").eq(subject_id),
        "ProjectionExpression": "sessionId",
    }
    while True:
        page = sessions.query(**query)
        keys.extend({"sessionId": item["sessionId"]} for item in page.get("Items", []))
        if "LastEvaluatedKey" not in page:
            break
        query["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    preference = preferences.get_item(Key={"userId": subject_id}).get("Item")
    if not dry_run:
        with sessions.batch_writer() as batch:
            for key in keys:
                batch.delete_item(Key=key)
        if preference is not None:
            preferences.delete_item(Key={"userId": subject_id})
    return [
        StoreResult("dynamodb.Sessions", len(keys), 0 if dry_run else len(keys)),
        StoreResult(
            "dynamodb.UserPreferences",
            int(preference is not None),
            0 if dry_run else int(preference is not None),
        ),
    ]


def record_store(
    control: psycopg.Connection[Any], request_id: int, results: list[StoreResult], *, dry_run: bool
) -> None:
    """Append one store's results to the ledger, as soon as that store is done: a failure in
    a later store must not leave what this one changed unrecorded (a re-run finds nothing
    left to change and would record 0)."""
    with control.transaction():
        for result in results:
            control.execute(
                "INSERT INTO lifecycle.erasure_ledger (request_id, store, action, detail)"
                " VALUES (%s, %s, %s, %s)",
                (
                    request_id,
                    result.store,
                    "soft delete (dry run)" if dry_run else "soft delete",
                    json.dumps(
                        {"found": result.found, "changed": result.changed, "note": result.note}
                    ),
                ),
            )


def mark_soft_deleted(control: psycopg.Connection[Any], request_id: int) -> None:
    """Move a real request to soft_deleted once every store is done."""
    control.execute(
        "UPDATE lifecycle.erasure_requests SET state = 'soft_deleted', updated_at = now(),"
        " soft_deleted_at = now()"
        " WHERE request_id = %s AND state = 'received'",
        (request_id,),
    )
