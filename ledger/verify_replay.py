"""The replay of ``escrow verify``: the log, its postings and its Merkle nodes, streamed side by side.

Issue 8: verify ran at ~35,000 entries/s, and the time went to SQLAlchemy's row processing (a
fifth), ``json`` (a sixth), formatting each time column with ``strftime``, sorting every entry's
postings to compare them, and a self-join per Merkle node. Here the rows come straight from the
driver's cursors (one per stream, in primary-key order, so nothing is sorted or held), bodies are
parsed with orjson, the time column is formatted with ``isoformat``, postings compare in the order
they were written (sorted only if that differs), and the Merkle nodes are checked as the leaves
stream past (``ledger.verify_merkle.NodeStream``).

Every fast path decides only what the former code would have decided; whenever one cannot (a body
orjson refuses or reads differently, a time the fast format does not cover, postings in another
order), the former, exact code decides instead, with the same findings and the same exceptions.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Connection

from ledger.accounts import AccountCode
from ledger.errors import LedgerError
from ledger.log import LEAF_PREFIX, ZERO_HASH, format_time
from ledger.models import LogEntry
from ledger.verify_findings import Findings, ProblemKind, Report
from ledger.verify_merkle import NodeStream, all_nodes_hold

STREAM_BATCH = 5_000


@dataclass(slots=True)
class Rebuilt:
    """An account as the replay of the log builds it."""

    sign: int
    non_negative: bool
    currency: str
    opened_seq: int
    last_seq: int
    balance: int = 0  # normal-side: the sign applied to the debit-positive sum of its postings
    low: int = 0  # the lowest balance it had (a later part of a parallel replay joins on it)


class Cursors:
    """Rows straight from the DBAPI connection under ``conn``, inside its transaction.

    PostgreSQL rows come through named (server-side) cursors, a batch per round trip, so that
    several streams can be open at once and none is held in memory; SQLite steps its cursors.
    """

    def __init__(self, conn: Connection) -> None:
        self.raw: Any = conn.connection.driver_connection
        self.postgres = conn.dialect.name == "postgresql"
        self.opened: list[Any] = []

    def rows(self, sql: str, *params: object) -> Iterator[Any]:
        """Stream the rows of ``sql`` (parameters written ``?``) as tuples."""
        if self.postgres:
            cursor = self.raw.cursor(name=f"escrow_verify_{len(self.opened)}")
            cursor.itersize = STREAM_BATCH
            sql = sql.replace("?", "%s")
        else:
            cursor = self.raw.cursor()
        self.opened.append(cursor)
        cursor.execute(sql, params)
        return iter(cursor)

    def scalar(self, sql: str) -> Any:
        cursor = self.raw.cursor()
        try:
            cursor.execute(sql)
            return cursor.fetchone()[0]
        finally:
            cursor.close()

    def close(self) -> None:
        for cursor in self.opened:
            cursor.close()
        self.opened.clear()


class ColumnTime:
    """The entry's time column as ``format_time`` renders it, with what SQLAlchemy would return.

    SQLite stores the text that ``datetime.fromisoformat`` reads back (SQLAlchemy's own
    processor); PostgreSQL returns an aware datetime. ``isoformat`` gives the same text as
    ``strftime`` for years from 1000 at a fraction of the cost; anything else (another type,
    a year below 1000, text ``fromisoformat`` refuses) goes through the column type's own
    processor and ``format_time``, which raise what they raised before.
    """

    def __init__(self, conn: Connection) -> None:
        processor = LogEntry.__table__.c.time.type.result_processor(conn.dialect, None)
        self.processor: Callable[[Any], Any] = processor or (lambda value: value)
        self.last: object = None
        self.text = ""

    def slow(self, value: object) -> str:
        return format_time(self.processor(value))

    def __call__(self, value: object) -> str | None:
        """The text, or None for NULL (``format_time`` fails on it where the comparison is)."""
        if value is None:  # the column's processor returns None for it, on either database
            return None
        if value == self.last and type(value) is type(self.last):
            return self.text
        if type(value) is str:
            try:
                moment = datetime.fromisoformat(value)
            except ValueError:
                return self.slow(value)
        elif type(value) is datetime:
            moment = value
        else:
            return self.slow(value)
        if moment.utcoffset():
            moment = moment.astimezone(UTC)
        if moment.year < 1000:
            return self.slow(value)
        text = moment.isoformat("T", "microseconds")
        text = (text if moment.tzinfo is None else text[:-6]) + "Z"
        self.last, self.text = value, text
        return text


def parse_body(body: bytes) -> dict[str, Any] | None:
    """The entry as a dict, or None unless every field has the type the writer gives it.

    orjson reads every body ``json`` reads the same way, except that it refuses some (NaN, lone
    surrogates, a BOM, UTF-16) and turns integers beyond 64 bits into floats. A body orjson
    refuses or that then looks malformed is read again with ``json``, which decides as before.
    """
    try:
        entry = orjson.loads(body)
    except orjson.JSONDecodeError:
        return parse_body_json(body)
    if well_formed(entry):
        return entry  # type: ignore[no-any-return]
    return parse_body_json(body)


def parse_body_json(body: bytes) -> dict[str, Any] | None:
    try:
        entry = json.loads(body)
    except ValueError:
        return None
    return entry if well_formed(entry) else None


def well_formed(entry: object) -> bool:
    """Every field the checks read has the type the writer gives it."""
    if type(entry) is not dict:
        return False
    try:
        if not (
            type(entry["seq"]) is int
            and isinstance(entry["prev_hash"], str)
            and isinstance(entry["type"], str)
            and isinstance(entry["actor"], str)
            and isinstance(entry["time"], str)
            and isinstance(entry["postings"], list)
        ):
            return False
        for leg in entry["postings"]:  # a loop, not all(...): a generator per entry costs
            if not (
                isinstance(leg, dict)
                and isinstance(leg["account"], str)
                and type(leg["amount"]) is int
                and isinstance(leg["currency"], str)
            ):
                return False
    except KeyError:
        return False
    return True


def as_bytes(value: object) -> bytes:
    """Column value as bytes even if someone stored text in a binary column."""
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8", "surrogateescape")


class Replay:
    """One pass over the log's seqs ``lo`` up to ``hi`` (None: to the end), in seq order, with
    their postings and Merkle nodes alongside.

    The whole log (``lo`` = 0, ``hi`` = None) is the exact replay. A part starting at ``lo`` > 0
    cannot know the entries before it, so it keeps what joining needs instead of deciding: its
    first entry's ``prev_hash`` and time, each account's lowest balance, and the Merkle nodes
    whose left child lies before it (``ledger.verify_parallel`` joins two parts).
    """

    def __init__(
        self,
        conn: Connection,
        report: Report,
        found: Findings,
        progress: Callable[[int], None] | None = None,
        *,
        lo: int = 0,
        hi: int | None = None,
    ) -> None:
        self.cursors = Cursors(conn)
        self.report = report
        self.found = found
        self.progress = progress
        self.lo, self.hi = lo, hi
        self.column_time = ColumnTime(conn)
        self.codes: dict[int, str] = {}
        self.rebuilt: dict[str, Rebuilt] = {}
        self.account_rows: list[tuple[Any, ...]] = []
        self.first_link: str | None = None  # a part after the first: its first prev_hash and time
        self.first_time = ""
        self.last_hash = ZERO_HASH
        self.last_time = ""
        self.next_seq = lo
        self.tree = NodeStream(self._level_rows, lo)

    def _range(self, column: str) -> tuple[str, tuple[int, ...]]:
        where, params = [], []
        if self.lo:
            where.append(f"{column} >= ?")
            params.append(self.lo)
        if self.hi is not None:
            where.append(f"{column} < ?")
            params.append(self.hi)
        return (" AND ".join(where), tuple(params))

    def _level_rows(self, level: int) -> Iterator[Any]:
        where, params = self._range("idx")
        params = tuple(bound >> level for bound in params)
        return self.cursors.rows(
            "SELECT idx, hash FROM merkle_nodes WHERE level = ?"
            + (f" AND {where}" if where else "")
            + " ORDER BY idx",
            level,
            *params,
        )

    def _stream(self, select: str, order: str) -> Iterator[Any]:
        where, params = self._range("seq")
        return self.cursors.rows(
            select + (f" WHERE {where}" if where else "") + f" ORDER BY {order}", *params
        )

    def run(self) -> bool:
        """Replay and check the whole log and every account; True if the stored Merkle nodes
        all hold (if not, ``ledger.verify_merkle.check_nodes`` says which do not)."""
        try:
            self.replay()
            stored = self.cursors.scalar("SELECT count(*) FROM merkle_nodes WHERE level >= 1")
        finally:
            self.close()
        self.check_accounts()
        return all_nodes_hold(int(stored), self.tree)

    def close(self) -> None:
        self.tree.close()
        self.cursors.close()

    def load_accounts(self) -> None:
        rows = self.cursors.rows(
            "SELECT id, code, currency, balance, opened_seq, last_seq FROM accounts"
        )
        self.account_rows = list(rows)
        self.codes = {row[0]: row[1] for row in self.account_rows}
        self.report.accounts = len(self.account_rows)

    def replay(self) -> None:
        """Check every entry of the range and replay its postings."""
        self.load_accounts()
        postings = self._stream("SELECT seq, account_id, amount, currency FROM postings", "seq, id")
        entries = self._stream("SELECT seq, time, type, actor, body, hash FROM log_entries", "seq")
        report, found, progress, column_time = (
            self.report,
            self.found,
            self.progress,
            self.column_time,
        )
        leaf, entry_check = self.tree.leaf, self._entry
        sha256 = hashlib.sha256
        pending = next(postings, None)
        expected, prev_time = self.lo, ""
        prev_hash: bytes | None = ZERO_HASH if self.lo == 0 else None
        for seq, time, type_, actor, body, stored_hash in entries:
            # As when SQLAlchemy processed the row: a time it cannot read stops here.
            column = (type_, actor, column_time(time))
            if seq != expected:
                missing = f"{expected}" if seq == expected + 1 else f"{expected}..{seq - 1}"
                found.add(
                    ProblemKind.GAP, expected, f"entries {missing} are missing before seq {seq}"
                )
            expected = seq + 1
            stored_legs: list[Any] = []
            while pending is not None and pending[0] <= seq:
                if pending[0] < seq:
                    pending = self._orphans(pending, postings)
                    continue
                stored_legs.append(pending)
                pending = next(postings, None)
            report.postings += len(stored_legs)
            report.entries += 1
            body = body if type(body) is bytes else as_bytes(body)
            digest = sha256(LEAF_PREFIX + body).digest()
            if digest != stored_hash:
                stored_bytes = as_bytes(stored_hash)
                if digest != stored_bytes:
                    found.add(
                        ProblemKind.HASH_MISMATCH,
                        seq,
                        f"stored hash {stored_bytes.hex()[:16]}… but the body hashes to "
                        f"{digest.hex()[:16]}…",
                    )
            leaf(seq, stored_hash)
            prev_time = entry_check(seq, body, column, stored_legs, prev_hash, prev_time)
            prev_hash = digest
            if progress is not None and report.entries % STREAM_BATCH == 0:
                progress(report.entries)
        while pending is not None:
            pending = self._orphans(pending, postings)
        self.next_seq, self.last_time = expected, prev_time
        if prev_hash is not None:
            self.last_hash = prev_hash
        if progress is not None:
            progress(report.entries)

    def _orphans(self, first: Any, postings: Iterator[Any]) -> Any:
        """Report the posting rows of ``first``'s seq, which has no entry; return the next row."""
        seq, count = first[0], 1
        row = next(postings, None)
        while row is not None and row[0] == seq:
            count += 1
            row = next(postings, None)
        self.found.add(
            ProblemKind.POSTING_MISMATCH,
            seq,
            f"{count} posting rows belong to seq {seq}, which has no entry",
        )
        return row

    def _entry(
        self,
        seq: int,
        body: bytes,
        column: tuple[object, object, str | None],
        stored_legs: list[Any],
        prev_hash: bytes | None,
        prev_time: str,
    ) -> str:
        """Check one entry; return its time for the next entry's check."""
        found = self.found
        entry = parse_body(body)
        if entry is None:
            found.add(ProblemKind.MALFORMED, seq, "body is not a well-formed log entry")
            return prev_time
        if entry["seq"] != seq:
            found.add(
                ProblemKind.OUT_OF_ORDER,
                seq,
                f"the entry stored at seq {seq} says it is entry {entry['seq']}: "
                "entries were reordered, renumbered or inserted",
            )
        if prev_hash is None:  # the first entry of a later part: joined afterwards
            self.first_link, self.first_time = entry["prev_hash"], entry["time"]
        elif entry["prev_hash"] != prev_hash.hex():
            found.add(
                ProblemKind.BROKEN_LINK,
                seq,
                f"prev_hash {entry['prev_hash'][:16]}… does not match the previous entry's hash "
                f"{prev_hash.hex()[:16]}…",
            )
        time: str = entry["time"]
        if time < prev_time:  # fixed-width UTC timestamps compare as text
            found.add(
                ProblemKind.TIME_BACKWARDS,
                seq,
                f"dated {time}, before the previous entry's {prev_time}",
            )
        if column[2] is None:
            format_time(column[2])  # type: ignore[arg-type]  # raises, as it did before
        if (entry["type"], entry["actor"], time) != column:
            found.add(
                ProblemKind.COLUMN_MISMATCH, seq, "type, actor or time column differs from the body"
            )
        legs = entry["postings"]
        if legs or stored_legs:
            self._postings(seq, legs, stored_legs)
        return max(prev_time, time)

    def _postings(self, seq: int, legs: list[dict[str, Any]], stored_legs: list[Any]) -> None:
        found, codes = self.found, self.codes
        in_body = [(leg["account"], leg["amount"], leg["currency"]) for leg in legs]
        if not _balanced(in_body):
            totals: Counter[str] = Counter()
            for _, amount, currency in in_body:
                totals[currency] += amount
            found.add(
                ProblemKind.UNBALANCED, seq, f"postings sum to {dict(totals)} instead of zero"
            )
        stored = [
            (codes.get(account_id, f"<account id {account_id}>"), amount, currency)
            for _, account_id, amount, currency in stored_legs
        ]
        # Rows are written in the body's order; equal lists are equal once sorted too.
        if stored != in_body:
            stored.sort()
            in_body_sorted = sorted(in_body)
            if stored != in_body_sorted:
                found.add(
                    ProblemKind.POSTING_MISMATCH,
                    seq,
                    f"posting rows {stored} differ from the entry's postings {in_body_sorted}",
                )
        rebuilt = self.rebuilt
        touched: list[tuple[str, Rebuilt]] = []
        for code, amount, currency in in_body:
            account = rebuilt.get(code)
            if account is None:
                try:
                    chart = AccountCode.parse(code).cls
                except LedgerError:
                    found.add(ProblemKind.MALFORMED, seq, f"posting to unknown account {code!r}")
                    continue
                account = Rebuilt(
                    chart.type.normal_side.sign, chart.non_negative, currency, seq, seq
                )
                rebuilt[code] = account
            account.balance += account.sign * amount
            account.last_seq = seq
            touched.append((code, account))
        for code, account in touched:
            balance = account.balance
            account.low = min(account.low, balance)
            if balance < 0 and account.non_negative and not self.lo:
                found.add(ProblemKind.NEGATIVE_BALANCE, seq, f"{code} falls to {balance}", code)

    def check_accounts(self) -> None:
        """Compare every account row with the account rebuilt from the log."""
        found, rebuilt = self.found, self.rebuilt
        seen: set[str] = set()
        for _, code, currency, balance, opened_seq, last_seq in self.account_rows:
            seen.add(code)
            account = rebuilt.get(code)
            if account is None:
                found.add(
                    ProblemKind.ACCOUNT_MISMATCH,
                    None,
                    "an account row with no postings in the log",
                    code,
                )
                continue
            if balance != account.balance:
                found.add(
                    ProblemKind.BALANCE_MISMATCH,
                    account.last_seq,
                    f"stored balance {balance}, rebuilt from the log {account.balance}",
                    code,
                )
            stored = (currency, opened_seq, last_seq)
            rebuilt_columns = (account.currency, account.opened_seq, account.last_seq)
            if stored != rebuilt_columns:
                found.add(
                    ProblemKind.ACCOUNT_MISMATCH,
                    account.last_seq,
                    f"stored (currency, opened_seq, last_seq) {stored}, rebuilt {rebuilt_columns}",
                    code,
                )
        for code in rebuilt.keys() - seen:
            found.add(
                ProblemKind.ACCOUNT_MISMATCH,
                rebuilt[code].opened_seq,
                "posted to in the log but has no account row",
                code,
            )


def _balanced(legs: list[tuple[str, int, str]]) -> bool:
    """No leg is zero, there are none or at least two, and they sum to zero per currency."""
    if len(legs) == 2:
        (_, first, first_currency), (_, second, second_currency) = legs
        return first != 0 and first + second == 0 and first_currency == second_currency
    if len(legs) == 1:
        return False
    totals: Counter[str] = Counter()
    for _, amount, currency in legs:
        if not amount:
            return False
        totals[currency] += amount
    return not any(totals.values())
