"""The index side of the local tantivy engine: analyzers, the tantivy schema made from an
OpenSearch mapping, and the text helpers both the per-document and the column-wise paths use
(folded words, edge n-grams, synonym expansion, ids and dates as fast columns).

A text field's sub-field whose analyzer name contains `ngram` becomes a word-grams field (each
value one folded word, indexed as its 2-15 character prefixes); sub-fields analysed for a
language become fields of that language's stemmer.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import tantivy

TEXT_ANALYZER = "lp_text"
NGRAM_ANALYZER = "lp_edge_ngram"  # indices built before precomputed grams
GRAMS_ANALYZER = "lp_grams"  # indices built before word grams: precomputed grams, whitespace
WORD_GRAMS_ANALYZER = "lp_word_grams"  # each value is one folded word; its 2-15 prefixes
ID_FIELD = "_id"
SOURCE_FIELD = "_source"
# fast columns, not part of the mapping: the id as an integer (when it is one) and every date
# field in microseconds (tantivy's own date columns keep seconds only)
ID_INT_FIELD = "_id__int"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


NGRAM_MIN, NGRAM_MAX = 2, 15
FUZZY_MIN_LENGTH = 4
_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    """Lower-cased, accent-folded words of `text` (the n-gram analyzer's normalisation)."""
    folded = unicodedata.normalize("NFKD", text.lower()).encode("ascii", "ignore").decode()
    return [w for w in _WORD.findall(folded) if len(w) >= NGRAM_MIN]


def micros_field(name: str) -> str:
    """The fast column holding date field `name` in microseconds since the epoch."""
    return f"{name}__micros"


def micros_of(value: Any) -> int | None:
    """Microseconds since the epoch of an ISO-8601 timestamp with an offset (what tantivy
    accepts for a date field), or None."""
    try:
        parsed = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    return (parsed - _EPOCH) // _MICROSECOND


def int_id(doc_id: str) -> int | None:
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
        for word in words(text)
        for size in range(NGRAM_MIN, min(len(word), NGRAM_MAX) + 1)
    )


LANGUAGE_ANALYZERS = ("english", "german", "french", "spanish", "italian", "dutch")


def language_field(name: str, language: str) -> str:
    """The tantivy field holding text field `name` analysed for `language`."""
    return f"{name}__{language}"


def register_analyzers(index: tantivy.Index) -> None:
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
    # values are words already lower-cased and folded (`words`): prefixes of 2-15 characters
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


def schema_from_mapping(properties: Mapping[str, Any]) -> tuple[tantivy.Schema, dict[str, str]]:
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


CONVERTERS: dict[str, Any] = {
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
INTEGER_KINDS = ("integer", "long", "short")
FLOAT_KINDS = ("float", "double", "scaled_float", "half_float")


@dataclass(frozen=True)
class FieldPlan:
    """How one source field becomes tantivy fields."""

    name: str
    kind: str
    convert: Any
    languages: tuple[str, ...]  # language sub-fields taking the same text
    grams: str | None  # the n-gram sub-field
    word_grams: bool  # the n-gram sub-field takes words (else precomputed grams)
    micros: str | None  # the microseconds column of a date field
