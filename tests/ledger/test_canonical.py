"""The fast canonical JSON path returns exactly what the RFC 8785 reference library returns."""

from __future__ import annotations

from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import canonical

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**60), max_value=2**60)
    | st.integers(min_value=-canonical.SAFE_INTEGER, max_value=canonical.SAFE_INTEGER)
    | st.text()
    | st.text(alphabet=st.characters(max_codepoint=0x3F))  # control characters and escapes
    | st.floats(allow_nan=False, allow_infinity=False)
)
_keys = st.text() | st.text(alphabet=st.characters(min_codepoint=0xE000))
_values = st.recursive(
    _scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(_keys, children, max_size=4)
        | st.tuples(children, children)
    ),
    max_leaves=20,
)


def _reference(value: Any) -> bytes | type[Exception]:
    try:
        return rfc8785.dumps(value)
    except Exception as error:  # noqa: BLE001 - the error type is what is compared
        return type(error)


def _fast(value: Any) -> bytes | type[Exception]:
    try:
        return canonical.dumps(value)
    except Exception as error:  # noqa: BLE001
        return type(error)


@settings(max_examples=600, deadline=None)
@given(_values)
def test_the_fast_path_equals_the_reference_library(value: Any) -> None:
    assert _fast(value) == _reference(value)


@pytest.mark.parametrize(
    "value",
    [
        {"b": 1, "a": [True, None, '\u2028\x7f\x00\x1f"\\\b\f\n\r\t']},
        {"\ue000": 1, "\U0001f600": 2},  # code point and UTF-16 orders differ here
        {"amount": 2**53 - 1, "neg": -(2**53 - 1)},
        {"big": 2**53},
        {"f": 1.5},
        {"lone": "\ud800"},
        ("tuple", 1),
    ],
)
def test_edge_values_match_the_reference_library(value: Any) -> None:
    assert _fast(value) == _reference(value)


def test_the_log_s_values_take_the_fast_path() -> None:
    """Entries (ASCII keys, safe integers, text) never fall back to the slow library."""
    body = {"seq": 1, "payload": {"name": "张三", "n": -5}, "postings": [{"amount": 10}]}
    assert canonical._plain(body, 0)
    assert not canonical._plain({"x": 0.5}, 0)
    assert not canonical._plain({"\u00e9": 1}, 0)
