"""Index naming, the index template (spec 5.3 analyzers, explicit mappings) and the
index-state-management policy (spec 5.2) of the product search indices.

Indices are named `{service}-{entity}-{YYYY-MM}` (e.g. `catalog-products-2026-11`) and read
through the alias `{service}-{entity}`. The template carries:
- a synonym_graph filter from `synonyms.txt` (validated here: a malformed line is an error that
  names the file and the line, raised before any index is touched);
- an edge n-gram analyzer (2-15 characters per word) on product names for partial matching,
  used at index time only, with the standard analyzer at search time;
- English and German analyzers (stemming, stop words) as sub-fields of name and description;
- `dynamic: strict` mappings, so a document with an unexpected field is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

SERVICE = "catalog"
ENTITY = "products"
SYNONYMS_FILE = Path(__file__).with_name("synonyms.txt")
NGRAM_MIN, NGRAM_MAX = 2, 15
LANGUAGES = {"en": "english", "de": "german"}  # sub-field suffix -> built-in analyzer
ISM_POLICY_ID = "lifecycle-monthly-indices"
_TERM = re.compile(r"^[\w][\w \-'&.]*$", re.UNICODE)


class SynonymsError(ValueError):
    """The synonyms file is malformed; the message names the file and the line."""


@dataclass(frozen=True)
class SynonymRule:
    """One rule: equivalent terms, or `sources => targets`."""

    sources: tuple[str, ...]
    targets: tuple[str, ...] | None = None

    def solr(self) -> str:
        left = ", ".join(self.sources)
        return left if self.targets is None else f"{left} => {', '.join(self.targets)}"


def _terms(text: str, path: Path, number: int) -> tuple[str, ...]:
    terms = tuple(t.strip() for t in text.split(","))
    for term in terms:
        if not term or not _TERM.match(term) or term != term.lower():
            raise SynonymsError(
                f"{path.name}: line {number}: {term!r} is not a lower-case term "
                "(words, spaces, hyphens)"
            )
    return terms


def load_synonyms(path: Path | None = None) -> list[SynonymRule]:
    """Parse a Solr-format synonyms file (default `synonyms.txt` beside this module);
    SynonymsError names the first bad line."""
    path = path or SYNONYMS_FILE
    rules: list[SynonymRule] = []
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.count("=>") > 1:
            raise SynonymsError(f"{path.name}: line {number}: more than one '=>'")
        if "=>" in line:
            left, right = line.split("=>")
            rules.append(SynonymRule(_terms(left, path, number), _terms(right, path, number)))
            continue
        terms = _terms(line, path, number)
        if len(terms) < 2:
            raise SynonymsError(f"{path.name}: line {number}: a rule needs at least two terms")
        rules.append(SynonymRule(terms))
    return rules


def index_name(month: date, service: str = SERVICE, entity: str = ENTITY) -> str:
    """`{service}-{entity}-{YYYY-MM}` for the month of `month`."""
    return f"{service}-{entity}-{month:%Y-%m}"


def alias_name(service: str = SERVICE, entity: str = ENTITY) -> str:
    """The read alias `{service}-{entity}`."""
    return f"{service}-{entity}"


def _text_field(partial_matching: bool) -> dict[str, Any]:
    """A text field with language sub-fields, and an n-gram sub-field when partial matching is
    wanted (names: yes; long descriptions: no, their grams would dominate the index)."""
    fields: dict[str, Any] = {
        code: {"type": "text", "analyzer": lang} for code, lang in LANGUAGES.items()
    }
    if partial_matching:
        fields["ngram"] = {
            "type": "text",
            "analyzer": "product_ngram",
            "search_analyzer": "standard",
        }
    return {
        "type": "text",
        "analyzer": "product_text",
        "search_analyzer": "product_search",
        "fields": fields,
    }


def mappings() -> dict[str, Any]:
    """Explicit, strict mappings of a product document."""
    return {
        "dynamic": "strict",
        "properties": {
            "product_id": {"type": "long"},
            "sku": {"type": "keyword"},
            "name": _text_field(partial_matching=True),
            "description": _text_field(partial_matching=False),
            "brand": {"type": "keyword"},
            "category": {"type": "keyword"},
            "price": {"type": "scaled_float", "scaling_factor": 100},
            "currency": {"type": "keyword"},
            "in_stock": {"type": "boolean"},
            "available_quantity": {"type": "integer"},
            "is_active": {"type": "boolean"},
            "updated_at": {"type": "date"},
        },
    }


def settings(rules: list[SynonymRule]) -> dict[str, Any]:
    """Index settings: the analyzers of spec 5.3."""
    return {
        "number_of_shards": 1,
        "number_of_replicas": 1,
        "analysis": {
            "filter": {
                "product_synonyms": {
                    "type": "synonym_graph",
                    "synonyms": [rule.solr() for rule in rules],
                },
                "product_edge_ngram": {
                    "type": "edge_ngram",
                    "min_gram": NGRAM_MIN,
                    "max_gram": NGRAM_MAX,
                },
            },
            "analyzer": {
                "product_text": {
                    "type": "custom",
                    "tokenizer": "standard",
                    "filter": ["lowercase", "asciifolding"],
                },
                "product_search": {
                    "type": "custom",
                    "tokenizer": "standard",
                    "filter": ["lowercase", "asciifolding", "product_synonyms"],
                },
                "product_ngram": {
                    "type": "custom",
                    "tokenizer": "standard",
                    "filter": ["lowercase", "asciifolding", "product_edge_ngram"],
                },
            },
        },
    }


def index_template(rules: list[SynonymRule]) -> dict[str, Any]:
    """The composable index template for `{service}-{entity}-*`, attaching the ISM policy."""
    template_settings = settings(rules)
    template_settings["plugins.index_state_management.policy_id"] = ISM_POLICY_ID
    return {
        "index_patterns": [f"{alias_name()}-*"],
        "priority": 100,
        "template": {"settings": template_settings, "mappings": mappings()},
        "_meta": {"managed_by": "lifecycle_pipelines"},
    }


def index_body(rules: list[SynonymRule]) -> dict[str, Any]:
    """The body to create one monthly index explicitly (the template's settings and mappings)."""
    return {"settings": settings(rules), "mappings": mappings()}


def ism_policy() -> dict[str, Any]:
    """Hot 30 days, warm 31-90, cold 91-365, delete after 365 (spec 5.2)."""
    return {
        "policy": {
            "description": "Monthly product indices: hot 30d, warm to 90d, cold to 365d, then delete",
            "default_state": "hot",
            "states": [
                {
                    "name": "hot",
                    "actions": [],
                    "transitions": [{"state_name": "warm", "conditions": {"min_index_age": "30d"}}],
                },
                {
                    "name": "warm",
                    "actions": [{"warm_migration": {}}],
                    "transitions": [{"state_name": "cold", "conditions": {"min_index_age": "90d"}}],
                },
                {
                    "name": "cold",
                    "actions": [{"cold_migration": {"timestamp_field": "updated_at"}}],
                    "transitions": [
                        {"state_name": "delete", "conditions": {"min_index_age": "365d"}}
                    ],
                },
                {"name": "delete", "actions": [{"cold_delete": {}}], "transitions": []},
            ],
            "ism_template": [{"index_patterns": [f"{alias_name()}-*"], "priority": 100}],
        }
    }
