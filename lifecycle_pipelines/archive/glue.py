"""The Glue Data Catalog entries that let Athena query the archive (spec 8.2: SQL over Glacier).

One external Parquet table per archived entity (`<service>_<entity>`, e.g. `orders_order_items`)
located at `s3://<archive bucket>/<service>/<entity>/`, partitioned by `year` and `month` strings,
with `read_restored_glacier_objects` so Athena reads GLACIER objects once they are restored.
Registration is idempotent: existing tables and partitions are updated in place.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from typing import Any

import pyarrow as pa

from lifecycle_pipelines.archive.manifest import ObjectEntry
from lifecycle_pipelines.archive.plan import entity_prefix
from lifecycle_pipelines.policy import DataTypePolicy
from lifecycle_pipelines.resources.aws import AwsResource

GLUE_DATABASE = "lifecycle_archive"
PARQUET_SERDE = "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
PARQUET_INPUT = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat"
PARQUET_OUTPUT = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat"


def hive_type(arrow: pa.DataType) -> str:
    """The Athena/Hive column type of an archive column."""
    if pa.types.is_int64(arrow):
        return "bigint"
    if pa.types.is_int32(arrow):
        return "int"
    if pa.types.is_int16(arrow):
        return "smallint"
    if pa.types.is_boolean(arrow):
        return "boolean"
    if pa.types.is_decimal(arrow):
        return f"decimal({arrow.precision},{arrow.scale})"
    if pa.types.is_timestamp(arrow):
        return "timestamp"
    if pa.types.is_date(arrow):
        return "date"
    if pa.types.is_floating(arrow):
        return "double" if arrow.bit_width == 64 else "float"
    if pa.types.is_binary(arrow):
        return "binary"
    return "string"


def table_name(policy: DataTypePolicy, entity: str) -> str:
    return f"{policy.service}_{entity}".replace("-", "_")


def _storage(location: str, schema: pa.Schema) -> dict[str, Any]:
    return {
        "Columns": [{"Name": f.name, "Type": hive_type(f.type)} for f in schema],
        "Location": location,
        "InputFormat": PARQUET_INPUT,
        "OutputFormat": PARQUET_OUTPUT,
        "SerdeInfo": {"SerializationLibrary": PARQUET_SERDE},
        "Compressed": True,
    }


def ensure_table(
    glue: Any, bucket: str, policy: DataTypePolicy, entity: str, schema: pa.Schema
) -> str:
    """Create or update the entity's table; returns its name."""
    name = table_name(policy, entity)
    table_input = {
        "Name": name,
        "TableType": "EXTERNAL_TABLE",
        "Parameters": {
            "classification": "parquet",
            "EXTERNAL": "TRUE",
            "parquet.compression": "ZSTD",
            "read_restored_glacier_objects": "true",
        },
        "PartitionKeys": [{"Name": "year", "Type": "string"}, {"Name": "month", "Type": "string"}],
        "StorageDescriptor": _storage(f"s3://{bucket}/{entity_prefix(policy, entity)}", schema),
    }
    try:
        glue.create_table(DatabaseName=GLUE_DATABASE, TableInput=table_input)
    except glue.exceptions.AlreadyExistsException:
        glue.update_table(DatabaseName=GLUE_DATABASE, TableInput=table_input)
    return name


def register_partition(
    aws: AwsResource,
    data_type: str,
    policy: DataTypePolicy,
    month: date,
    objects: Iterable[ObjectEntry],
    schemas: dict[str, pa.Schema],
) -> list[str]:
    """Register `month` of every entity in `objects`; returns `table/year=/month=` labels."""
    glue = aws.client("glue")
    registered = []
    buckets = {e.table_name: e.bucket for e in objects}
    for entity, bucket in sorted(buckets.items()):
        schema = schemas[entity]
        name = ensure_table(glue, bucket, policy, entity, schema)
        values = [f"{month:%Y}", f"{month:%m}"]
        location = (
            f"s3://{bucket}/{entity_prefix(policy, entity)}year={values[0]}/month={values[1]}/"
        )
        partition_input = {"Values": values, "StorageDescriptor": _storage(location, schema)}
        try:
            glue.create_partition(
                DatabaseName=GLUE_DATABASE, TableName=name, PartitionInput=partition_input
            )
        except glue.exceptions.AlreadyExistsException:
            glue.update_partition(
                DatabaseName=GLUE_DATABASE,
                TableName=name,
                PartitionValueList=values,
                PartitionInput=partition_input,
            )
        registered.append(f"{GLUE_DATABASE}.{name}/year={values[0]}/month={values[1]}")
    return registered
