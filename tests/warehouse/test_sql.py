"""The warehouse SQL text that the engines' behaviour tests cannot see: which rows a MERGE reads."""

from __future__ import annotations

from lifecycle_pipelines.warehouse import sql


def test_a_merge_up_to_the_bound_joins_only_the_target_rows_up_to_it() -> None:
    """Rows above the bound went straight into the target: the MERGE restricts both its source
    and the target side of its join to the bound, so PostgreSQL reads the range of the target
    that can match instead of hashing the whole table."""
    statement = sql.merge_changed(
        "analytics", "fact_orders", ("stage_fact_orders",), "order_id",
        ["order_id", "status", "updated_at"], "updated_at", up_to_key=True,
    )  # fmt: skip
    assert statement.count("%s") == 2
    assert 'WHERE "order_id" <= %s) AS s' in statement
    assert 'ON t."order_id" = s."order_id" AND t."order_id" <= %s ' in statement
    everything = sql.merge_changed(
        "analytics", "fact_orders", ("stage_fact_orders",), "order_id",
        ["order_id", "status", "updated_at"], "updated_at",
    )  # fmt: skip
    assert "%s" not in everything
