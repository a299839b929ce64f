"""The platform group: assets about the storage platform itself."""

from lifecycle_pipelines.assets.platform.audit_asset import storage_layout_audit

__all__ = ["storage_layout_audit"]
