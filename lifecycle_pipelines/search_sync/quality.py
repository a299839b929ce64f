"""Great Expectations checks of a sync run: schema and completeness of the documents written,
and reconciliation of the index against the source (count and id+version checksum)."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

from lifecycle_pipelines.checks.gx import CheckOutcome, load_suite, validate
from lifecycle_pipelines.search_sync.sync import SyncReport

SUITE = "search_products"


def sync_batches(report: SyncReport) -> dict[str, pd.DataFrame]:
    """The suite's batches built from a run's report."""
    index = report.index_versions
    batches = {
        "index": pd.DataFrame(
            {
                "doc_id": index.ids if index is not None else [],
                "_version_hash": index.hashes if index is not None else [],
            }
        )
    }
    if report.sampled:
        documents = pd.DataFrame(pa.concat_tables(report.sample).to_pylist())
        batches["documents"] = documents
        batches["schema"] = pd.DataFrame({"signature": list(documents.columns)})
    return batches


def check_sync(report: SyncReport) -> dict[str, CheckOutcome]:
    """Validate a run; schema and completeness are absent when it wrote no documents."""
    suite = load_suite(SUITE)
    batches = sync_batches(report)
    wanted = {k: v for k, v in suite.items() if k != "expectations"}
    wanted["expectations"] = [
        e for e in suite["expectations"] if e.get("meta", {}).get("batch", "rows") in batches
    ]
    source = report.source_versions
    parameters = {
        "source_count": len(source) if source is not None else 0,
        "source_checksum": source.checksum if source is not None else 0,
    }
    return validate(wanted, batches, parameters)
