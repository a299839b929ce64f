"""The local search backend: tantivy, an embedded inverted-index engine.

It honours the parts of an OpenSearch index body that the sync uses: `mappings.properties` with
text, keyword, numeric, boolean and date fields; text sub-fields whose analyzer name contains
`ngram` become edge n-gram fields for partial matching. Aliases are emulated with a JSON file
replaced atomically. Custom tokenizers are registered again every time an index is opened.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import tantivy

from lifecycle_pipelines.resources.search.base import BulkResult, IndexNotFound, SearchHit

TEXT_ANALYZER = "lp_text"
NGRAM_ANALYZER = "lp_edge_ngram"
ID_FIELD = "_id"
SOURCE_FIELD = "_source"
_VALID_INDEX = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


NGRAM_MIN, NGRAM_MAX = 2, 15
_WORD = re.compile(r"\w+")


def _words(text: str) -> list[str]:
    """Lower-cased, accent-folded words of `text` (the n-gram analyzer's normalisation)."""
    folded = unicodedata.normalize("NFKD", text.lower())
    plain = "".join(ch for ch in folded if not unicodedata.combining(ch))
    return [w for w in _WORD.findall(plain) if len(w) >= NGRAM_MIN]


def _register_analyzers(index: tantivy.Index) -> None:
    text = (
        tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
        .filter(tantivy.Filter.lowercase())
        .filter(tantivy.Filter.ascii_fold())
        .filter(tantivy.Filter.stemmer("english"))
        .build()
    )
    ngram = (
        tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.ngram(NGRAM_MIN, NGRAM_MAX, prefix_only=True))
        .filter(tantivy.Filter.lowercase())
        .filter(tantivy.Filter.ascii_fold())
        .build()
    )
    index.register_tokenizer(TEXT_ANALYZER, text)
    index.register_tokenizer(NGRAM_ANALYZER, ngram)


def ngram_field(name: str) -> str:
    """The tantivy field holding the edge n-grams of text field `name`."""
    return f"{name}__ngram"


def _schema_from_mapping(properties: Mapping[str, Any]) -> tuple[tantivy.Schema, dict[str, str]]:
    builder = tantivy.SchemaBuilder()
    builder.add_text_field(ID_FIELD, stored=True, tokenizer_name="raw", fast=True)
    builder.add_bytes_field(SOURCE_FIELD, stored=True)
    kinds: dict[str, str] = {}
    for name, spec in properties.items():
        kind = str(spec.get("type", "object"))
        if kind == "text":
            builder.add_text_field(name, tokenizer_name=TEXT_ANALYZER)
            for sub in (spec.get("fields") or {}).values():
                if "ngram" in str(sub.get("analyzer", "")):
                    builder.add_text_field(ngram_field(name), tokenizer_name=NGRAM_ANALYZER)
                    kinds[ngram_field(name)] = "ngram"
        elif kind == "keyword":
            builder.add_text_field(name, tokenizer_name="raw", fast=True)
        elif kind in ("integer", "long", "short"):
            builder.add_integer_field(name, indexed=True, fast=True)
        elif kind in ("float", "double", "scaled_float", "half_float"):
            builder.add_float_field(name, indexed=True, fast=True)
        elif kind == "boolean":
            builder.add_boolean_field(name, indexed=True, fast=True)
        elif kind == "date":
            builder.add_date_field(name, indexed=True, fast=True)
        else:
            continue
        kinds[name] = kind
    return builder.build(), kinds


