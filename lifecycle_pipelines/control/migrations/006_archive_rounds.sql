-- Late rounds. Rows of an archived month that are still in the source after its purge (changed
-- after the snapshot, so kept by the purge, or inserted into the month after it) are archived
-- by a later round of the same partition: its objects continue the part numbers, it is written,
-- verified and purged like the first, and earlier rounds' objects are never touched.
ALTER TABLE archive_partitions
    ADD COLUMN round integer NOT NULL DEFAULT 0,
    -- parent rows archived by the rounds before the current one (source_rows is the current
    -- round's): their sum is the month's total
    ADD COLUMN rows_before_round bigint NOT NULL DEFAULT 0;
ALTER TABLE archive_objects ADD COLUMN round integer NOT NULL DEFAULT 0;
