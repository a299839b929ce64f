"""The platform's storage layout from the specification: S3 buckets (spec 6.1) and DynamoDB tables
(spec 4.1.2), as data.

The local bootstrap creates exactly this layout on the moto server, and the `storage_layout_audit`
asset compares a live account against it, so both read the same table.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Transition:
    """Move objects to `storage_class` `days` after creation."""

    days: int
    storage_class: str


@dataclass(frozen=True)
class BucketSpec:
    """One bucket: its purpose, versioning, lifecycle and object-lock settings."""

    purpose: str
    suffix: str
    versioning: bool
    transitions: tuple[Transition, ...] = ()
    expiration_days: int | None = None
    object_lock: bool = False

    def name(self, prefix: str) -> str:
        """The bucket name for an environment's bucket prefix, e.g. `lifecycle-local-archive`."""
        return f"{prefix}-{self.suffix}"

    def lifecycle_rules(self) -> list[dict[str, object]]:
        """The S3 lifecycle rules (PutBucketLifecycleConfiguration shape) for this bucket."""
        if not self.transitions and self.expiration_days is None:
            return []
        rule: dict[str, object] = {
            "ID": f"{self.suffix}-lifecycle",
            "Status": "Enabled",
            "Filter": {"Prefix": ""},
        }
        if self.transitions:
            rule["Transitions"] = [
                {"Days": t.days, "StorageClass": t.storage_class} for t in self.transitions
            ]
        if self.expiration_days is not None:
            rule["Expiration"] = {"Days": self.expiration_days}
        if self.versioning:
            rule["NoncurrentVersionTransitions"] = [
                {"NoncurrentDays": t.days, "StorageClass": t.storage_class}
                for t in self.transitions
            ]
        return [rule]


IA = "STANDARD_IA"
GLACIER = "GLACIER"

BUCKETS: tuple[BucketSpec, ...] = (
    BucketSpec(
        "Product Images", "product-images", True, (Transition(30, IA), Transition(90, GLACIER))
    ),
    BucketSpec(
        "Order Documents", "order-documents", True, (Transition(30, IA), Transition(180, GLACIER))
    ),
    BucketSpec(
        "Application Logs",
        "application-logs",
        False,
        (Transition(14, IA), Transition(30, GLACIER)),
        expiration_days=365,
    ),
    BucketSpec(
        "Database Backups", "database-backups", True, (Transition(7, IA), Transition(30, GLACIER))
    ),
    BucketSpec("Static Assets", "static-assets", False),
    # Not in the spec table; the pipelines' own buckets. The archive bucket is versioned with
    # object lock available (legal holds, erasure certificates); archive objects are written
    # straight into their storage class and expired by the pipeline, not by a lifecycle rule.
    BucketSpec("Data Archive", "archive", True, object_lock=True),
    # Staged Parquet for warehouse loads: short-lived by design.
    BucketSpec("Warehouse Staging", "staging", False, expiration_days=7),
)


def bucket_spec(suffix: str) -> BucketSpec:
    """The bucket spec with this suffix; KeyError names the suffix if there is none."""
    for spec in BUCKETS:
        if spec.suffix == suffix:
            return spec
    raise KeyError(f"no bucket with suffix {suffix!r} in the storage layout")


@dataclass(frozen=True)
class GlobalIndex:
    """A DynamoDB global secondary index (projection ALL)."""

    name: str
    hash_key: str
    range_key: str | None = None


@dataclass(frozen=True)
class TableSpec:
    """One DynamoDB table of spec 4.1.2."""

    name: str
    hash_key: str
    range_key: str | None = None
    indexes: tuple[GlobalIndex, ...] = ()
    ttl_attribute: str | None = None
    attribute_types: dict[str, str] = field(default_factory=dict)

    def table_name(self, suffix: str) -> str:
        """The table name in an environment, e.g. `Sessions` or `Sessions-production`."""
        return f"{self.name}{suffix}"

    def key_attributes(self) -> dict[str, str]:
        """Every attribute used in a key schema, with its DynamoDB type (S unless stated)."""
        names = [self.hash_key, self.range_key]
        for index in self.indexes:
            names += [index.hash_key, index.range_key]
        return {n: self.attribute_types.get(n, "S") for n in names if n is not None}


TABLES: tuple[TableSpec, ...] = (
    TableSpec(
        "Products",
        "productId",
        indexes=(GlobalIndex("category-index", "category"), GlobalIndex("brand-index", "brand")),
    ),
    TableSpec("UserPreferences", "userId"),
    TableSpec(
        "ProductCatalog",
        "catalogId",
        "productId",
        indexes=(
            GlobalIndex("category-index", "category", "createDate"),
            GlobalIndex("date-index", "createDate"),
        ),
    ),
    TableSpec(
        "Sessions",
        "sessionId",
        indexes=(
            GlobalIndex("userId-index", "userId"),
            GlobalIndex("expiryTime-index", "expiryTime"),
        ),
        ttl_attribute="expiryTime",
        attribute_types={"expiryTime": "N"},
    ),
)


def table_spec(name: str) -> TableSpec:
    """The table spec with this base name; KeyError names it if there is none."""
    for spec in TABLES:
        if spec.name == name:
            return spec
    raise KeyError(f"no DynamoDB table {name!r} in the storage layout")
