"""A deterministic generator of synthetic shop data, loaded with COPY.

For a given seed and `as_of` date the generator produces the same users, addresses, catalogue,
inventory, orders (with items), activity events and DynamoDB items, byte for byte. Orders spread
over the `months` before `as_of` with realistic skew: volume grows over time, peaks in November
and December, a few customers place many orders and a few products sell most.

Columns are built as NumPy arrays and written in Arrow batches as CSV into COPY FROM STDIN; no
Python loop touches individual rows. Personal data is fake: names from short lists, emails at
example.com, phone numbers in a reserved-looking range.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from psycopg import sql

from lifecycle_pipelines.local.shop_vocabulary import (
    ADJECTIVES,
    BRANDS,
    CATEGORIES,
    CITIES,
    COUNTRIES,
    EVENT_TYPES,
    EVENT_WEIGHTS,
    FIRST_NAMES,
    LAST_NAMES,
    STREETS,
    USER_AGENTS,
)
from lifecycle_pipelines.resources.postgres import copy_in

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShopSize:
    """How much data to generate, and from which seed and date."""

    users: int = 5_000
    products: int = 1_000
    orders: int = 50_000
    activity_per_order: float = 1.0
    months: int = 36
    seed: int = 20261125
    as_of: date = date(2026, 11, 25)
    dynamodb_items: int = 1_000
    chunk_orders: int = 200_000

    def __post_init__(self) -> None:
        for name in ("users", "products", "orders", "months"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be at least 1, got {getattr(self, name)}")
        if self.activity_per_order < 0:
            raise ValueError("activity_per_order: must not be negative")


@dataclass
class SeedReport:
    """Row counts per table and item counts per DynamoDB table."""

    rows: dict[str, int]


# -- helpers ---------------------------------------------------------------------------------
def _concat(*parts: Any) -> pa.Array:
    """Element-wise string concatenation of arrays and constant strings."""
    args: list[Any] = []
    for part in parts:
        if isinstance(part, str):
            args.append(pa.scalar(part))
        else:
            array = part if isinstance(part, pa.Array | pa.ChunkedArray) else pa.array(part)
            args.append(pc.cast(array, pa.string()))
    return pc.binary_join_element_wise(*args, "")


def _zpad(values: np.ndarray, width: int) -> pa.Array:
    return pc.utf8_lpad(pc.cast(pa.array(values), pa.string()), width, "0")


def _money(cents: np.ndarray) -> pa.Array:
    """Euros from integer cents; exact as decimal text for amounts below 2**53 cents."""
    return pc.divide(pa.array(cents, pa.float64()), 100.0)


def _timestamps(epoch_seconds: np.ndarray) -> pa.Array:
    return pa.array(epoch_seconds.astype("datetime64[s]"), pa.timestamp("s", tz="UTC"))


def _csv_chunks(table: pa.Table, batch_rows: int = 100_000) -> Iterator[bytes]:
    buffer = io.BytesIO()
    pacsv.write_csv(table, buffer, pacsv.WriteOptions(batch_size=batch_rows))
    yield buffer.getvalue()


def _skewed_index(rng: np.random.Generator, n: int, size: int, power: float) -> np.ndarray:
    """Indices in [0, n) where low indices are drawn far more often (power > 1 = more skew)."""
    return np.minimum((rng.random(size) ** power * n).astype(np.int64), n - 1)


class ShopGenerator:
    """Generates the shop's tables as Arrow tables, deterministically for a seed."""

    def __init__(self, size: ShopSize) -> None:
        self.size = size
        self.rng = np.random.default_rng(size.seed)
        end = datetime(size.as_of.year, size.as_of.month, size.as_of.day, tzinfo=UTC)
        months = size.as_of.year * 12 + size.as_of.month - 1 - size.months
        start = datetime(months // 12, months % 12 + 1, 1, tzinfo=UTC)
        self.start_s = int(start.timestamp())
        self.end_s = int(end.timestamp())
        self._users_perm = self.rng.permutation(size.users) + 1
        self._product_prices: np.ndarray | None = None
        self._product_perm = self.rng.permutation(size.products) + 1
        self._user_created: np.ndarray | None = None

    # -- time ----------------------------------------------------------------------------------
    def _event_times(self, count: int) -> np.ndarray:
        """Epoch seconds between start and as_of: growth, a November/December peak, weekdays."""
        days = np.arange(self.start_s, self.end_s, 86_400, dtype=np.int64)
        frac = np.linspace(0.0, 1.0, len(days))
        months = days.astype("datetime64[s]").astype("datetime64[M]").astype(int) % 12 + 1
        weekday = (days // 86_400 + 3) % 7  # 0 = Monday
        weight = (1.0 + 1.5 * frac) * np.where(months >= 11, 1.6, 1.0)
        weight *= np.where(weekday >= 5, 1.2, 1.0)
        chosen = self.rng.choice(len(days), size=count, p=weight / weight.sum())
        seconds = days[chosen] + self.rng.integers(0, 86_400, size=count)
        seconds.sort()
        return seconds

    # -- catalogue -----------------------------------------------------------------------------
    def brands(self) -> pa.Table:
        n = len(BRANDS)
        created = np.full(n, self.start_s, dtype=np.int64)
        return pa.table(
            {
                "brand_id": pa.array(np.arange(1, n + 1)),
                "name": pa.array(BRANDS),
                "created_at": _timestamps(created),
                "updated_at": _timestamps(created),
            }
        )

    def categories(self) -> pa.Table:
        ids: list[int] = []
        parents: list[int | None] = []
        names: list[str] = []
        slugs: list[str] = []
        next_id = 1
        for top, subs in CATEGORIES.items():
            top_id = next_id
            ids.append(top_id)
            parents.append(None)
            names.append(top)
            slugs.append(top.lower())
            next_id += 1
            for sub in subs:
                ids.append(next_id)
                parents.append(top_id)
                names.append(sub)
                slugs.append(f"{top.lower()}-{sub.lower().replace(' ', '-')}")
                next_id += 1
        created = np.full(len(ids), self.start_s, dtype=np.int64)
        return pa.table(
            {
                "category_id": pa.array(ids, pa.int32()),
                "parent_id": pa.array(parents, pa.int32()),
                "name": pa.array(names),
                "slug": pa.array(slugs),
                "created_at": _timestamps(created),
                "updated_at": _timestamps(created),
            }
        )

    def leaf_categories(self) -> tuple[np.ndarray, np.ndarray]:
        """(category ids, names) of the leaf categories products belong to."""
        table = self.categories()
        leaf = pc.is_valid(table["parent_id"])
        return (
            table.filter(leaf)["category_id"].to_numpy(),
            np.array(table.filter(leaf)["name"].to_pylist()),
        )

    def products(self) -> pa.Table:
        n = self.size.products
        rng = self.rng
        leaf_ids, leaf_names = self.leaf_categories()
        category = rng.integers(0, len(leaf_ids), size=n)
        brand = rng.integers(0, len(BRANDS), size=n)
        adjective = ADJECTIVES[rng.integers(0, len(ADJECTIVES), size=n)]
        cents = np.round(np.exp(rng.normal(3.6, 0.9, size=n)) * 100).astype(np.int64) + 99
        self._product_prices = cents
        created = self.start_s + rng.integers(0, (self.end_s - self.start_s) // 2, size=n)
        updated = np.minimum(created + rng.integers(0, 400 * 86_400, size=n), self.end_s - 1)
        deleted = rng.random(n) < 0.02
        ids = np.arange(1, n + 1)
        name = _concat(np.array(BRANDS)[brand], " ", adjective, " ", leaf_names[category])
        return pa.table(
            {
                "product_id": pa.array(ids),
                "sku": _concat("SKU-", _zpad(ids, 7)),
                "name": name,
                "description": _concat("The ", name, " for everyday use."),
                "brand_id": pa.array(brand + 1, pa.int32()),
                "category_id": pa.array(leaf_ids[category], pa.int32()),
                "price": _money(cents),
                "currency": pa.array(np.full(n, "EUR")),
                "is_active": pa.array(~deleted),
                "created_at": _timestamps(created),
                "updated_at": _timestamps(updated),
                "deleted_at": pa.array(
                    np.where(deleted, updated, 0).astype("datetime64[s]"),
                    pa.timestamp("s", tz="UTC"),
                    mask=~deleted,
                ),
            }
        )

    def inventory(self) -> pa.Table:
        n = self.size.products
        quantity = np.where(self.rng.random(n) < 0.05, 0, self.rng.integers(1, 500, size=n))
        return pa.table(
            {
                "product_id": pa.array(np.arange(1, n + 1)),
                "quantity": pa.array(quantity, pa.int32()),
                "reserved": pa.array(np.zeros(n, dtype=np.int32)),
                "warehouse_code": pa.array(np.full(n, "DUB1")),
                "updated_at": _timestamps(np.full(n, self.end_s - 3600, dtype=np.int64)),
            }
        )

    # -- customers -----------------------------------------------------------------------------
    def _order_plan(self) -> tuple[np.ndarray, np.ndarray]:
        """(order times, user ids) for every order, sorted by time."""
        times = self._event_times(self.size.orders)
        users = self._users_perm[_skewed_index(self.rng, self.size.users, self.size.orders, 2.5)]
        return times, users

    def users(self, first_order: np.ndarray) -> pa.Table:
        n = self.size.users
        rng = self.rng
        first = FIRST_NAMES[rng.integers(0, len(FIRST_NAMES), size=n)]
        last = LAST_NAMES[rng.integers(0, len(LAST_NAMES), size=n)]
        ids = np.arange(1, n + 1)
        lead = rng.integers(86_400, 200 * 86_400, size=n)
        created = np.maximum(first_order - lead, self.start_s - 365 * 86_400)
        self._user_created = created
        phone = _concat("+353 87 ", _zpad(rng.integers(0, 10_000_000, size=n), 7))
        return pa.table(
            {
                "user_id": pa.array(ids),
                "email": _concat(
                    pc.utf8_lower(pa.array(first)),
                    ".",
                    pc.utf8_lower(pa.array(last)),
                    pa.array(ids),
                    "@example.com",
                ),
                "full_name": _concat(first, " ", last),
                "phone": phone,
                "locale": pa.array(np.where(rng.random(n) < 0.7, "en-GB", "de-DE")),
                "created_at": _timestamps(created),
                "updated_at": _timestamps(created + rng.integers(0, 86_400, size=n)),
            }
        )

    def addresses(self, users: pa.Table) -> pa.Table:
        rng = self.rng
        n = users.num_rows
        second = rng.random(n) < 0.2
        owner = np.concatenate([np.arange(n), np.flatnonzero(second)])
        city = rng.integers(0, len(CITIES), size=len(owner))
        assert self._user_created is not None, "users() must run first"
        created = self._user_created[owner]
        return pa.table(
            {
                "address_id": pa.array(np.arange(1, len(owner) + 1)),
                "user_id": pa.array(owner + 1),
                "recipient": users["full_name"].take(pa.array(owner)),
                "line1": _concat(
                    pa.array(rng.integers(1, 300, size=len(owner))),
                    " ",
                    STREETS[rng.integers(0, len(STREETS), size=len(owner))],
                ),
                "line2": pa.nulls(len(owner), pa.string()),
                "city": pa.array(CITIES[city]),
                "postal_code": _zpad(rng.integers(0, 99_999, size=len(owner)), 5),
                "country_code": pa.array(COUNTRIES[city]),
                "phone": users["phone"].take(pa.array(owner)),
                "is_default": pa.array(np.arange(len(owner)) < n),
                "created_at": _timestamps(created),
                "updated_at": _timestamps(created),
            }
        )

    # -- orders --------------------------------------------------------------------------------
    def order_chunks(
        self, times: np.ndarray, users: np.ndarray, addresses: pa.Table
    ) -> Iterator[tuple[pa.Table, pa.Table]]:
        """(orders, order_items) in chunks of `chunk_orders` orders."""
        assert self._product_prices is not None, "products() must run first"
        rng = self.rng
        popularity = 1.0 / (np.arange(self.size.products) + 10.0) ** 1.1
        popularity /= popularity.sum()
        default_address = addresses.slice(0, self.size.users)
        next_item = 1
        for begin in range(0, len(times), self.size.chunk_orders):
            t = times[begin : begin + self.size.chunk_orders]
            u = users[begin : begin + self.size.chunk_orders]
            k = len(t)
            order_ids = np.arange(begin + 1, begin + k + 1)
            counts = 1 + np.minimum(rng.poisson(1.4, size=k), 7)
            owner = np.repeat(np.arange(k), counts)
            product_rank = rng.choice(self.size.products, size=len(owner), p=popularity)
            product = self._product_perm[product_rank]
            quantity = 1 + (rng.random(len(owner)) < 0.2) * rng.integers(1, 3, size=len(owner))
            unit = self._product_prices[product - 1]
            line = unit * quantity
            subtotal = np.bincount(owner, weights=line, minlength=k).astype(np.int64)
            shipping = np.where(subtotal >= 5_000, 0, 495)
            tax = np.round(subtotal * 0.2).astype(np.int64)
            age_days = (self.end_s - t) / 86_400
            roll = rng.random(k)
            status = np.select(
                [age_days < 1, age_days < 3, age_days < 8, roll < 0.04, roll < 0.08],
                ["pending", "paid", "shipped", "cancelled", "returned"],
                "delivered",
            )
            updated = np.minimum(t + np.where(age_days < 1, 0, 3 * 86_400), self.end_s - 1)
            addr = default_address.take(pa.array(u - 1))
            orders = pa.table(
                {
                    "order_id": pa.array(order_ids),
                    "user_id": pa.array(u),
                    "status": pa.array(status),
                    "currency": pa.array(np.full(k, "EUR")),
                    "subtotal": _money(subtotal),
                    "shipping_fee": _money(shipping),
                    "tax": _money(tax),
                    "total": _money(subtotal + shipping + tax),
                    "shipping_name": addr["recipient"],
                    "shipping_line1": addr["line1"],
                    "shipping_line2": addr["line2"],
                    "shipping_city": addr["city"],
                    "shipping_postal_code": addr["postal_code"],
                    "shipping_country": addr["country_code"],
                    "shipping_phone": addr["phone"],
                    "created_at": _timestamps(t),
                    "updated_at": _timestamps(updated),
                }
            )
            items = pa.table(
                {
                    "order_item_id": pa.array(np.arange(next_item, next_item + len(owner))),
                    "order_id": pa.array(order_ids[owner]),
                    "product_id": pa.array(product),
                    "quantity": pa.array(quantity, pa.int32()),
                    "unit_price": _money(unit),
                    "line_total": _money(line),
                    "created_at": _timestamps(t[owner]),
                    "updated_at": _timestamps(t[owner]),
                }
            )
            next_item += len(owner)
            yield orders, items

    def activity_chunks(self) -> Iterator[pa.Table]:
        """user_activity events in chunks."""
        total = int(self.size.orders * self.size.activity_per_order)
        rng = self.rng
        times = self._event_times(total)
        next_id = 1
        for begin in range(0, total, self.size.chunk_orders):
            t = times[begin : begin + self.size.chunk_orders]
            k = len(t)
            user = self._users_perm[_skewed_index(rng, self.size.users, k, 2.0)]
            kind = EVENT_TYPES[rng.choice(len(EVENT_TYPES), size=k, p=EVENT_WEIGHTS)]
            has_product = np.isin(kind, ["view", "add_to_cart"])
            product = rng.integers(1, self.size.products + 1, size=k)
            octets = rng.integers(1, 255, size=(4, k))
            yield pa.table(
                {
                    "event_id": pa.array(np.arange(next_id, next_id + k)),
                    "user_id": pa.array(user),
                    "session_id": _concat("s-", _zpad(user, 8), "-", pa.array(t // 1800)),
                    "event_type": pa.array(kind),
                    "product_id": pa.array(product, mask=~has_product),
                    "ip_address": _concat(
                        pa.array(octets[0]),
                        ".",
                        pa.array(octets[1]),
                        ".",
                        pa.array(octets[2]),
                        ".",
                        pa.array(octets[3]),
                    ),
                    "user_agent": pa.array(USER_AGENTS[rng.integers(0, len(USER_AGENTS), size=k)]),
                    "occurred_at": _timestamps(t),
                    "updated_at": _timestamps(t),
                }
            )
            next_id += k

    def dynamodb_items(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(UserPreferences items, Sessions items) for the first `dynamodb_items` users."""
        n = min(self.size.dynamodb_items, self.size.users)
        rng = self.rng
        users = self._users_perm[:n]
        languages = np.array(["en", "de", "fr", "es"])
        lang = languages[rng.integers(0, len(languages), size=n)]
        newsletter = rng.random(n) < 0.4
        preferences = [
            {
                "userId": str(int(user)),
                "language": str(language),
                "currency": "EUR",
                "newsletter": bool(flag),
            }
            for user, language, flag in zip(users, lang, newsletter, strict=True)
        ]
        expiry = self.end_s + rng.integers(-7 * 86_400, 30 * 86_400, size=n)
        sessions = [
            {
                "sessionId": f"sess-{self.size.seed}-{i:07d}",
                "userId": str(int(user)),
                "expiryTime": int(exp),
                "device": str(USER_AGENTS[i % len(USER_AGENTS)]),
            }
            for i, (user, exp) in enumerate(zip(users, expiry, strict=True))
        ]
        return preferences, sessions


SHOP_TABLES = (
    "user_activity",
    "order_items",
    "orders",
    "inventory",
    "products",
    "categories",
    "brands",
    "addresses",
    "users",
)

IDENTITY_COLUMNS = {
    "users": "user_id",
    "addresses": "address_id",
    "brands": "brand_id",
    "categories": "category_id",
    "products": "product_id",
    "orders": "order_id",
    "order_items": "order_item_id",
    "user_activity": "event_id",
}


def _foreign_keys(conn: psycopg.Connection[Any]) -> list[tuple[str, str, str]]:
    """(table, constraint, definition) of every foreign key between shop tables."""
    rows = conn.execute(
        "SELECT c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid)"
        " FROM pg_constraint c WHERE c.contype = 'f' AND c.conrelid::regclass::text = ANY(%s)",
        (list(SHOP_TABLES),),
    ).fetchall()
    return [(str(t), str(n), str(d)) for t, n, d in rows]


def _load(conn: psycopg.Connection[Any], name: str, table: pa.Table, report: SeedReport) -> None:
    copy_in(conn, name, table.column_names, _csv_chunks(table))
    report.rows[name] = report.rows.get(name, 0) + table.num_rows


def seed_shop(
    conn: psycopg.Connection[Any], size: ShopSize, *, replace: bool = False
) -> SeedReport:
    """Load generated data into the shop database in one transaction.

    An already-seeded database is left alone unless `replace` is set, which truncates first.
    """
    report = SeedReport(rows={})
    existing = conn.execute("SELECT count(*) FROM users").fetchone()
    if existing and existing[0] and not replace:
        raise RuntimeError(
            f"the shop database already holds {existing[0]} users; pass replace=True to reseed"
        )
    gen = ShopGenerator(size)
    with conn.transaction():
        # Foreign keys are dropped for the bulk load and added back (and so validated in one
        # set-based pass each) before the transaction commits: much faster than per-row checks.
        foreign_keys = _foreign_keys(conn)
        for table, name, _ in foreign_keys:
            conn.execute(
                sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
                    sql.Identifier(table), sql.Identifier(name)
                )
            )
        if replace:
            conn.execute(
                sql.SQL("TRUNCATE {} RESTART IDENTITY").format(
                    sql.SQL(", ").join(sql.Identifier(t) for t in SHOP_TABLES)
                )
            )
        _load(conn, "brands", gen.brands(), report)
        _load(conn, "categories", gen.categories(), report)
        _load(conn, "products", gen.products(), report)
        _load(conn, "inventory", gen.inventory(), report)
        times, order_users = gen._order_plan()
        first_order = np.full(size.users, gen.end_s, dtype=np.int64)
        np.minimum.at(first_order, order_users - 1, times)
        users = gen.users(first_order)
        _load(conn, "users", users, report)
        addresses = gen.addresses(users)
        _load(conn, "addresses", addresses, report)
        for orders, items in gen.order_chunks(times, order_users, addresses):
            _load(conn, "orders", orders, report)
            _load(conn, "order_items", items, report)
            log.info("seeded %d orders", report.rows["orders"])
        for events in gen.activity_chunks():
            _load(conn, "user_activity", events, report)
        for table, name, definition in foreign_keys:
            conn.execute(
                sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
                    sql.Identifier(table), sql.Identifier(name), sql.SQL(definition)
                )
            )
        for table, key in IDENTITY_COLUMNS.items():
            conn.execute(
                sql.SQL(
                    "SELECT setval(pg_get_serial_sequence(%s, %s),"
                    " (SELECT coalesce(max({}), 0) + 1 FROM {}), false)"
                ).format(sql.Identifier(key), sql.Identifier(table)),
                (table, key),
            )
    conn.execute("ANALYZE")
    return report


def seed_dynamodb(dynamodb: Any, size: ShopSize, table_suffix: str = "") -> dict[str, int]:
    """Write UserPreferences and Sessions items (same seed, same items)."""
    preferences, sessions = ShopGenerator(size).dynamodb_items()
    for name, items in (("UserPreferences", preferences), ("Sessions", sessions)):
        table = dynamodb.Table(f"{name}{table_suffix}")
        with table.batch_writer() as batch:
            for item in items:
                batch.put_item(Item=item)
    return {"UserPreferences": len(preferences), "Sessions": len(sessions)}
