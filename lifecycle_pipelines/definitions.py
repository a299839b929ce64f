"""The code location: composition only. Capabilities add their assets here as they land."""

import dagster as dg

from lifecycle_pipelines.assets.archive import archive_month_assets
from lifecycle_pipelines.assets.platform import storage_layout_audit
from lifecycle_pipelines.environments import current_environment, resources_for
from lifecycle_pipelines.schedules import storage_layout_audit_daily, storage_layout_audit_job
from lifecycle_pipelines.schedules.archive import archive_jobs_and_schedules

archive_jobs, archive_schedules = archive_jobs_and_schedules()

defs = dg.Definitions(
    assets=[storage_layout_audit, *archive_month_assets()],
    jobs=[storage_layout_audit_job, *archive_jobs],
    schedules=[storage_layout_audit_daily, *archive_schedules],
    resources=resources_for(current_environment()),
)
