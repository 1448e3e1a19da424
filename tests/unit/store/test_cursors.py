"""Cursors and event positions are total over the patterns the API document gives them: every
string a schema-following client may send reads as a position, none is refused."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloudcore.errors import InvalidRecord
from cloudcore.events import POSITION_PATTERN, START
from cloudcore.events._wire import normalize_position, position
from cloudcore.store._table import decode_cursor, encode_cursor
from cloudcore.store.records import CURSOR_PATTERN


@pytest.mark.parametrize("cursor", ["0", "A", "AAAA", "_-_-_", "garbage", "x" * 200])
def test_every_base64url_cursor_decodes_to_a_position(cursor: str) -> None:
    assert re.match(CURSOR_PATTERN, cursor)
    assert "\x00" not in decode_cursor(cursor)


@given(st.from_regex(CURSOR_PATTERN, fullmatch=True))
def test_no_cursor_of_the_pattern_is_refused(cursor: str) -> None:
    decoded = decode_cursor(cursor)
    assert "\x00" not in decoded
    decoded.encode()  # valid text: PostgreSQL can compare it


@given(st.text(min_size=1).filter(lambda t: "\x00" not in t))
def test_a_cursor_made_by_the_store_reads_back_as_its_id(last_id: str) -> None:
    cursor = encode_cursor(last_id)
    assert re.match(CURSOR_PATTERN, cursor)
    assert decode_cursor(cursor) == last_id


def test_a_cursor_outside_the_alphabet_is_refused_naming_it() -> None:
    with pytest.raises(InvalidRecord, match="cursor 'garb@ge' is malformed"):
        decode_cursor("garb@ge")


def test_positions_of_any_spelling_normalize() -> None:
    assert normalize_position("0" * 39) == START
    assert normalize_position("0-0") == START
    assert normalize_position("1700000000000-3") == position(1700000000000, 3)
    assert normalize_position(position(12, 4)) == position(12, 4)
    assert normalize_position("9" * 40) == position(10**16 - 1, 10**10 - 1)
    assert normalize_position("5-" + "9" * 20) == position(5, 10**10 - 1)


@given(st.from_regex(POSITION_PATTERN, fullmatch=True))
def test_no_position_of_the_pattern_is_refused(value: str) -> None:
    canonical = normalize_position(value)
    assert canonical == START or re.fullmatch(r"\d{16}-\d{10}", canonical)


def test_a_position_outside_the_pattern_is_refused() -> None:
    with pytest.raises(InvalidRecord, match="yesterday"):
        normalize_position("yesterday")
