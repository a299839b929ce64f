"""The warehouse group: hourly loads of the star schema."""

from lifecycle_pipelines.assets.warehouse.hourly_asset import WAREHOUSE_PARTITIONS, warehouse_hourly

__all__ = ["WAREHOUSE_PARTITIONS", "warehouse_hourly"]
