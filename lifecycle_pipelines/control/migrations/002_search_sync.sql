-- Search sync state: the commit-safe high-water mark per alias, and tombstones (ids that must
-- never come back into an index, e.g. erased subjects' documents), replayed on every rotation.
CREATE TABLE search_sync_state (
    alias        text        PRIMARY KEY,
    index_name   text        NOT NULL,
    high_water   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE search_tombstones (
    alias        text        NOT NULL,
    doc_id       text        NOT NULL,
    reason       text        NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (alias, doc_id)
);
