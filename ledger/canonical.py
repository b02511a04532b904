"""RFC 8785 canonical JSON, with the standard library's C encoder for the values the log holds.

Every log entry body, signed message and idempotency fingerprint is RFC 8785 JSON. The ``rfc8785``
package is the reference implementation, but it is pure Python and was a fifth of the cost of
reporting a lesson (issue 8). For the values the ledger actually writes — objects with ASCII keys,
strings, integers within ±(2^53 - 1), booleans, null and lists — RFC 8785 and ``json.dumps`` with
sorted keys, no whitespace and no ASCII escaping produce the same bytes:

- keys: RFC 8785 sorts by UTF-16 code units and Python by code points; the two orders agree on
  ASCII keys (they differ only between U+E000..U+FFFF and astral characters);
- strings: both escape exactly ``"``, ``\\`` and U+0000..U+001F, with the short forms
  ``\\b \\t \\n \\f \\r`` and lower-case ``\\u00xx`` otherwise, and write everything else as UTF-8;
- integers in the safe range print the same in ECMAScript and Python.

Anything else (floats, large integers, non-ASCII keys, tuples, lone surrogates, other types) goes to
``rfc8785``, which canonicalizes it or raises its own error. A Hypothesis test compares the two on
arbitrary JSON values, so the fast path can only ever return what the library would.
"""

from __future__ import annotations

import json
from typing import Any

import rfc8785

SAFE_INTEGER = 2**53 - 1
_MAX_DEPTH = 32

_ENCODER = json.JSONEncoder(
    ensure_ascii=False,
    sort_keys=True,
    separators=(",", ":"),
    allow_nan=False,
    check_circular=False,
)


def _plain(value: Any, depth: int) -> bool:
    """Whether ``value`` is in the subset where the stdlib encoder is exactly RFC 8785."""
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return True
    if kind is int:
        return bool(-SAFE_INTEGER <= value <= SAFE_INTEGER)
    if depth >= _MAX_DEPTH:
        return False
    if kind is dict:
        return all(
            type(key) is str and key.isascii() and _plain(item, depth + 1)
            for key, item in value.items()
        )
    if kind is list:
        return all(_plain(item, depth + 1) for item in value)
    return False


def dumps(value: Any) -> bytes:
    """The RFC 8785 canonical UTF-8 bytes of ``value`` (raises ``rfc8785`` errors for the rest)."""
    if _plain(value, 0):
        try:
            return _ENCODER.encode(value).encode("utf-8")
        except UnicodeEncodeError:
            pass  # a lone surrogate: let the library report it
    return rfc8785.dumps(value)


def dumps_plain(value: Any) -> bytes:
    """``dumps`` for a value its caller has already proven to be in the fast path's subset.

    The log validates every payload in one walk (``ledger.log``) and so knows the answer ``_plain``
    would give; walking the value again cost 6% of a lesson report (issue 8).
    """
    return _ENCODER.encode(value).encode("utf-8")
