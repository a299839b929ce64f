"""Binds the erasure interface to an environment's resources: every store's eraser, opened once
per run, in the order the hard delete runs them (archive first: the key is destroyed at once)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg

from lifecycle_pipelines.archive.crypto import SubjectKeyring
from lifecycle_pipelines.archive.eraser import ArchiveEraser, rewrite_pending
from lifecycle_pipelines.erasure import certificate
from lifecycle_pipelines.erasure.recovery import recover_certificates
from lifecycle_pipelines.erasure.replay import ReplayReport, replay_ledger
from lifecycle_pipelines.erasure.requests import ErasureRequest
from lifecycle_pipelines.erasure.shop import DynamoDBEraser, PostgresEraser
from lifecycle_pipelines.erasure.soft_delete import soft_delete_dynamodb, soft_delete_postgres
from lifecycle_pipelines.erasure.stores import Eraser, StoreResult, Subject
from lifecycle_pipelines.policy import RetentionPolicy, load_policy
from lifecycle_pipelines.resources import DynamoDBResource, PostgresResource, S3Resource
from lifecycle_pipelines.resources.search import SearchResource
from lifecycle_pipelines.resources.warehouse import WarehouseResource
from lifecycle_pipelines.search_sync.eraser import SearchEraser
from lifecycle_pipelines.warehouse.eraser import WarehouseEraser

PRODUCT_INDICES = "catalog-products-*"


@dataclass
class ErasureStores:
    """Open connections to every store, and the erasers built on them."""

    control: psycopg.Connection[Any]
    shop: psycopg.Connection[Any]
    warehouse: Any
    s3: S3Resource
    dynamodb: DynamoDBResource
    search: SearchResource
    warehouse_resource: WarehouseResource
    policy: RetentionPolicy
    pseudonym_key: bytes

    def subject(self, request: ErasureRequest) -> Subject:
        """The request's subject with its pseudonym."""
        return Subject.from_user_id(request.subject_id, self.pseudonym_key)

    def erasers(self, request: ErasureRequest) -> list[Eraser]:
        """Every store's eraser, archive first."""
        keyring = SubjectKeyring(self.control, self.s3.client("kms"), self.s3.sse_kms_key_id or "")
        return [
            ArchiveEraser(
                self.control,
                self.s3,
                keyring,
                self.policy,
                request_id=request.request_id,
                today=datetime.now(UTC).date(),
            ),
            PostgresEraser(self.shop),
            DynamoDBEraser(self.dynamodb.table("Sessions"), self.dynamodb.table("UserPreferences")),
            self.search_eraser(),
            WarehouseEraser(
                self.warehouse,
                schema=self.warehouse_resource.schema_name,
                engine=self.warehouse_resource.backend,
            ),
        ]

    def search_eraser(self) -> SearchEraser:
        """The search eraser over every monthly index of the policy's search data types."""
        return SearchEraser(
            self.search.get_backend(),
            self.policy.subject_search_indices(),
            checked_patterns=[PRODUCT_INDICES],
        )

    def soft_delete(
        self,
        request: ErasureRequest,
        *,
        dry_run: bool,
        on_store: Callable[[list[StoreResult]], None] | None = None,
    ) -> list[StoreResult]:
        """The soft delete of a request's subject: PostgreSQL masking, DynamoDB items and
        search documents removed. `on_store` gets each store's results as soon as it is done
        (the ledger records them before the next store runs)."""
        steps: list[Callable[[], list[StoreResult]]] = [
            lambda: soft_delete_postgres(self.shop, request.subject_id, dry_run=dry_run),
            lambda: soft_delete_dynamodb(
                self.dynamodb.table("Sessions"),
                self.dynamodb.table("UserPreferences"),
                request.subject_id,
                dry_run=dry_run,
            ),
            lambda: self.search_eraser().erase(self.subject(request), dry_run=dry_run),
        ]
        results: list[StoreResult] = []
        for step in steps:
            done = step()
            if on_store is not None:
                on_store(done)
            results += done
        return results

    def known_subjects(self) -> list[str]:
        """The user ids the stores know: the shop's users, the subjects with a key and those
        of recorded requests."""
        shop = self.shop.execute("SELECT user_id::text FROM users").fetchall()
        control = self.control.execute(
            "SELECT subject_id FROM lifecycle.subject_keys UNION"
            " SELECT subject_id FROM lifecycle.erasure_requests WHERE subject_id <> ''"
        ).fetchall()
        return sorted({row[0] for row in shop} | {row[0] for row in control})

    def replay(self) -> tuple[ReplayReport, dict[str, int]]:
        """Record again the certificates the control database lost (a restore of it), re-apply
        the ledger, then any archive rewrite now possible."""
        recovered = recover_certificates(
            self.control, self.s3, known_subjects=self.known_subjects,
            pseudonym_key=self.pseudonym_key,
        )  # fmt: skip
        report = replay_ledger(
            self.control,
            subject_of=self.subject,
            hard_erasers=self.erasers,
            soft_delete=lambda request: self.soft_delete(request, dry_run=False),
        )
        report.recovered = recovered
        return report, rewrite_pending(self.control, self.s3)

    def issue_certificate(self, document: dict[str, Any]) -> certificate.Certificate:
        """Store a certificate in the archive bucket under Object Lock and record it."""
        return certificate.issue(self.control, self.s3, int(document["request_id"]), document)


@contextmanager
def open_stores(
    *,
    control_db: PostgresResource,
    shop_db: PostgresResource,
    s3: S3Resource,
    dynamodb: DynamoDBResource,
    search: SearchResource,
    warehouse: WarehouseResource,
) -> Iterator[ErasureStores]:
    """Connections to every store for one run, closed afterwards."""
    with ExitStack() as stack:
        control = stack.enter_context(control_db.connect(autocommit=True))
        shop = stack.enter_context(shop_db.connect(autocommit=True))
        warehouse_conn = warehouse.connect()
        stack.callback(warehouse_conn.close)
        yield ErasureStores(
            control=control,
            shop=shop,
            warehouse=warehouse_conn,
            s3=s3,
            dynamodb=dynamodb,
            search=search,
            warehouse_resource=warehouse,
            policy=load_policy(),
            pseudonym_key=warehouse.pseudonym_key(),
        )
