-- Incremental readers (the hourly warehouse load) select order_items changed in an hour by
-- updated_at; without this index every hourly load scans the whole table.
CREATE INDEX IF NOT EXISTS order_items_updated_at_idx ON order_items (updated_at);
