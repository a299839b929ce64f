"""`erasure_request_job`: file an erasure request from the Dagster UI (Launchpad config); the
request sensor then creates its partition and launches its soft delete."""

import dagster as dg
from pydantic import Field

from lifecycle_pipelines.control import ensure_control_schema
from lifecycle_pipelines.erasure.requests import ErasureRequestError, submit
from lifecycle_pipelines.resources import PostgresResource


class ErasureRequestConfig(dg.Config):
    """An erasure request as the privacy team files it."""

    user_id: str = Field(description="The shop user id of the data subject.")
    requested_by: str = Field(description="Who asks: an e-mail address or an account name.")
    dry_run: bool = Field(default=False, description="Report the plan and change nothing.")


@dg.op(description="Validate and record an erasure request (duplicates merge into the open one).")
def submit_erasure_request(
    context: dg.OpExecutionContext,
    config: ErasureRequestConfig,
    control_db: PostgresResource,
    shop_db: PostgresResource,
) -> int:
    with control_db.connect(autocommit=True) as control, shop_db.connect(autocommit=True) as shop:
        ensure_control_schema(control)
        try:
            request = submit(
                control, shop, config.user_id, config.requested_by, dry_run=config.dry_run
            )
        except ErasureRequestError as err:
            raise dg.Failure(f"{err}; nothing was recorded") from None
    context.log.info(f"erasure request {request.request_id}: {request.state}")
    context.add_output_metadata(
        {
            "request_id": dg.MetadataValue.int(request.request_id),
            "state": dg.MetadataValue.text(request.state),
            "dry_run": dg.MetadataValue.bool(request.dry_run),
        }
    )
    return request.request_id


@dg.job(description="File an erasure request (GDPR); the request sensor launches its runs.")
def erasure_request_job() -> None:
    submit_erasure_request()
