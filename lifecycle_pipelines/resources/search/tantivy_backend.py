"""The local search backend: tantivy, an embedded inverted-index engine.

It honours the parts of an OpenSearch index body that the sync uses: `mappings.properties` with
text, keyword, numeric, boolean and date fields; text sub-fields whose analyzer name contains
`ngram` become edge n-gram fields for partial matching. Aliases are emulated with a JSON file
replaced atomically. Custom tokenizers are registered again every time an index is opened.

Bulk loads: `bulk_session(index)` keeps one writer open across bulk calls and commits once at
the end (or at `refresh`); `bulk_upsert_table` writes a whole Arrow table with its documents
built column-wise by Arrow kernels; `scan_versions` reads ids and a date field back from fast
columns instead of decoding every stored document.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import json
import os
import re
import shutil
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
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
GRAMS_ANALYZER = "lp_grams"  # indices built before word grams: precomputed grams, whitespace
WORD_GRAMS_ANALYZER = "lp_word_grams"  # each value is one folded word; its 2-15 prefixes
ID_FIELD = "_id"
SOURCE_FIELD = "_source"
# fast columns, not part of the mapping: the id as an integer (when it is one) and every date
# field in microseconds (tantivy's own date columns keep seconds only)
ID_INT_FIELD = "_id__int"
SCAN_PAGE = 200_000  # documents per page of `scan_versions`
BUILD_ROWS = 5_000  # rows per column-wise build of `bulk_upsert_table`
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_VALID_INDEX = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


NGRAM_MIN, NGRAM_MAX = 2, 15
FUZZY_MIN_LENGTH = 4
_WORD = re.compile(r"\w+")


def _words(text: str) -> list[str]:
    """Lower-cased, accent-folded words of `text` (the n-gram analyzer's normalisation)."""
    folded = unicodedata.normalize("NFKD", text.lower()).encode("ascii", "ignore").decode()
    return [w for w in _WORD.findall(folded) if len(w) >= NGRAM_MIN]


def micros_field(name: str) -> str:
    """The fast column holding date field `name` in microseconds since the epoch."""
    return f"{name}__micros"


def _micros(value: Any) -> int | None:
    """Microseconds since the epoch of an ISO-8601 timestamp with an offset (what tantivy
    accepts for a date field), or None."""
    try:
        parsed = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    return (parsed - _EPOCH) // _MICROSECOND


def _int_id(doc_id: str) -> int | None:
    """The document id as a 64-bit integer when it is one written canonically ("42", "-7";
    not "042", "+7" or "4_2"), as `str` writes the integer ids of a table."""
    try:
        number = int(doc_id)
    except ValueError:
        return None
    return number if str(number) == doc_id and -(2**63) <= number < 2**63 else None


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
    # values are words already lower-cased and folded (`_words`): prefixes of 2-15 characters
    word_grams = tantivy.Tokenizer.ngram(NGRAM_MIN, NGRAM_MAX, prefix_only=True)
    index.register_tokenizer(WORD_GRAMS_ANALYZER, tantivy.TextAnalyzerBuilder(word_grams).build())


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
    builder.add_integer_field(ID_INT_FIELD, fast=True)
    kinds: dict[str, str] = {ID_INT_FIELD: "id_int"}
    for name, spec in properties.items():
        kind = str(spec.get("type", "object"))
        if kind == "text":
            builder.add_text_field(name, tokenizer_name=TEXT_ANALYZER)
            for sub in (spec.get("fields") or {}).values():
                analyzer = str(sub.get("analyzer", ""))
                if "ngram" in analyzer:
                    # only ever searched by term: no positions
                    builder.add_text_field(
                        ngram_field(name), tokenizer_name=WORD_GRAMS_ANALYZER, index_option="freq"
                    )
                    kinds[ngram_field(name)] = "word_grams"
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
            builder.add_integer_field(micros_field(name), fast=True)
            kinds[micros_field(name)] = "micros"
        else:
            continue
        kinds[name] = kind
    return builder.build(), kinds


_CONVERTERS: dict[str, Any] = {
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
_INTEGER_KINDS = ("integer", "long", "short")
_FLOAT_KINDS = ("float", "double", "scaled_float", "half_float")


@dataclass(frozen=True)
class _FieldPlan:
    """How one source field becomes tantivy fields."""

    name: str
    kind: str
    convert: Any
    languages: tuple[str, ...]  # language sub-fields taking the same text
    grams: str | None  # the n-gram sub-field
    word_grams: bool  # the n-gram sub-field takes words (else precomputed grams)
    micros: str | None  # the microseconds column of a date field


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


def _fits(kind: str, kind_type: pa.DataType) -> bool:
    """Whether an Arrow column of `kind_type` maps onto field `kind` exactly as the
    per-document converters would."""
    text = pa.types.is_string(kind_type) or pa.types.is_large_string(kind_type)
    if kind in ("text", "date"):
        return text
    if kind == "keyword":
        return text or (pa.types.is_list(kind_type) and (pa.types.is_string(kind_type.value_type)))
    if kind in _INTEGER_KINDS:
        return pa.types.is_integer(kind_type)
    if kind in _FLOAT_KINDS:
        return pa.types.is_floating(kind_type) or pa.types.is_integer(kind_type)
    if kind == "boolean":
        return pa.types.is_boolean(kind_type)
    return False


def _join(*parts: Any) -> Any:
    """Values (arrays or constant strings) concatenated row by row, as large strings (a batch
    may exceed 2 GiB of text); null where any is null."""
    large = pa.large_string()
    return pc.binary_join_element_wise(
        *(pa.scalar(p, large) if isinstance(p, str) else p.cast(large) for p in parts),
        pa.scalar("", large),
    )


def _or(values: Any, text: str) -> Any:
    """`values` with nulls replaced by `text`."""
    return values if values.null_count == 0 else pc.fill_null(values, text)


def _join_lists(lists: Any, separator: str) -> Any:
    """The items of each list joined with `separator`."""
    return pc.binary_join(lists, pa.scalar(separator, lists.type.value_type))


def _json_text(column: Any) -> Any:
    """JSON string literals of a string column (nulls stay null); None when a value holds a
    control character other than tab, newline and carriage return."""
    if not pc.any(pc.match_substring_regex(column, '[\\\\"\\x00-\\x1f]')).as_py():
        return _join('"', column, '"')  # nothing to escape (the common case): one pass
    text = pc.replace_substring(column, "\\", "\\\\")
    text = pc.replace_substring(text, '"', '\\"')
    for char, escaped in (("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t")):
        text = pc.replace_substring(text, char, escaped)
    if pc.any(pc.match_substring_regex(text, "[\\x00-\\x1f]")).as_py():
        return None
    return _join('"', text, '"')


def _json_values(column: Any) -> Any:
    """The JSON text of each value of a column as `json.dumps` writes it (nulls stay null);
    None for a type without a column-wise form or a value JSON cannot hold (NaN)."""
    kind = column.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return _json_text(column)
    if pa.types.is_boolean(kind) or pa.types.is_integer(kind):
        return pc.cast(column, pa.string())
    if pa.types.is_floating(kind):
        if not pc.all(pc.is_finite(pc.fill_null(column, 0.0))).as_py():
            return None
        text = pc.cast(pc.cast(column, pa.float64()), pa.string())
        whole = pc.match_substring_regex(text, "^-?[0-9]+$")
        return pc.if_else(whole, _join(text, ".0"), text)  # 45.0, not 45
    if pa.types.is_list(kind) and pa.types.is_string(kind.value_type):
        items = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        flat = _json_text(items.values)
        if flat is None:
            return None
        lists = pa.ListArray.from_arrays(items.offsets, flat, mask=items.is_null())
        return _join("[", _join_lists(lists, ","), "]")
    return None


def _base64(texts: Any) -> pa.LargeStringArray:
    """Base64 of each value, encoded in one call: every value is padded with spaces to a
    multiple of 3 bytes, so the boundaries of the concatenation and of its base64 line up
    (JSON allows trailing spaces)."""
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    texts = texts.cast(pa.large_string())
    lengths = pc.binary_length(texts).to_numpy(zero_copy_only=False)
    padded = _join(texts, pa.array(["", "  ", " "]).take(pa.array(lengths % 3)))
    if isinstance(padded, pa.ChunkedArray):
        padded = padded.combine_chunks()
    _, offsets_buffer, data = padded.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=np.int64)[
        padded.offset : padded.offset + len(padded) + 1
    ]
    encoded = binascii.b2a_base64(
        memoryview(data if data is not None else b"")[offsets[0] : offsets[-1]], newline=False
    )
    starts = (offsets - offsets[0]) // 3 * 4
    return pa.LargeStringArray.from_buffers(
        len(padded), pa.py_buffer(starts.astype(np.int64)), pa.py_buffer(encoded)
    )


def _words_column(texts: Any) -> Any:
    """`_words` column-wise: lower case, NFKD, non-ASCII dropped, split at non-word runs
    (words of one character stay: the n-gram tokenizer makes nothing of them)."""
    if pc.all(pc.string_is_ascii(texts)).as_py() is not False:
        folded = pc.ascii_lower(texts)
    else:
        folded = pc.replace_substring_regex(
            pc.utf8_normalize(pc.utf8_lower(texts), "NFKD"), "[^\\x00-\\x7f]+", ""
        )
    spaced = pc.utf8_trim_whitespace(pc.replace_substring_regex(folded, "[^0-9A-Za-z_]+", " "))
    return pc.split_pattern(spaced, " ")


def _table_documents(
    table: pa.Table, id_column: str, plan: list[_FieldPlan], kinds: Mapping[str, str]
) -> tuple[np.ndarray, pa.LargeStringArray] | None:
    """(ids, tantivy JSON documents) of the rows of `table`, built with Arrow string kernels
    (no Python object per value): the same documents `TantivyBackend._document` writes. None
    when a column's type does not map directly onto its field, a value needs the
    per-document path (a control character, NaN) or the ids are not integers."""
    ids = table.column(id_column)
    if not pa.types.is_integer(ids.type) or ids.null_count:
        return None
    fields = {field.name: field for field in plan}
    id_text = pc.cast(ids, pa.string())
    head: list[Any] = ['{"_id":"', id_text, '"']
    if ID_INT_FIELD in kinds:
        head += [f",{json.dumps(ID_INT_FIELD)}:", id_text]
    source: list[Any] = []
    tail: list[Any] = []
    for name in table.column_names:
        column = table.column(name)
        field = fields.get(name)
        if field is not None and not _fits(field.kind, column.type):
            return None
        if field is not None and field.kind in _FLOAT_KINDS:
            column = pc.cast(column, pa.float64())  # float(value)
        value = _json_values(column)
        if value is None:
            return None
        source += ["," if source else "{", json.dumps(name), ":", _or(value, "null")]
        if field is None:
            continue  # kept in _source only, as on the per-document path
        copies: list[Any] = []
        for target in (name, *field.languages):
            copies += [f",{json.dumps(target)}:", value]
        tail.append(_or(_join(*copies), ""))
        if field.grams is not None:
            if not field.word_grams:
                return None
            words = _join_lists(_words_column(column), '","')
            tail.append(_or(_join(f',{json.dumps(field.grams)}:["', words, '"]'), ""))
        if field.micros is not None:
            try:
                stamps = pc.cast(column, pa.timestamp("us", tz="UTC"))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                return None
            micros = pc.cast(pc.cast(stamps, pa.int64()), pa.string())
            tail.append(_or(_join(f",{json.dumps(field.micros)}:", micros), ""))
    if not source:
        source = ["{"]
    encoded = _base64(_join(*source, "}"))
    documents = _join(*head, f',"{SOURCE_FIELD}":"', encoded, '"', *tail, "}")
    return ids.to_numpy(), documents


def _table_pairs(table: pa.Table, id_column: str) -> list[tuple[str, dict[str, Any]]]:
    return [(str(row[id_column]), row) for row in table.to_pylist()]


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
    def _plan(kinds: dict[str, str]) -> list[_FieldPlan]:
        """Per source field: its converter, the language copies, the n-gram field and the
        microseconds column."""
        plan = []
        for name, kind in kinds.items():
            if kind not in _CONVERTERS:
                continue
            languages = tuple(
                language_field(name, lang)
                for lang in LANGUAGE_ANALYZERS
                if kind == "text" and language_field(name, lang) in kinds
            )
            grams = ngram_field(name) if kind == "text" and ngram_field(name) in kinds else None
            micros = micros_field(name) if micros_field(name) in kinds else None
            plan.append(
                _FieldPlan(
                    name,
                    kind,
                    _CONVERTERS[kind],
                    languages,
                    grams,
                    kinds.get(grams or "") == "word_grams",
                    micros,
                )
            )
        return plan

    @staticmethod
    def _document(
        doc_id: str, source: Mapping[str, Any], plan: list[_FieldPlan], int_ids: bool
    ) -> str:
        """The tantivy JSON document of one source document (one call into tantivy per doc)."""
        doc: dict[str, Any] = {
            ID_FIELD: doc_id,
            SOURCE_FIELD: base64.b64encode(json.dumps(source, default=str).encode()).decode(),
        }
        number = _int_id(doc_id) if int_ids else None
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
                doc[field.grams] = _words(value) if field.word_grams else edge_grams(value)
            if field.micros is not None:
                micros = _micros(value)
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
                session.saw(_int_id(doc_id))

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
                built = _table_documents(table.slice(start, BUILD_ROWS), id_column, plan, kinds)
                if built is None:
                    rest = _table_pairs(table.slice(start), id_column)
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
