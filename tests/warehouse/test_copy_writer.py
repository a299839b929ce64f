"""The bounded COPY writer against the local PostgreSQL: data in order across many chunks, a
server error raised without a hang, and a producer held back while the server side is slow."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.copy import LibpqWriter

from lifecycle_pipelines.warehouse import copy_writer
from lifecycle_pipelines.warehouse.copy_writer import BoundedQueuedWriter


@pytest.fixture
def conn(local_stack: Any) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(local_stack[0].app_conninfo("warehouse")) as conn:
        conn.execute("CREATE TEMP TABLE copied (n integer PRIMARY KEY, padding text)")
        yield conn


def _rows(first: int, count: int) -> bytes:
    return "".join(f"{n}\t{'x' * 90}\n" for n in range(first, first + count)).encode()


def test_rows_spanning_many_chunks_arrive_in_order(conn: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr(copy_writer, "CHUNK_BYTES", 1000)  # rows split across chunks
    with conn.cursor() as cur:
        with cur.copy("COPY copied FROM STDIN", writer=BoundedQueuedWriter(cur, 1)) as copy:
            copy.write(_rows(0, 3000))
            copy.write(memoryview(_rows(3000, 2000)))
        assert cur.execute("SELECT count(*), sum(n), min(n), max(n) FROM copied").fetchone() == (
            5000, sum(range(5000)), 0, 4999,
        )  # fmt: skip


def test_a_server_error_is_raised_and_leaves_the_connection_usable(conn: Any) -> None:
    duplicate = _rows(0, 2000) + _rows(1000, 10)  # violates the key at the end
    statement = "COPY copied FROM STDIN"
    with (
        pytest.raises(psycopg.errors.UniqueViolation),
        conn.cursor() as cur,
        cur.copy(statement, writer=BoundedQueuedWriter(cur, 1)) as copy,
    ):
        for _ in range(3):
            copy.write(duplicate)  # after the error the writer drains, never blocks
    conn.rollback()
    assert conn.execute("SELECT 1").fetchone() == (1,)


def test_the_producer_waits_while_the_queue_is_full(conn: Any, monkeypatch: Any) -> None:
    gate, sending = threading.Event(), threading.Event()
    send = LibpqWriter.write

    def held_send(self: Any, data: Any) -> None:
        sending.set()
        gate.wait()
        send(self, data)

    monkeypatch.setattr(LibpqWriter, "write", held_send)
    monkeypatch.setattr(copy_writer, "CHUNK_BYTES", 1000)
    with conn.cursor() as cur:
        with cur.copy("COPY copied FROM STDIN", writer=BoundedQueuedWriter(cur, 2)) as copy:
            produced = threading.Thread(target=copy.write, args=(_rows(0, 200),))
            produced.start()  # 19 chunks; the server side takes one, then holds
            assert sending.wait(10)
            produced.join(0.5)
            held = produced.is_alive()  # blocked: 1 being sent, 2 queued
            gate.set()
            produced.join()
        assert held
        assert cur.execute("SELECT count(*) FROM copied").fetchone() == (200,)
