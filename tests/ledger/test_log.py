"""The hash-chained event log: canonical bodies, links, seqs, times, and what it refuses."""

import hashlib
import json
from datetime import timedelta
from enum import IntEnum, StrEnum
from itertools import pairwise
from pathlib import Path

import pytest
import rfc8785
from sqlalchemy import select

from ledger.clock import ManualClock
from ledger.config import Settings
from ledger.errors import ClockBehindLog, InvalidEvent, LogKeyMismatch
from ledger.log import Event, format_time, leaf_hash
from ledger.models import LogEntry
from ledger.runtime import GENESIS_TYPE, Ledger
from tests.ledger.entries import append, lesson, receipt


def _entries(ledger: Ledger) -> list[LogEntry]:
    with ledger.readers() as session:
        return list(session.scalars(select(LogEntry).order_by(LogEntry.seq)))


def test_the_log_opens_with_a_genesis_entry_naming_origin_and_key(ledger: Ledger) -> None:
    [genesis] = _entries(ledger)
    body = json.loads(genesis.body)
    assert genesis.seq == 0
    assert body["type"] == GENESIS_TYPE
    assert body["prev_hash"] == "00" * 32
    assert body["payload"] == {
        "origin": ledger.key.name,
        "algorithm": "Ed25519",
        "key": ledger.key.verifier_key,
    }
    assert body["postings"] == []


def test_seqs_are_consecutive_and_every_entry_links_to_the_one_before(ledger: Ledger) -> None:
    append(ledger, receipt("inst-1", "ctr-1", 30_000))
    append(ledger, lesson("inst-1", "ctr-1", 15_000), lesson("inst-1", "ctr-1", 15_000))
    entries = _entries(ledger)
    assert [e.seq for e in entries] == [0, 1, 2, 3]
    for previous, entry in pairwise(entries):
        assert json.loads(entry.body)["prev_hash"] == previous.hash.hex()
    with ledger.readers() as session:
        head = ledger.log.head(session)
    assert (head.size, head.hash) == (4, entries[-1].hash)


def test_the_body_is_rfc8785_canonical_json_and_the_hash_is_the_rfc6962_leaf(
    ledger: Ledger, clock: ManualClock
) -> None:
    [appended] = append(ledger, receipt("inst-1", "ctr-1", 30_000))
    entry = _entries(ledger)[appended.seq]
    expected = {
        "seq": 1,
        "time": format_time(clock.now()),
        "type": "test.receipt",
        "actor": "bank:bank-1",
        "payload": {"contract": "ctr-1", "amount": 30_000},
        "postings": [
            {"account": "escrow:inst-1", "amount": 30_000, "currency": "CNY"},
            {"account": "contract:ctr-1", "amount": -30_000, "currency": "CNY"},
        ],
        "prev_hash": _entries(ledger)[0].hash.hex(),
    }
    assert entry.body == rfc8785.dumps(expected)
    assert entry.hash == hashlib.sha256(b"\x00" + entry.body).digest() == leaf_hash(entry.body)
    assert appended.hash == entry.hash
    assert (entry.type, entry.actor, entry.time) == ("test.receipt", "bank:bank-1", clock.now())


def test_entry_times_never_go_backwards_when_the_clock_steps_back_a_little(
    ledger: Ledger, clock: ManualClock
) -> None:
    [first] = append(ledger, receipt("inst-1", "ctr-1", 100))
    clock.set(clock.now() - timedelta(minutes=2))
    [second] = append(ledger, receipt("inst-1", "ctr-1", 100))
    assert second.time == first.time
    clock.advance(hours=2)
    [third] = append(ledger, receipt("inst-1", "ctr-1", 100))
    assert third.time == clock.now() > first.time


