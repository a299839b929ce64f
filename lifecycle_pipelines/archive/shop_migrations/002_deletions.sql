-- Tombstones of hard deletes in the shop, so that deletes reach the warehouse (invariant 4):
-- one row per deleted row of the tables the warehouse loads, stamped with the deleting
-- transaction's start (now()), the same clock as updated_at, so the hourly load reads the
-- deletes of an hour with the same commit-safe bounds as its changes.
-- The archive purge sets `lifecycle.purge` for its transactions: archived rows leave the
-- source but stay in the warehouse, so those deletes are not recorded.
CREATE TABLE deletions (
    table_name  text        NOT NULL,
    pk          bigint      NOT NULL,
    deleted_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX deletions_time_idx ON deletions (deleted_at, table_name);

CREATE FUNCTION record_deletion() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF coalesce(current_setting('lifecycle.purge', true), '') <> 'on' THEN
        INSERT INTO lifecycle_archive.deletions (table_name, pk)
        VALUES (TG_TABLE_NAME, (to_jsonb(OLD) ->> TG_ARGV[0])::bigint);
    END IF;
    RETURN OLD;
END
$$;

CREATE TRIGGER lifecycle_record_deletion AFTER DELETE ON public.orders
    FOR EACH ROW EXECUTE FUNCTION lifecycle_archive.record_deletion('order_id');
CREATE TRIGGER lifecycle_record_deletion AFTER DELETE ON public.order_items
    FOR EACH ROW EXECUTE FUNCTION lifecycle_archive.record_deletion('order_item_id');
CREATE TRIGGER lifecycle_record_deletion AFTER DELETE ON public.products
    FOR EACH ROW EXECUTE FUNCTION lifecycle_archive.record_deletion('product_id');
CREATE TRIGGER lifecycle_record_deletion AFTER DELETE ON public.users
    FOR EACH ROW EXECUTE FUNCTION lifecycle_archive.record_deletion('user_id');
