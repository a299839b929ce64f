"""The erasure request sensor: each new request becomes a dynamic partition and a soft-delete
run (run key = request id, so a request is never run twice by the sensor)."""

import dagster as dg

from lifecycle_pipelines.assets.erasure import ERASURE_PARTITIONS
from lifecycle_pipelines.control import ensure_control_schema
from lifecycle_pipelines.resources import PostgresResource

erasure_job = dg.define_asset_job(
    "erasure_soft_delete_job",
    selection=dg.AssetSelection.assets("erasure_soft_delete"),
    partitions_def=ERASURE_PARTITIONS,
    description="Soft delete one erasure request's subject in every store.",
)


@dg.sensor(
    job=erasure_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Turns new erasure requests into partitions and launches their soft delete.",
)
def erasure_request_sensor(
    context: dg.SensorEvaluationContext, control_db: PostgresResource
) -> dg.SensorResult | dg.SkipReason:
    after = int(context.cursor or 0)
    with control_db.connect(autocommit=True) as conn:
        ensure_control_schema(conn)
        rows = conn.execute(
            "SELECT request_id FROM lifecycle.erasure_requests WHERE request_id > %s"
            " ORDER BY request_id LIMIT 100",
            (after,),
        ).fetchall()
    if not rows:
        return dg.SkipReason("no new erasure requests")
    keys = [str(r[0]) for r in rows]
    return dg.SensorResult(
        run_requests=[dg.RunRequest(partition_key=k, run_key=f"erasure-{k}") for k in keys],
        dynamic_partitions_requests=[ERASURE_PARTITIONS.build_add_request(keys)],
        cursor=keys[-1],
    )
