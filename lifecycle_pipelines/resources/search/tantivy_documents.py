"""Tantivy documents built column-wise from an Arrow table with Arrow string kernels (no Python
object per value): the same JSON documents `TantivyBackend._document` writes one at a time."""

from __future__ import annotations

import binascii
import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lifecycle_pipelines.resources.search.tantivy_schema import (
    FLOAT_KINDS,
    ID_INT_FIELD,
    INTEGER_KINDS,
    SOURCE_FIELD,
    FieldPlan,
)


def _fits(kind: str, kind_type: pa.DataType) -> bool:
    """Whether an Arrow column of `kind_type` maps onto field `kind` exactly as the
    per-document converters would."""
    text = pa.types.is_string(kind_type) or pa.types.is_large_string(kind_type)
    if kind in ("text", "date"):
        return text
    if kind == "keyword":
        return text or (pa.types.is_list(kind_type) and (pa.types.is_string(kind_type.value_type)))
    if kind in INTEGER_KINDS:
        return pa.types.is_integer(kind_type)
    if kind in FLOAT_KINDS:
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


def words_column(texts: Any) -> Any:
    """`words` column-wise: lower case, NFKD, non-ASCII dropped, split at non-word runs
    (words of one character stay: the n-gram tokenizer makes nothing of them)."""
    if pc.all(pc.string_is_ascii(texts)).as_py() is not False:
        folded = pc.ascii_lower(texts)
    else:
        folded = pc.replace_substring_regex(
            pc.utf8_normalize(pc.utf8_lower(texts), "NFKD"), "[^\\x00-\\x7f]+", ""
        )
    spaced = pc.utf8_trim_whitespace(pc.replace_substring_regex(folded, "[^0-9A-Za-z_]+", " "))
    return pc.split_pattern(spaced, " ")


def table_documents(
    table: pa.Table, id_column: str, plan: list[FieldPlan], kinds: Mapping[str, str]
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
        if field is not None and field.kind in FLOAT_KINDS:
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
            words = _join_lists(words_column(column), '","')
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


def table_pairs(table: pa.Table, id_column: str) -> list[tuple[str, dict[str, Any]]]:
    return [(str(row[id_column]), row) for row in table.to_pylist()]
