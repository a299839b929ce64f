-- Purge bookkeeping inside the source database (schema lifecycle_archive), so that every purge
-- batch deletes source rows and records its progress in one transaction.

-- The archived rows still to purge: (table, key, version at the snapshot, parent key).
CREATE TABLE purge_keys (
    data_type        text        NOT NULL,
    partition_month  date        NOT NULL,
    table_name       text        NOT NULL,
    pk               bigint      NOT NULL,
    version          timestamptz,
    parent_pk        bigint      NOT NULL,
    PRIMARY KEY (data_type, partition_month, table_name, pk)
);
CREATE INDEX purge_keys_parent_idx ON purge_keys (data_type, partition_month, parent_pk);

-- One row per partition being purged: loaded keys, rows deleted and rows kept so far.
CREATE TABLE purge_progress (
    data_type        text        NOT NULL,
    partition_month  date        NOT NULL,
    keys_loaded_at   timestamptz NOT NULL DEFAULT now(),
    deleted_rows     bigint      NOT NULL DEFAULT 0,
    kept_rows        bigint      NOT NULL DEFAULT 0,
    batches          integer     NOT NULL DEFAULT 0,
    finished_at      timestamptz,
    PRIMARY KEY (data_type, partition_month)
);
