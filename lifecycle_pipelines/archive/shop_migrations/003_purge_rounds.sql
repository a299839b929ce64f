-- The archive round a partition's purge progress belongs to: a later round (rows left in the
-- month after the purge, archived again) loads its own keys and counts afresh.
ALTER TABLE purge_progress ADD COLUMN round integer NOT NULL DEFAULT 0;
