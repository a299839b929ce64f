"""The subject keys an archive run needs, looked up beside the extraction."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import pyarrow as pa
import pyarrow.compute as pc

from lifecycle_pipelines.archive.crypto import UNATTRIBUTED, SubjectKeyring


class SubjectKeyLookups:
    """The subject keys of the month, looked up (or created) by a thread of their own while
    the extraction goes on: each batch's new subjects are requested as the batch arrives, and
    the encryption of a row group waits only for what it still lacks."""

    def __init__(self, pool: ThreadPoolExecutor | None, keyring: SubjectKeyring | None) -> None:
        self._pool = pool
        self._keyring = keyring
        self._keys: dict[str, bytes | None] = {}
        self._requested: set[str] = set()
        self._pending: list[Future[dict[str, bytes | None]]] = []

    def request(self, column: pa.ChunkedArray) -> None:
        """Start looking up the keys of the subjects in `column` not requested yet."""
        if self._pool is None or self._keyring is None:
            return
        subjects = pc.unique(pc.cast(column, pa.string()).fill_null(UNATTRIBUTED)).to_pylist()
        new = [s for s in subjects if s not in self._requested]
        if new:
            self._requested.update(new)
            self._pending.append(self._pool.submit(self._keyring.keys, new, create=True))

    def known(self) -> dict[str, bytes | None]:
        """Every key requested so far (waits for the lookups still running)."""
        for future in self._pending:
            self._keys.update(future.result())
        self._pending = []
        return self._keys

    def fetch(self, keyring: SubjectKeyring, subjects: list[str]) -> dict[str, bytes | None]:
        """Keys of subjects that were not requested (looked up now, on `keyring`)."""
        found = keyring.keys(subjects, create=True)
        self._keys.update(found)
        return found
