"""The local search backend: tantivy, an embedded inverted-index engine.

It honours the parts of an OpenSearch index body that the sync uses: `mappings.properties` with
text, keyword, numeric, boolean and date fields; text sub-fields whose analyzer name contains
`ngram` become edge n-gram fields for partial matching. Aliases are emulated with a JSON file
replaced atomically. Custom tokenizers are registered again every time an index is opened.
"""

from __future__ import annotations

import base64
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

from lifecycle_pipelines.resources.search.base import (
    BulkItemError,
    BulkResult,
    IndexNotFound,
    SearchHit,
    index_pattern,
)

TEXT_ANALYZER = "lp_text"
NGRAM_ANALYZER = "lp_edge_ngram"  # indices built before precomputed grams
GRAMS_ANALYZER = "lp_grams"
ID_FIELD = "_id"
SOURCE_FIELD = "_source"
_VALID_INDEX = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


NGRAM_MIN, NGRAM_MAX = 2, 15
FUZZY_MIN_LENGTH = 4
_WORD = re.compile(r"\w+")


def _words(text: str) -> list[str]:
    """Lower-cased, accent-folded words of `text` (the n-gram analyzer's normalisation)."""
    folded = unicodedata.normalize("NFKD", text.lower()).encode("ascii", "ignore").decode()
    return [w for w in _WORD.findall(folded) if len(w) >= NGRAM_MIN]


def edge_grams(text: str) -> str:
    """Every word's edge n-grams (2-15 characters), space-separated: what OpenSearch's
    edge_ngram filter emits, built once in Python and indexed with a whitespace tokenizer."""
    return " ".join(
        word[:size]
        for word in _words(text)
        for size in range(NGRAM_MIN, min(len(word), NGRAM_MAX) + 1)
    )


LANGUAGE_ANALYZERS = ("english", "german", "french", "spanish", "italian", "dutch")


def language_field(name: str, language: str) -> str:
    """The tantivy field holding text field `name` analysed for `language`."""
    return f"{name}__{language}"


def _register_analyzers(index: tantivy.Index) -> None:
    for language in LANGUAGE_ANALYZERS:
        analyzer = (
            tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
            .filter(tantivy.Filter.lowercase())
            .filter(tantivy.Filter.ascii_fold())
            .filter(tantivy.Filter.stopword(language))
            .filter(tantivy.Filter.stemmer(language))
            .build()
        )
        index.register_tokenizer(f"lp_{language}", analyzer)
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
    index.register_tokenizer(
        GRAMS_ANALYZER, tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.whitespace()).build()
    )


def synonym_rules(body: Mapping[str, Any]) -> list[tuple[list[str], list[str]]]:
    """(sources, targets) pairs from the synonym filters of an OpenSearch index body; an
    equivalence line `a, b, c` maps every term to all of them."""
    filters = body.get("settings", {}).get("analysis", {}).get("filter", {})
    rules: list[tuple[list[str], list[str]]] = []
    for spec in filters.values():
        if spec.get("type") not in ("synonym", "synonym_graph"):
            continue
        for line in spec.get("synonyms", []):
            if "=>" in line:
                left, right = line.split("=>", 1)
                targets = [t.strip().lower() for t in right.split(",") if t.strip()]
                rules.append(([t.strip().lower() for t in left.split(",") if t.strip()], targets))
            else:
                terms = [t.strip().lower() for t in line.split(",") if t.strip()]
                rules.append((terms, terms))
    return rules


def expand_query(query: str, rules: list[tuple[list[str], list[str]]]) -> list[str]:
    """The query and its synonym variants (OpenSearch applies synonyms at search time; the
    local engine expands the query instead)."""
    lowered = f" {' '.join(_WORD.findall(query.lower()))} "
    variants = [query]
    for sources, targets in rules:
        for source in sources:
            needle = f" {' '.join(_WORD.findall(source))} "
            if needle.strip() and needle in lowered:
                for target in targets:
                    if target != source:
                        variants.append(lowered.replace(needle, f" {target} ").strip())
    return list(dict.fromkeys(variants))


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
                analyzer = str(sub.get("analyzer", ""))
                if "ngram" in analyzer:
                    builder.add_text_field(ngram_field(name), tokenizer_name=GRAMS_ANALYZER)
                    kinds[ngram_field(name)] = "ngram"
                elif analyzer in LANGUAGE_ANALYZERS:
                    field = language_field(name, analyzer)
                    builder.add_text_field(field, tokenizer_name=f"lp_{analyzer}")
                    kinds[field] = "language"
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
        self._synonyms[index] = synonym_rules(body)
        self._properties[index] = set(properties)

    def delete_index(self, index: str) -> None:
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

    # -- documents -------------------------------------------------------------------------
    @staticmethod
    def _plan(kinds: dict[str, str]) -> list[tuple[str, Any, tuple[str, ...], str | None]]:
        """Per source field: its converter, the language copies and the n-gram field."""
        converters: dict[str, Any] = {
            "text": str,
            "keyword": lambda v: [str(x) for x in v] if isinstance(v, list) else str(v),
            "integer": int,
            "long": int,
            "short": int,
            "float": float,
            "double": float,
            "scaled_float": float,
            "half_float": float,
            "boolean": bool,
            "date": str,
        }
        plan = []
        for name, kind in kinds.items():
            if kind not in converters:
                continue
            languages = tuple(
                language_field(name, lang)
                for lang in LANGUAGE_ANALYZERS
                if kind == "text" and language_field(name, lang) in kinds
            )
            grams = ngram_field(name) if kind == "text" and ngram_field(name) in kinds else None
            plan.append((name, converters[kind], languages, grams))
        return plan

    @staticmethod
    def _document(
        doc_id: str,
        source: Mapping[str, Any],
        plan: list[tuple[str, Any, tuple[str, ...], str | None]],
    ) -> str:
        """The tantivy JSON document of one source document (one call into tantivy per doc)."""
        doc: dict[str, Any] = {
            ID_FIELD: doc_id,
            SOURCE_FIELD: base64.b64encode(json.dumps(source, default=str).encode()).decode(),
        }
        for name, convert, languages, grams in plan:
            value = source.get(name)
            if value is None:
                continue
            value = doc[name] = convert(value)
            for field in languages:
                doc[field] = value
            if grams is not None:
                doc[grams] = edge_grams(value)
        return json.dumps(doc)

    def bulk_upsert(self, index: str, docs: Iterable[tuple[str, Mapping[str, Any]]]) -> BulkResult:
        """Replace documents; like OpenSearch with `dynamic: strict`, a document with a field
        the mapping does not know, or a value of the wrong type, is refused on its own (400)."""
        opened, kinds = self._index(index)
        plan = self._plan(kinds)
        known = self._properties.get(index)
        writer = opened.writer(self.writer_heap)
        result = BulkResult()
        for doc_id, source in docs:
            unknown = sorted(set(source) - known) if known is not None else []
            if unknown:
                result.errors.append(
                    BulkItemError(doc_id, 400, f"strict_dynamic_mapping_exception: {unknown}")
                )
                continue
            try:
                document = self._document(doc_id, source, plan)
                writer.delete_documents_by_term(ID_FIELD, doc_id)
                writer.add_json(document)
            except ValueError as err:
                result.errors.append(BulkItemError(doc_id, 400, f"mapper_parsing_exception: {err}"))
                continue
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
        writer = opened.writer(self.writer_heap)
        writer.delete_documents_by_term(field, value)
        writer.commit()
        writer.wait_merging_threads()
        return max(before - self._matching(opened, query), 0)

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
                for word in _words(variant):
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
