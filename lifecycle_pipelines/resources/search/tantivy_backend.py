"""The local search backend: tantivy, an embedded inverted-index engine.

It honours the parts of an OpenSearch index body that the sync uses: `mappings.properties` with
text, keyword, numeric, boolean and date fields; text sub-fields whose analyzer name contains
`ngram` become edge n-gram fields for partial matching. Aliases are emulated with a JSON file
replaced atomically. Custom tokenizers are registered again every time an index is opened.

Bulk loads: `bulk_session(index)` keeps one writer open across bulk calls and commits once at
the end (or at `refresh`); `bulk_upsert_table` writes a whole Arrow table with its documents
built column-wise by Arrow kernels (`tantivy_documents.py`); `scan_versions` reads ids and a
date field back from fast columns instead of decoding every stored document. Analyzers and the
schema made from a mapping are in `tantivy_schema.py`.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import re
import shutil
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import tantivy

from lifecycle_pipelines.resources.search.base import (
    BulkItemError,
    BulkResult,
    IndexNotFound,
    SearchHit,
    index_pattern,
)
from lifecycle_pipelines.resources.search.tantivy_documents import table_documents, table_pairs
from lifecycle_pipelines.resources.search.tantivy_schema import (
    CONVERTERS,
    FUZZY_MIN_LENGTH,
    ID_FIELD,
    ID_INT_FIELD,
    LANGUAGE_ANALYZERS,
    NGRAM_MAX,
    SOURCE_FIELD,
    FieldPlan,
    edge_grams,
    expand_query,
    int_id,
    language_field,
    micros_field,
    micros_of,
    ngram_field,
    register_analyzers,
    schema_from_mapping,
    synonym_rules,
    words,
)

SCAN_PAGE = 200_000  # documents per page of `scan_versions`
BUILD_ROWS = 5_000  # rows per column-wise build of `bulk_upsert_table`
_VALID_INDEX = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


@dataclass
class _Session:
    """One writer kept open over several bulk calls (`TantivyBackend.bulk_session`)."""

    writer: Any
    fresh: bool  # the index held no documents when the session began
    high: int | None = None  # the highest integer id written in the session

    def saw(self, number: int | None) -> None:
        """Record an id written one document at a time (ids that are not integers cannot
        collide with the integer ids `appends` checks)."""
        if number is not None and (self.high is None or number > self.high):
            self.high = number

    def appends(self, keys: np.ndarray) -> bool:
        """True when none of the integer ids `keys` can be in the index yet (it was empty when
        the session began, `keys` ascend strictly and all exceed every id written since), so
        an upsert needs no delete first; records them."""
        if len(keys) == 0:
            return True
        ascending = bool(np.all(keys[1:] > keys[:-1]))
        new = self.fresh and ascending and (self.high is None or int(keys[0]) > self.high)
        self.saw(int(keys.max()))
        return new


class TantivyBackend:
    """The search sink on local tantivy indices under `root`."""

    def __init__(self, root: Path, writer_heap_mib: int = 128, writer_threads: int = 1) -> None:
        self.root = root
        self.writer_heap = writer_heap_mib * 1024 * 1024
        # One indexing thread with the whole heap writes a million products in ~5 segments,
        # under tantivy's merge threshold; two threads sharing it write twice as many small
        # segments and then merge them (measured: +4 CPU seconds, +100 MiB, no faster on two
        # cores, where the caller's thread builds documents meanwhile). 0: one per core.
        self.writer_threads = writer_threads
        self._sessions: dict[str, _Session] = {}
        (root / "indices").mkdir(parents=True, exist_ok=True)
        self._aliases = root / "aliases.json"
        self._open: dict[str, tuple[tantivy.Index, dict[str, str]]] = {}
        self._synonyms: dict[str, list[tuple[list[str], list[str]]]] = {}
        self._properties: dict[str, set[str]] = {}

    # -- indices ---------------------------------------------------------------------------
    def _dir(self, index: str) -> Path:
        if not _VALID_INDEX.match(index):
            raise ValueError(f"index: invalid index name {index!r}")
        return self.root / "indices" / index

    def _resolve(self, name: str) -> list[str]:
        if self.index_exists(name):
            return [name]
        targets = self.alias_targets(name)
        if not targets:
            raise IndexNotFound(name)
        return targets

    def _index(self, index: str) -> tuple[tantivy.Index, dict[str, str]]:
        if index not in self._open:
            path = self._dir(index)
            if not (path / "mapping.json").exists():
                raise IndexNotFound(index)
            stored = json.loads((path / "mapping.json").read_text())
            kinds = stored["kinds"]
            self._synonyms[index] = synonym_rules(stored.get("body", {}))
            self._properties[index] = set(
                stored.get("body", {}).get("mappings", {}).get("properties", {})
            )
            opened = tantivy.Index.open(str(path))
            register_analyzers(opened)
            self._open[index] = (opened, kinds)
        return self._open[index]

    def ping(self) -> bool:
        return self.root.is_dir()

    def index_exists(self, index: str) -> bool:
        return (self._dir(index) / "mapping.json").exists()

    def create_index(self, index: str, body: Mapping[str, Any]) -> None:
        path = self._dir(index)
        if self.index_exists(index):
            raise ValueError(f"index: {index!r} already exists")
        properties = body.get("mappings", {}).get("properties", {})
        schema, kinds = schema_from_mapping(properties)
        path.mkdir(parents=True, exist_ok=True)
        created = tantivy.Index(schema, path=str(path))
        register_analyzers(created)
        (path / "mapping.json").write_text(json.dumps({"body": body, "kinds": kinds}))
        self._open[index] = (created, kinds)
        self._synonyms[index] = synonym_rules(body)
        self._properties[index] = set(properties)

    def delete_index(self, index: str) -> None:
        session = self._sessions.pop(index, None)
        if session is not None:
            session.writer.rollback()
        self._open.pop(index, None)
        shutil.rmtree(self._dir(index), ignore_errors=True)

    def list_indices(self, pattern: str) -> list[str]:
        """Index directories matching `pattern` (aliases live in a file, never listed)."""
        matches = index_pattern(pattern)
        return sorted(
            path.name
            for path in (self.root / "indices").iterdir()
            if matches.match(path.name) and (path / "mapping.json").exists()
        )

    # -- aliases ---------------------------------------------------------------------------
    @contextmanager
    def _alias_lock(self) -> Iterator[dict[str, list[str]]]:
        lock_path = self.root / "aliases.lock"
        with lock_path.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            aliases = json.loads(self._aliases.read_text()) if self._aliases.exists() else {}
            yield aliases
            tmp = self._aliases.with_suffix(".tmp")
            tmp.write_text(json.dumps(aliases, sort_keys=True))
            os.replace(tmp, self._aliases)

    def alias_targets(self, alias: str) -> list[str]:
        if not self._aliases.exists():
            return []
        return list(json.loads(self._aliases.read_text()).get(alias, []))

    def swap_alias(self, alias: str, new_index: str) -> None:
        if not self.index_exists(new_index):
            raise IndexNotFound(new_index)
        with self._alias_lock() as aliases:
            aliases[alias] = [new_index]

    # -- writers ---------------------------------------------------------------------------
    @contextmanager
    def bulk_session(self, index: str) -> Iterator[None]:
        """Bulk writes to `index` inside the block share one writer and are committed once,
        when the block ends (also when it raises: what was written stays, as it would with a
        commit per call) or at `refresh(index)`; until then readers see the last commit, as
        with OpenSearch before a refresh. While the block runs no other writer (in this
        process or another) can open `index`."""
        if index in self._sessions:
            raise RuntimeError(f"index: a bulk session on {index!r} is already open")
        opened, _ = self._index(index)
        opened.reload()
        session = _Session(
            opened.writer(self.writer_heap, self.writer_threads),
            fresh=opened.searcher().num_docs == 0,
        )
        self._sessions[index] = session
        try:
            yield
        finally:
            if self._sessions.get(index) is session:
                del self._sessions[index]
                session.writer.commit()
                session.writer.wait_merging_threads()

    @contextmanager
    def _writer(self, index: str) -> Iterator[tuple[Any, _Session | None]]:
        """The open session's writer, or a writer of its own committed when the block ends
        without error."""
        session = self._sessions.get(index)
        if session is not None:
            yield session.writer, session
            return
        opened, _ = self._index(index)
        writer = opened.writer(self.writer_heap, self.writer_threads)
        yield writer, None
        writer.commit()
        writer.wait_merging_threads()

    # -- documents -------------------------------------------------------------------------
    @staticmethod
    def _plan(kinds: dict[str, str]) -> list[FieldPlan]:
        """Per source field: its converter, the language copies, the n-gram field and the
        microseconds column."""
        plan = []
        for name, kind in kinds.items():
            if kind not in CONVERTERS:
                continue
            languages = tuple(
                language_field(name, lang)
                for lang in LANGUAGE_ANALYZERS
                if kind == "text" and language_field(name, lang) in kinds
            )
            grams = ngram_field(name) if kind == "text" and ngram_field(name) in kinds else None
            micros = micros_field(name) if micros_field(name) in kinds else None
            plan.append(
                FieldPlan(
                    name,
                    kind,
                    CONVERTERS[kind],
                    languages,
                    grams,
                    kinds.get(grams or "") == "word_grams",
                    micros,
                )
            )
        return plan

    @staticmethod
    def _document(
        doc_id: str, source: Mapping[str, Any], plan: list[FieldPlan], int_ids: bool
    ) -> str:
        """The tantivy JSON document of one source document (one call into tantivy per doc)."""
        doc: dict[str, Any] = {
            ID_FIELD: doc_id,
            SOURCE_FIELD: base64.b64encode(json.dumps(source, default=str).encode()).decode(),
        }
        number = int_id(doc_id) if int_ids else None
        if number is not None:
            doc[ID_INT_FIELD] = number
        for field in plan:
            value = source.get(field.name)
            if value is None:
                continue
            value = doc[field.name] = field.convert(value)
            for copy in field.languages:
                doc[copy] = value
            if field.grams is not None:
                doc[field.grams] = words(value) if field.word_grams else edge_grams(value)
            if field.micros is not None:
                micros = micros_of(value)
                if micros is not None:
                    doc[field.micros] = micros
        return json.dumps(doc)

    def bulk_upsert(self, index: str, docs: Iterable[tuple[str, Mapping[str, Any]]]) -> BulkResult:
        """Replace documents; like OpenSearch with `dynamic: strict`, a document with a field
        the mapping does not know, or a value of the wrong type, is refused on its own (400)."""
        result = BulkResult()
        with self._writer(index) as (writer, session):
            self._upsert_documents(index, writer, session, docs, result)
        return result

    def _upsert_documents(
        self,
        index: str,
        writer: Any,
        session: _Session | None,
        docs: Iterable[tuple[str, Mapping[str, Any]]],
        result: BulkResult,
    ) -> None:
        """The per-document path: one JSON document built in Python per source document."""
        _, kinds = self._index(index)
        plan = self._plan(kinds)
        int_ids = ID_INT_FIELD in kinds
        known = self._properties.get(index)
        for doc_id, source in docs:
            unknown = sorted(set(source) - known) if known is not None else []
            if unknown:
                result.errors.append(
                    BulkItemError(doc_id, 400, f"strict_dynamic_mapping_exception: {unknown}")
                )
                continue
            try:
                document = self._document(doc_id, source, plan, int_ids)
                writer.delete_documents_by_term(ID_FIELD, doc_id)
                writer.add_json(document)
            except ValueError as err:
                result.errors.append(BulkItemError(doc_id, 400, f"mapper_parsing_exception: {err}"))
                continue
            result.indexed += 1
            if session is not None:
                session.saw(int_id(doc_id))

    def bulk_upsert_table(self, index: str, table: pa.Table, id_column: str) -> BulkResult:
        """`bulk_upsert` of the rows of an Arrow table (id: column `id_column`; source: every
        column) with the same outcome per document, the documents built column-wise with Arrow
        kernels, BUILD_ROWS rows at a time (so the text in flight stays a few megabytes). Rows
        whose column types do not map directly onto the index's field kinds, or that hold values
        only the per-document path handles, take the per-document path."""
        _, kinds = self._index(index)
        known = self._properties.get(index)
        unknown = sorted(set(table.column_names) - known) if known is not None else []
        if unknown:
            reason = f"strict_dynamic_mapping_exception: {unknown}"
            return BulkResult(
                errors=[
                    BulkItemError(str(i), 400, reason) for i in table.column(id_column).to_pylist()
                ]
            )
        plan = self._plan(kinds)
        result = BulkResult()
        with self._writer(index) as (writer, session):
            for start in range(0, table.num_rows, BUILD_ROWS):
                built = table_documents(table.slice(start, BUILD_ROWS), id_column, plan, kinds)
                if built is None:
                    rest = table_pairs(table.slice(start), id_column)
                    self._upsert_documents(index, writer, session, rest, result)
                    break
                keys, documents = built
                replace = session is None or not session.appends(keys)
                for key, document in zip(keys.tolist(), documents.to_pylist(), strict=True):
                    if replace:
                        writer.delete_documents_by_term(ID_FIELD, str(key))
                    try:
                        writer.add_json(document)
                    except ValueError as err:
                        reason = f"mapper_parsing_exception: {err}"
                        result.errors.append(BulkItemError(str(key), 400, reason))
                        continue
                    result.indexed += 1
        return result

    def bulk_delete(self, index: str, doc_ids: Sequence[str]) -> BulkResult:
        with self._writer(index) as (writer, _):
            for doc_id in doc_ids:
                writer.delete_documents_by_term(ID_FIELD, doc_id)
        return BulkResult(deleted=len(doc_ids))

    @staticmethod
    def _matching(opened: tantivy.Index, query: tantivy.Query) -> int:
        """Live documents matching `query` in the last committed state of `opened`."""
        opened.reload()
        result: Any = opened.searcher().search(query, 1, count=True)  # `count` is not in the stub
        return int(result.count or 0)

    def _term_query(
        self, index: str, field: str, value: str
    ) -> tuple[tantivy.Index, tantivy.Query]:
        """The index and a term query on one of its keyword fields (indexed with the `raw`
        tokenizer, so the value matches exactly); a field that is not a keyword field is a
        ValueError, since a term on it would silently match nothing."""
        opened, kinds = self._index(index)
        if field != ID_FIELD and kinds.get(field) != "keyword":
            raise ValueError(f"field: {field!r} is not a keyword field of index {index!r}")
        return opened, tantivy.Query.term_query(opened.schema, field, value)

    def count_term(self, index: str, field: str, value: str) -> int:
        opened, query = self._term_query(index, field, value)
        return self._matching(opened, query)

    def delete_by_term(self, index: str, field: str, value: str) -> int:
        """Delete by term in one commit; the count is the matching documents before minus
        after (0 after, unless another writer added some meanwhile)."""
        opened, query = self._term_query(index, field, value)
        before = self._matching(opened, query)
        if before == 0:
            return 0
        with self._writer(index) as (writer, session):
            writer.delete_documents_by_term(field, value)
            if session is not None:
                writer.commit()
        return max(before - self._matching(opened, query), 0)

    def refresh(self, index: str) -> None:
        """Make every write visible: commits an open bulk session's writes (it stays open)."""
        for name in self._resolve(index):
            session = self._sessions.get(name)
            if session is not None:
                session.writer.commit()
            self._index(name)[0].reload()

    def count(self, index: str) -> int:
        total = 0
        for name in self._resolve(index):
            opened, _ = self._index(name)
            opened.reload()
            total += int(opened.searcher().num_docs)
        return total

    @staticmethod
    def _query(
        opened: tantivy.Index,
        kinds: dict[str, str],
        query: str,
        fields: Sequence[str],
        rules: list[tuple[list[str], list[str]]] | None = None,
    ) -> tantivy.Query:
        """Full-text match on the text fields OR a word-prefix match on their n-gram fields,
        for the query and each of its synonym variants."""
        text_fields = [f for f in fields if f in kinds] + [
            language_field(f, lang)
            for f in fields
            for lang in LANGUAGE_ANALYZERS
            if language_field(f, lang) in kinds
        ]
        clauses = []
        schema = opened.schema
        for variant in expand_query(query, rules or []):
            parsed, _errors = opened.parse_query_lenient(variant, text_fields)
            clauses.append((tantivy.Occur.Should, parsed))
            for name in fields:
                for word in words(variant):
                    if ngram_field(name) in kinds:
                        term = tantivy.Query.term_query(schema, ngram_field(name), word[:NGRAM_MAX])
                        clauses.append((tantivy.Occur.Should, term))
                    if kinds.get(name) == "text" and len(word) >= FUZZY_MIN_LENGTH:
                        # one edit away, as OpenSearch's fuzziness AUTO for words of 3-5+ letters
                        fuzzy = tantivy.Query.fuzzy_term_query(
                            schema, name, word, distance=1, transposition_cost_one=True
                        )
                        clauses.append((tantivy.Occur.Should, fuzzy))
        return tantivy.Query.boolean_query(clauses)

    def search(
        self, index: str, query: str, fields: Sequence[str], size: int = 10
    ) -> list[SearchHit]:
        hits: list[SearchHit] = []
        for name in self._resolve(index):
            opened, kinds = self._index(name)
            opened.reload()
            parsed = self._query(opened, kinds, query, fields, self._synonyms.get(name))
            searcher = opened.searcher()
            for score, address in searcher.search(parsed, size).hits:
                doc = searcher.doc(address)
                source = json.loads(bytes(doc.get_first(SOURCE_FIELD) or b"{}"))
                hits.append(SearchHit(str(doc.get_first(ID_FIELD)), float(score), source))
        hits.sort(key=lambda hit: hit.score, reverse=True)
        return hits[:size]

    # -- templates, policies, scans ------------------------------------------------------------
    def put_index_template(self, name: str, body: Mapping[str, Any]) -> None:
        """Stored for reference (the sync creates indices with an explicit body)."""
        folder = self.root / "templates"
        folder.mkdir(exist_ok=True)
        (folder / f"{name}.json").write_text(json.dumps(body, sort_keys=True))

    def put_lifecycle_policy(self, policy_id: str, body: Mapping[str, Any]) -> None:
        """Stored only: a local engine has no tiers (old indices are dropped by the sync)."""
        folder = self.root / "policies"
        folder.mkdir(exist_ok=True)
        (folder / f"{policy_id}.json").write_text(json.dumps(body, sort_keys=True))

    def scan_versions(self, index: str, field: str) -> tuple[np.ndarray, np.ndarray] | None:
        """(ids, values) of every live document as int64 arrays: the integer `_id` and date
        `field` in microseconds since the epoch, read from fast columns in pages of SCAN_PAGE
        documents in id order (no stored document is decoded). None when an index predates
        those columns or a document lacks them: then `scan_field` is the way."""
        ids: list[np.ndarray] = []
        values: list[np.ndarray] = []
        for name in self._resolve(index):
            opened, kinds = self._index(name)
            if ID_INT_FIELD not in kinds or micros_field(field) not in kinds:
                return None
            opened.reload()
            searcher = opened.searcher()
            expected, seen, after = int(searcher.num_docs), 0, None
            while seen < expected:
                query = (
                    tantivy.Query.all_query()
                    if after is None
                    else tantivy.Query.range_query(
                        opened.schema,
                        ID_INT_FIELD,
                        tantivy.FieldType.Integer,
                        lower_bound=after,
                        include_lower=False,
                    )
                )
                hits = searcher.search(
                    query,
                    SCAN_PAGE,
                    count=False,
                    order_by_field=ID_INT_FIELD,
                    order=tantivy.Order.Asc,
                ).hits
                page = [key for key, _ in hits]
                found = searcher.fast_field_values(micros_field(field), [a for _, a in hits])
                if not hits or None in page or None in found:
                    return None  # a document without the columns
                ids.append(np.asarray(page, dtype=np.int64))
                values.append(np.asarray(found, dtype=np.int64))
                seen += len(hits)
                after = page[-1]
        if not ids:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        return np.concatenate(ids), np.concatenate(values)

    def scan_field(self, index: str, field: str) -> Iterator[tuple[str, Any]]:
        for name in self._resolve(index):
            opened, _ = self._index(name)
            opened.reload()
            searcher = opened.searcher()
            total = int(searcher.num_docs)
            if total == 0:
                continue
            for _score, address in searcher.search(tantivy.Query.all_query(), total).hits:
                doc = searcher.doc(address)
                source = json.loads(bytes(doc.get_first(SOURCE_FIELD) or b"{}"))
                yield str(doc.get_first(ID_FIELD)), source.get(field)
