-- Hard delete: holds, the archive rewrite plan, hash-chained certificates, an append-only ledger.

-- A subject whose key is destroyed before any of their rows was archived keeps a tombstone
-- (no key-encryption key, no wrapped key) so that later archive runs never give them a new key.
ALTER TABLE subject_keys ALTER COLUMN kek_id DROP NOT NULL;

ALTER TABLE erasure_requests
    ADD COLUMN soft_deleted_at timestamptz,
    ADD COLUMN hard_deleted_at timestamptz,
    ADD COLUMN hold_reason     text;

-- Legal holds: on a subject, or on one archive object. An active hold (lifted_at IS NULL) that
-- covers a request's subject, or an object listing the subject, defers its hard delete.
CREATE TABLE erasure_holds (
    hold_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subject_id  text,
    bucket      text,
    object_key  text,
    reason      text        NOT NULL CHECK (length(reason) BETWEEN 3 AND 500),
    placed_by   text        NOT NULL,
    placed_at   timestamptz NOT NULL DEFAULT now(),
    lifted_by   text,
    lifted_at   timestamptz,
    CHECK ((subject_id IS NULL) <> (object_key IS NULL)),
    CHECK ((object_key IS NULL) = (bucket IS NULL))
);
CREATE INDEX erasure_holds_active_subject ON erasure_holds (subject_id) WHERE lifted_at IS NULL;

-- The Glacier-aware planner's decision for every archive object listing an erased subject.
CREATE TABLE erasure_rewrites (
    request_id        bigint      NOT NULL REFERENCES erasure_requests (request_id),
    object_id         bigint      NOT NULL REFERENCES archive_objects (object_id),
    subject_id        text        NOT NULL,
    decision          text        NOT NULL
        CHECK (decision IN ('rewrite_now', 'with_next_restore', 'at_expiry')),
    state             text        NOT NULL CHECK (state IN ('pending', 'done', 'expired')),
    planned_at        timestamptz NOT NULL DEFAULT now(),
    done_at           timestamptz,
    rows_rewritten    integer,
    versions_deleted  integer,
    versions_kept     integer,
    PRIMARY KEY (request_id, object_id)
);
CREATE INDEX erasure_rewrites_pending ON erasure_rewrites (object_id) WHERE state = 'pending';

-- One certificate per request, each naming the SHA-256 of the previous one (a hash chain).
CREATE TABLE erasure_certificates (
    sequence          bigint      PRIMARY KEY,
    request_id        bigint      NOT NULL UNIQUE REFERENCES erasure_requests (request_id),
    sha256            text        NOT NULL,
    previous_sha256   text,
    bucket            text        NOT NULL,
    object_key        text        NOT NULL,
    version_id        text,
    retain_until      timestamptz NOT NULL,
    issued_at         timestamptz NOT NULL DEFAULT now()
);

-- The ledger is append-only.
CREATE FUNCTION erasure_ledger_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'lifecycle.erasure_ledger is append-only (% refused)', TG_OP;
END;
$$;
CREATE TRIGGER erasure_ledger_append_only BEFORE UPDATE OR DELETE ON erasure_ledger
    FOR EACH ROW EXECUTE FUNCTION erasure_ledger_append_only();
