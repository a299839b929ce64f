"""The code location: composition only. Capabilities add their assets here as they land."""

import dagster as dg

from lifecycle_pipelines.alerts.sensors import failure_alerts
from lifecycle_pipelines.assets.archive import (
    archive_month_assets,
    archive_restore_requests,
    archive_restore_verification,
    archive_retention_expiry,
)
from lifecycle_pipelines.assets.erasure import (
    erasure_archive_rewrites,
    erasure_hard_delete,
    erasure_ledger_replay,
    erasure_request_job,
    erasure_soft_delete,
)
from lifecycle_pipelines.assets.platform import storage_layout_audit
from lifecycle_pipelines.assets.search_sync import search_products
from lifecycle_pipelines.assets.warehouse import warehouse_hourly
from lifecycle_pipelines.environments import current_environment, resources_for
from lifecycle_pipelines.schedules import storage_layout_audit_daily, storage_layout_audit_job
from lifecycle_pipelines.schedules.archive import (
    archive_jobs_and_schedules,
    archive_restore_quarterly,
    archive_restore_sensor,
    archive_retention_expiry_daily,
    restore_request_job,
    restore_verification_job,
    retention_expiry_job,
)
from lifecycle_pipelines.schedules.erasure import (
    erasure_hard_delete_job,
    erasure_hard_delete_sweep,
    erasure_job,
    erasure_request_sensor,
    erasure_rewrites_daily,
    erasure_rewrites_job,
)
from lifecycle_pipelines.schedules.search_sync import search_products_daily, search_sync_job
from lifecycle_pipelines.schedules.warehouse import warehouse_hourly_schedule, warehouse_job

archive_jobs, archive_schedules, archive_sensors = archive_jobs_and_schedules()

defs = dg.Definitions(
    assets=[
        storage_layout_audit,
        *archive_month_assets(),
        archive_restore_requests,
        archive_restore_verification,
        archive_retention_expiry,
        search_products,
        warehouse_hourly,
        erasure_soft_delete,
        erasure_hard_delete,
        erasure_archive_rewrites,
        erasure_ledger_replay,
    ],
    jobs=[
        storage_layout_audit_job,
        *archive_jobs,
        restore_request_job,
        restore_verification_job,
        retention_expiry_job,
        search_sync_job,
        warehouse_job,
        erasure_job,
        erasure_hard_delete_job,
        erasure_rewrites_job,
        erasure_request_job,
    ],
    schedules=[
        storage_layout_audit_daily,
        *archive_schedules,
        archive_restore_quarterly,
        archive_retention_expiry_daily,
        search_products_daily,
        warehouse_hourly_schedule,
        erasure_hard_delete_sweep,
        erasure_rewrites_daily,
    ],
    sensors=[archive_restore_sensor, *archive_sensors, erasure_request_sensor, failure_alerts],
    resources=resources_for(current_environment()),
)
