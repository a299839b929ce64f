"""The hourly load's Arrow row transforms (pure functions, no store)."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime

import pyarrow as pa

from lifecycle_pipelines.archive.stats import pk_hash
from lifecycle_pipelines.warehouse.model import DIM_USERS, FACT_ORDERS
from lifecycle_pipelines.warehouse.transform import (
    UserKeys,
    date_keys,
    is_user_dimension,
    user_key_figures,
    user_key_numbers,
    user_keys,
    without_users,
)

KEY = b"k" * 32


def _hmac(user_id: int) -> str:
    return hmac.new(KEY, str(user_id).encode(), hashlib.sha256).hexdigest()


def test_user_keys_are_the_hmac_of_each_id_and_null_stays_null() -> None:
    ids = pa.array([7, None, 12, 7], pa.int64())
    assert user_keys(ids, KEY).to_pylist() == [_hmac(7), None, _hmac(12), _hmac(7)]


def test_user_keys_remember_ids_across_batches_and_accept_chunked_input() -> None:
    keys = UserKeys(KEY)
    first = keys(pa.chunked_array([[3, 4], [5]], pa.int64()))
    second = keys(pa.array([5, 6, 3], pa.int32()))  # cast to int64; 5 and 3 are known
    assert first.to_pylist() == [_hmac(3), _hmac(4), _hmac(5)]
    assert second.to_pylist() == [_hmac(5), _hmac(6), _hmac(3)]
    assert UserKeys(b"other" * 8)(pa.array([3])).to_pylist() != [_hmac(3)]


def test_user_keys_keep_null_apart_from_the_id_zero() -> None:
    keys = UserKeys(KEY)
    assert keys(pa.array([None, 5], pa.int64())).to_pylist() == [None, _hmac(5)]
    assert keys(pa.array([0, None, 0], pa.int64())).to_pylist() == [_hmac(0), None, _hmac(0)]
    assert keys(pa.array([None, None], pa.int64())).to_pylist() == [None, None]


def test_without_users_nulls_exactly_the_excluded_ids() -> None:
    ids = pa.array([1, 2, None, 3, 2], pa.int64())
    assert without_users(ids, [2]).to_pylist() == [1, None, None, 3, None]
    assert without_users(ids, []).to_pylist() == ids.to_pylist()


def test_date_keys_are_yyyymmdd_of_the_utc_day() -> None:
    times = pa.array(
        [datetime(2026, 1, 31, 23, 59, tzinfo=UTC), datetime(2024, 2, 29, 0, 0, tzinfo=UTC), None],
        pa.timestamp("us", tz="UTC"),
    )
    keys = date_keys(times)
    assert keys.type == pa.int32()
    assert keys.to_pylist() == [20260131, 20240229, None]
    # the calendar day where the timestamp's zone is: 23:30 UTC is the next day in Berlin
    berlin = pa.array(
        [datetime(2026, 3, 1, 23, 30, tzinfo=UTC)], pa.timestamp("us", "Europe/Berlin")
    )
    assert date_keys(pa.chunked_array([berlin])).to_pylist() == [20260302]


def test_only_the_user_dimension_is_keyed_by_the_user_key() -> None:
    assert is_user_dimension(DIM_USERS)
    assert not is_user_dimension(FACT_ORDERS)


def test_a_user_key_figure_is_the_sum_of_its_eight_32_bit_words() -> None:
    keys = ["00000000" * 8, "ffffffff" + "00000000" * 7, "0123abcd" * 7 + "00000001"]
    numbers = user_key_numbers(pa.array(keys).slice(1))
    assert numbers.tolist() == [0xFFFFFFFF, 7 * 0x0123ABCD + 1]
    changed = "0123abcd" * 7 + "00000002"  # the last digit: the figure changes too
    assert user_key_numbers(pa.array([changed])).tolist() == [7 * 0x0123ABCD + 2]
    figures = user_key_figures(pa.array(keys))
    assert (figures.rows, figures.pk_sum) == (3, 0xFFFFFFFF + 7 * 0x0123ABCD + 1)
    assert figures.pk_hash_sum == int(pk_hash(user_key_numbers(pa.array(keys))).sum())
