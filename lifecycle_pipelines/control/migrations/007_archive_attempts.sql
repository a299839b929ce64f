-- Every archive attempt of a partition's round, recorded (committed) before it uploads
-- anything: objects in a month's folders that the manifest does not list are an earlier
-- attempt's leftovers only when they are newer than the round's first recorded attempt. Older
-- ones (a control database restored from a backup older than the archive) stop the run.
CREATE TABLE archive_attempts (
    data_type        text        NOT NULL,
    partition_month  date        NOT NULL,
    round            integer     NOT NULL,
    run_id           text,
    started_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX archive_attempts_round ON archive_attempts (data_type, partition_month, round);
