"""The code location: composition only. Capabilities add their assets here as they land."""

import dagster as dg

from lifecycle_pipelines.assets.platform import storage_layout_audit
from lifecycle_pipelines.environments import current_environment, resources_for
from lifecycle_pipelines.schedules import storage_layout_audit_daily, storage_layout_audit_job

defs = dg.Definitions(
    assets=[storage_layout_audit],
    jobs=[storage_layout_audit_job],
    schedules=[storage_layout_audit_daily],
    resources=resources_for(current_environment()),
)
