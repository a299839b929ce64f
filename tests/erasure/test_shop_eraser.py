"""The shop's hard delete against rows for the subject written while it runs: a late activity
event is erased by a second transaction, and a conflict that persists fails without the
database's message (which quotes the subject's id)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from lifecycle_pipelines.archive.purge import ensure_source_schema
from lifecycle_pipelines.erasure.shop import CONFLICT_ATTEMPTS, PostgresEraser, ShopEraseConflict
from lifecycle_pipelines.erasure.stores import Subject

# After the addresses are deleted (between the eraser's DELETE of user_activity and its DELETE
# of the user), an activity event for the subject arrives, as from a service writing events
# concurrently: in the first `test.late_events` transactions (a sequence counts them; it is
# not rolled back with them).
_LATE_EVENT = """
CREATE OR REPLACE FUNCTION test_late_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF nextval('test_late_events') <= current_setting('test.late_events')::bigint THEN
    INSERT INTO user_activity (user_id, session_id, event_type, occurred_at)
    VALUES (current_setting('test.subject')::bigint, 'late', 'page_view', now());
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER test_late_event AFTER DELETE ON addresses
  FOR EACH STATEMENT EXECUTE FUNCTION test_late_event();
"""


@pytest.fixture
def late_events(shop: Any) -> Iterator[Any]:
    shop.execute("CREATE SEQUENCE test_late_events")
    shop.execute(_LATE_EVENT)

    def arriving(count: int) -> None:
        shop.execute("SELECT set_config('test.late_events', %s, false)", (str(count),))

    try:
        yield arriving
    finally:
        shop.execute("DROP TRIGGER IF EXISTS test_late_event ON addresses")
        shop.execute("DROP SEQUENCE test_late_events")


def _subject(shop: Any, skip: int) -> str:
    row = shop.execute(
        "SELECT user_id FROM users u WHERE deleted_at IS NULL AND EXISTS"
        " (SELECT 1 FROM addresses a WHERE a.user_id = u.user_id)"
        " ORDER BY user_id DESC OFFSET %s LIMIT 1",
        (skip,),
    ).fetchone()
    shop.execute("SELECT set_config('test.subject', %s, false)", (str(row[0]),))
    return str(row[0])


def test_an_event_written_during_the_erasure_is_erased_by_a_second_transaction(
    shop: Any, late_events: Any
) -> None:
    ensure_source_schema(shop)  # the delete triggers that record tombstones for the warehouse
    subject = _subject(shop, 0)
    late_events(1)
    results = PostgresEraser(shop).erase(Subject(subject, "k" * 64), dry_run=False)
    assert {r.store: r.changed for r in results}["postgres.users"] == 1
    counts = shop.execute(
        "SELECT (SELECT count(*) FROM users WHERE user_id = %(u)s),"
        " (SELECT count(*) FROM user_activity WHERE user_id = %(u)s)",
        {"u": int(subject)},
    ).fetchone()
    assert counts == (0, 0)
    assert shop.execute("SELECT last_value FROM test_late_events").fetchone() == (2,)
    # no tombstone: the warehouse's own eraser removes the subject there, and a tombstone
    # would bring their pseudonymous key back among the warehouse's recorded deletions
    assert shop.execute(
        "SELECT count(*) FROM lifecycle_archive.deletions WHERE table_name = 'users' AND pk = %s",
        (int(subject),),
    ).fetchone() == (0,)


def test_a_conflict_that_persists_fails_without_quoting_the_subject(
    shop: Any, late_events: Any
) -> None:
    subject = _subject(shop, 1)
    late_events(CONFLICT_ATTEMPTS)
    with pytest.raises(ShopEraseConflict) as raised:
        PostgresEraser(shop).erase(Subject(subject, "k" * 64), dry_run=False)
    message = str(raised.value)
    assert message.startswith("postgres.user_activity: ForeignKeyViolation (SQLSTATE 23503)")
    assert subject not in message
    assert raised.value.__suppress_context__  # the driver's error, with its DETAIL, is hidden
    assert shop.execute(
        "SELECT count(*) FROM users WHERE user_id = %s", (int(subject),)
    ).fetchone() == (1,)
