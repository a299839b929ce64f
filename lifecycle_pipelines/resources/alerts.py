"""Alerts to an SNS topic (spec 9.3: notification on data quality issues)."""

from __future__ import annotations

import logging

from pydantic import Field

from lifecycle_pipelines.resources.aws import AwsResource

log = logging.getLogger(__name__)


class AlertsResource(AwsResource):
    """Publishes operational alerts to SNS. Messages name assets and partitions, never people."""

    topic_arn: str | None = Field(
        default=None, description="SNS topic ARN for alerts; None logs the alert instead."
    )
    # An alert that cannot be published waits for the alert sensor's next tick: short waits
    # keep a tick well inside the daemon's time limit.
    max_attempts: int = Field(
        default=1, description="Retries of an SNS call after its first attempt (botocore's)."
    )
    connect_timeout_seconds: float = Field(
        default=3.0, description="Seconds to wait for a TCP connection to SNS."
    )
    read_timeout_seconds: float = Field(
        default=5.0, description="Seconds to wait for SNS's response before retrying."
    )

    def notify(self, subject: str, message: str) -> str | None:
        """Publish an alert; returns the SNS message id (None when no topic is configured)."""
        if self.topic_arn is None:
            log.warning("alert (no topic configured): %s", subject)
            return None
        response = self.client("sns").publish(
            TopicArn=self.topic_arn, Subject=subject[:100], Message=message
        )
        return str(response["MessageId"])