def test_a_clock_far_behind_the_log_is_refused_rather_than_stamping_stale_times(
    ledger: Ledger, clock: ManualClock
) -> None:
    append(ledger, receipt("inst-1", "ctr-1", 100))
    clock.set(clock.now() - timedelta(hours=1))
    with pytest.raises(ClockBehindLog, match="refusing to stamp entries with a stale time"):
        append(ledger, receipt("inst-1", "ctr-1", 100))
    assert len(_entries(ledger)) == 2


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"price": 150.0}, "is a float"),
        ({"count": 2**53}, "exact range"),
        ({1: "x"}, "is not a string"),
        ({"when": object()}, "not JSON"),
        ({"name": "\ud800"}, "lone surrogate"),
        ({"\udfff": 1}, "lone surrogate"),
    ],
)
def test_payloads_that_cannot_be_logged_exactly_are_refused(
    ledger: Ledger, payload: dict[object, object], message: str
) -> None:
    with pytest.raises(InvalidEvent, match=message):
        append(ledger, Event("test.bad", "system", payload))  # type: ignore[arg-type]
    assert len(_entries(ledger)) == 1


@pytest.mark.parametrize(
    ("type_", "actor"),
    [
        ("Lesson Reported", "system"),
        ("lesson", "system"),
        ("lesson.reported", "parent"),
        ("a.b", ""),
    ],
)
def test_malformed_event_types_and_actors_are_refused(
    ledger: Ledger, type_: str, actor: str
) -> None:
    with pytest.raises(InvalidEvent):
        append(ledger, Event(type_, actor, {}))


def test_an_event_without_postings_is_logged_and_moves_no_money(ledger: Ledger) -> None:
    [appended] = append(ledger, Event("test.note", "regulator:edu-1", {"note": "inspection"}))
    entry = _entries(ledger)[appended.seq]
    assert json.loads(entry.body)["postings"] == []


def test_reopening_with_the_same_key_keeps_the_log(settings: Settings, ledger: Ledger) -> None:
    append(ledger, receipt("inst-1", "ctr-1", 100))
    again = Ledger.open(settings, migrate=False)
    try:
        with again.readers() as session:
            assert again.log.head(session).size == 2
    finally:
        again.close()


def test_reopening_with_another_key_is_refused(
    settings: Settings, ledger: Ledger, tmp_path: Path
) -> None:
    other = settings.model_copy(update={"key_dir": tmp_path / "other-keys"})
    with pytest.raises(LogKeyMismatch, match="restore the original key"):
        Ledger.open(other, migrate=False)


def test_reopening_under_another_origin_is_refused(settings: Settings, ledger: Ledger) -> None:
    renamed = settings.model_copy(update={"log_name": "another.example/log"})
    with pytest.raises(LogKeyMismatch):
        Ledger.open(renamed, migrate=False)


class _Colour(StrEnum):
    RED = "red"


class _Rank(IntEnum):
    TOP = 1


@pytest.mark.parametrize(
    "payload",
    [
        {"name": "张三", "enum": _Colour.RED, "rank": _Rank.TOP, "nested": [("a", 1), {"b": None}]},
        {"clé": "non-ASCII keys take the library's path", "\U0001f600": 1, "\ue000": 2},
        {"escapes": '\x00\x1f"\\\u2028\x7f', "flags": [True, False], "n": -(2**53 - 1)},
    ],
)
def test_every_body_is_exactly_what_rfc8785_gives(
    ledger: Ledger, clock: ManualClock, payload: dict[str, object]
) -> None:
    """The log encodes through the fast path where it can; the bytes never differ (issue 8)."""
    [appended] = append(ledger, Event("test.payload", "system", payload))
    entry = _entries(ledger)[appended.seq]
    expected = {
        "seq": appended.seq,
        "time": format_time(clock.now()),
        "type": "test.payload",
        "actor": "system",
        "payload": json.loads(json.dumps(payload)),
        "postings": [],
        "prev_hash": _entries(ledger)[appended.seq - 1].hash.hex(),
    }
    assert entry.body == rfc8785.dumps(expected)
