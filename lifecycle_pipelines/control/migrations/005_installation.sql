-- One row naming this control database. A restore keeps it, so the erasure certificates this
-- database issued (stored under its id) can be told from other databases' in a shared bucket,
-- and certificates S3 holds that the database has no record of can be found again.
CREATE TABLE installation (
    installation_id uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    created_at      timestamptz NOT NULL DEFAULT now(),
    single          boolean     NOT NULL DEFAULT true UNIQUE CHECK (single)
);
INSERT INTO installation DEFAULT VALUES;