class TantivyBackend:
    """The search sink on local tantivy indices under `root`."""

    def __init__(self, root: Path, writer_heap_mib: int = 128) -> None:
        self.root = root
        self.writer_heap = writer_heap_mib * 1024 * 1024
        (root / "indices").mkdir(parents=True, exist_ok=True)
        self._aliases = root / "aliases.json"
        self._open: dict[str, tuple[tantivy.Index, dict[str, str]]] = {}

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
            kinds = json.loads((path / "mapping.json").read_text())["kinds"]
            opened = tantivy.Index.open(str(path))
            _register_analyzers(opened)
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
        schema, kinds = _schema_from_mapping(properties)
        path.mkdir(parents=True, exist_ok=True)
        created = tantivy.Index(schema, path=str(path))
        _register_analyzers(created)
        (path / "mapping.json").write_text(json.dumps({"body": body, "kinds": kinds}))
        self._open[index] = (created, kinds)

    def delete_index(self, index: str) -> None:
        self._open.pop(index, None)
        shutil.rmtree(self._dir(index), ignore_errors=True)

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

    # -- documents -------------------------------------------------------------------------
    def _document(self, doc_id: str, source: Mapping[str, Any], kinds: dict[str, str]) -> Any:
        doc = tantivy.Document()
        doc.add_text(ID_FIELD, doc_id)
        doc.add_bytes(SOURCE_FIELD, json.dumps(source, default=str).encode())
        for name, kind in kinds.items():
            if kind == "ngram":
                continue
            value = source.get(name)
            if value is None:
                continue
            if kind == "text":
                doc.add_text(name, str(value))
                if ngram_field(name) in kinds:
                    # one value per word: tantivy's n-gram tokenizer works on a whole value,
                    # so this gives edge n-grams of every word, as OpenSearch's edge_ngram does
                    for word in _words(str(value)):
                        doc.add_text(ngram_field(name), word)
            elif kind == "keyword":
                for item in value if isinstance(value, list) else [value]:
                    doc.add_text(name, str(item))
            elif kind in ("integer", "long", "short"):
                doc.add_integer(name, int(value))
            elif kind in ("float", "double", "scaled_float", "half_float"):
                doc.add_float(name, float(value))
            elif kind == "boolean":
                doc.add_boolean(name, bool(value))
        return doc

    def bulk_upsert(self, index: str, docs: Iterable[tuple[str, Mapping[str, Any]]]) -> BulkResult:
        opened, kinds = self._index(index)
        writer = opened.writer(self.writer_heap)
        result = BulkResult()
        for doc_id, source in docs:
            writer.delete_documents_by_term(ID_FIELD, doc_id)
            writer.add_document(self._document(doc_id, source, kinds))
            result.indexed += 1
        writer.commit()
        writer.wait_merging_threads()
        return result

    def bulk_delete(self, index: str, doc_ids: Sequence[str]) -> BulkResult:
        opened, _ = self._index(index)
        writer = opened.writer(self.writer_heap)
        for doc_id in doc_ids:
            writer.delete_documents_by_term(ID_FIELD, doc_id)
        writer.commit()
        writer.wait_merging_threads()
        return BulkResult(deleted=len(doc_ids))

    def refresh(self, index: str) -> None:
        for name in self._resolve(index):
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
        opened: tantivy.Index, kinds: dict[str, str], query: str, fields: Sequence[str]
    ) -> tantivy.Query:
        """Full-text match on the text fields OR a word-prefix match on their n-gram fields."""
        text_fields = [f for f in fields if f in kinds]
        parsed, _errors = opened.parse_query_lenient(query, text_fields)
        clauses = [(tantivy.Occur.Should, parsed)]
        schema = opened.schema
        for name in fields:
            if ngram_field(name) not in kinds:
                continue
            for word in _words(query):
                term = tantivy.Query.term_query(schema, ngram_field(name), word[:NGRAM_MAX])
                clauses.append((tantivy.Occur.Should, term))
        return tantivy.Query.boolean_query(clauses)

    def search(
        self, index: str, query: str, fields: Sequence[str], size: int = 10
    ) -> list[SearchHit]:
        hits: list[SearchHit] = []
        for name in self._resolve(index):
            opened, kinds = self._index(name)
            opened.reload()
            parsed = self._query(opened, kinds, query, fields)
            searcher = opened.searcher()
            for score, address in searcher.search(parsed, size).hits:
                doc = searcher.doc(address)
                source = json.loads(bytes(doc.get_first(SOURCE_FIELD) or b"{}"))
                hits.append(SearchHit(str(doc.get_first(ID_FIELD)), float(score), source))
        hits.sort(key=lambda hit: hit.score, reverse=True)
        return hits[:size]
