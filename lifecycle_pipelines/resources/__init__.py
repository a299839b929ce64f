"""One ConfigurableResource per external system. A library: no Definitions here."""

from lifecycle_pipelines.resources.alerts import AlertsResource
from lifecycle_pipelines.resources.aws import AwsResource, SecretsManagerResource
from lifecycle_pipelines.resources.dynamodb import DynamoDBResource
from lifecycle_pipelines.resources.postgres import PostgresResource
from lifecycle_pipelines.resources.s3 import S3Resource
from lifecycle_pipelines.resources.search import SearchResource
from lifecycle_pipelines.resources.warehouse import WarehouseResource

__all__ = [
    "AlertsResource",
    "AwsResource",
    "DynamoDBResource",
    "PostgresResource",
    "S3Resource",
    "SearchResource",
    "SecretsManagerResource",
    "WarehouseResource",
]
