"""Amazon DynamoDB tables of spec 4.1.2."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from lifecycle_pipelines.resources.aws import SESSION_LOCK, AwsResource


class DynamoDBResource(AwsResource):
    """DynamoDB tables named `{base name}{table_name_suffix}` (e.g. `Sessions-production`)."""

    table_name_suffix: str = Field(
        default="", description="Suffix of every table name in this environment, e.g. -staging."
    )

    def table_name(self, base_name: str) -> str:
        """The environment's name of a spec table such as `Sessions`."""
        return f"{base_name}{self.table_name_suffix}"

    def table(self, base_name: str) -> Any:
        """A boto3 Table resource for a spec table."""
        kwargs: dict[str, Any] = {}
        if self.endpoint_url:
            kwargs["endpoint_url"] = self.endpoint_url
        session = self.session()
        with SESSION_LOCK:
            service = session.resource("dynamodb", **kwargs)
        return service.Table(self.table_name(base_name))
