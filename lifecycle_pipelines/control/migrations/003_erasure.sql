-- Erasure requests (GDPR, spec 8.3) and the append-only ledger of erasure actions.
CREATE TABLE erasure_requests (
    request_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subject_id     text        NOT NULL,
    requested_by   text        NOT NULL,
    dry_run        boolean     NOT NULL DEFAULT false,
    state          text        NOT NULL
        CHECK (state IN ('received', 'soft_deleted', 'hard_deleted', 'no_data_found', 'held')),
    received_at    timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    merged_into    bigint REFERENCES erasure_requests (request_id)
);
-- At most one open (not merged, not finished) real request per subject.
CREATE UNIQUE INDEX erasure_requests_open_subject ON erasure_requests (subject_id)
    WHERE merged_into IS NULL AND NOT dry_run AND state IN ('received', 'soft_deleted', 'held');

CREATE TABLE erasure_ledger (
    entry_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_id   bigint      NOT NULL REFERENCES erasure_requests (request_id),
    store        text        NOT NULL,
    action       text        NOT NULL,
    detail       jsonb       NOT NULL DEFAULT '{}',
    recorded_at  timestamptz NOT NULL DEFAULT now()
);
