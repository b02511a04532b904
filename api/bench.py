"""``escrow bench``: the performance figures of issue 8, measured on a scratch database.

The bench builds its own data — 1,000 institutions, contracts of 60 lessons, paid — in a database
it is given explicitly or in a temporary SQLite file, never in the configured one, and measures:

- ingest: lessons reported through the service layer (``report_lessons``) in batches of 1,000,
  each batch its own transaction with its entries, postings, balances and Merkle nodes;
- settle: confirmation by silence of every lesson on one business date (reported, not a target),
  then ``settle()`` of that date across every institution;
- verify: ``verify_database`` (what ``escrow verify`` runs) in a child process, for its entries/s
  and its peak resident memory; beside it the floor, SHA-256(0x00 || body) alone over the same
  stored bodies, and the ratio of the two;
- proofs: inclusion proofs generated from the stored tree and verified, at the final tree size;
- HTTP (``api.bench_http``): single-lesson reports from an open-loop client against a real
  uvicorn, and balance reads from a closed-loop one.

Timings use a manual clock that starts 30 days before now, so the confirmation window (7 working
days nationally) and T+1 settlement pass without waiting, and the HTTP phase, on the real clock,
comes after every entry the bench wrote.
"""

from __future__ import annotations

import json
import math
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from ledger import merkle_store, verifier
from ledger.clock import ManualClock
from ledger.config import Environment, Settings
from ledger.db import make_engine
from ledger.entities import Lesson, LicenceType, PayerType
from ledger.escrow import contracts, lessons, parties
from ledger.escrow.context import Context
from ledger.escrow.contracts import Terms
from ledger.escrow.lessons import LessonReport
from ledger.models import LogEntry
from ledger.runtime import Ledger
from ledger.verify import sha256_floor, verify_database
from settlement.engine import settle
from settlement.sweeps import run_sweeps

DEFAULT_SCALE = 1_000_000
INSTITUTIONS = 1_000
LESSONS_PER_CONTRACT = 60
UNIT_PRICE_FEN = 8_000  # 60 lessons = ¥4,800, inside the ¥5,000 limit of one charge
BATCH = lessons.MAX_BATCH
PROOF_SAMPLES = 2_000
LOG_NAME = "bench.tuition-escrow.local/log"
ACTOR = "admin:bench"

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Target:
    """One figure of issue 8: what is measured, the bound, and which way is better."""

    key: str
    label: str
    bound: float
    unit: str
    higher_is_better: bool
    scale: int | None = None
    """The scale the bound is stated for (None: any scale)."""

    def met(self, value: float | None) -> bool | None:
        if value is None:
            return None
        return value >= self.bound if self.higher_is_better else value < self.bound


def targets(dialect: str) -> list[Target]:
    """Issue 8's targets on 2 cores; ingest differs by database, the rest do not."""
    ingest = 10_000 if dialect == "sqlite" else 5_000
    return [
        Target(
            "ingest_lessons_per_s", "ingest (service, batches of 1,000)", ingest, "lessons/s", True
        ),
        Target("http_report_p99_ms", "HTTP single-lesson report p99 at 200 req/s", 25, "ms", False),
        Target("http_balance_rps", "HTTP balance reads", 1_500, "req/s", True),
        Target(
            "settle_seconds",
            "settle 1,000,000 lessons / 1,000 institutions",
            60,
            "s",
            False,
            DEFAULT_SCALE,
        ),
        Target("verify_entries_per_s", "verify (escrow verify replay)", 200_000, "entries/s", True),
        Target("verify_floor_ratio", "verify / SHA-256 floor", 0.25, "ratio", True),
        Target("verify_peak_mb", "verify peak memory (PSS)", 200, "MB", False, DEFAULT_SCALE),
        Target("proof_p99_ms", "inclusion proof served (p99)", 1, "ms", False, DEFAULT_SCALE),
    ]


@dataclass
class Figures:
    """Everything one bench run measured; ``None`` where a phase was skipped."""

    database: str
    scale: int
    institutions: int
    contracts: int
    setup_seconds: float = 0.0
    ingest_lessons: int = 0
    ingest_seconds: float = 0.0
    ingest_lessons_per_s: float = 0.0
    ingest_batch_p50_ms: float = 0.0
    ingest_batch_p99_ms: float = 0.0
    confirm_lessons: int = 0
    confirm_seconds: float = 0.0
    settle_lessons: int = 0
    settle_batches: int = 0
    settle_seconds: float = 0.0
    verify_ok: bool = False
    verify_entries: int = 0
    verify_seconds: float = 0.0
    verify_entries_per_s: float = 0.0
    verify_peak_rss_mb: float = 0.0
    """The processes' peak RSS added (an upper bound: pages they share count twice)."""
    verify_peak_mb: float = 0.0
    """Peak PSS of the verify run, its processes together (the figure of the target)."""
    floor_entries_per_s: float = 0.0
    verify_floor_ratio: float = 0.0
    proof_tree_size: int = 0
    proof_samples: int = 0
    proof_p50_ms: float = 0.0
    proof_p99_ms: float = 0.0
    proof_verify_p50_ms: float = 0.0
    proofs_per_s: float = 0.0
    http: dict[str, Any] | None = None
    http_report_p99_ms: float | None = None
    http_balance_rps: float | None = None
    machine: dict[str, Any] = field(default_factory=dict)

    def value(self, key: str) -> float | None:
        found = getattr(self, key)
        return None if found is None else float(found)

    def results(self) -> list[dict[str, Any]]:
        """Each target beside the measured value and whether it is met at this scale."""
        rows = []
        for target in targets(self.database):
            value = self.value(target.key)
            applies = target.scale is None or target.scale <= self.scale
            rows.append(
                {
                    "key": target.key,
                    "label": target.label,
                    "value": value,
                    "unit": target.unit,
                    "target": ("≥ " if target.higher_is_better else "< ") + f"{target.bound:g}",
                    "met": target.met(value) if applies else None,
                    "stated_for_scale": target.scale,
                }
            )
        return rows

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "targets": self.results()}


def machine() -> dict[str, Any]:
    """The machine a figure was measured on: cores, CPU model, memory, Python and OS."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gb = None
    try:
        memory_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass
    return {
        "cores": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "cpu": model or platform.processor(),
        "memory_gb": memory_gb,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1)]


@dataclass
class _World:
    bank: str
    institutions: list[str]
    contracts: dict[str, list[str]]  # institution -> its contracts, each of LESSONS_PER_CONTRACT


def new_institution(session: Session, ctx: Context, *, bank_id: str, tag: str) -> str:
    """A bench institution (non-academic, national profile) whose escrow the bank holds."""
    return parties.register_institution(
        session,
        ctx,
        name=f"Bench Institution {tag}",
        licence=LicenceType.NON_ACADEMIC,
        district="bench",
        bank_id=bank_id,
        escrow_account=f"BENCH-ESCROW-{tag}",
        settlement_account=f"BENCH-SETTLE-{tag}",
        is_new=False,
        actor=ACTOR,
    ).id


def paid_contract(
    session: Session,
    ctx: Context,
    *,
    parent_id: str,
    institution_id: str,
    bank_id: str,
    start: date,
    reference: str,
) -> str:
    """A new pupil's contract of ``LESSONS_PER_CONTRACT`` lessons from ``start``, paid in full."""
    student = parties.register_student(
        session, ctx, parent_id=parent_id, name="Bench Pupil", actor=ACTOR
    ).id
    contract = contracts.create_contract(
        session,
        ctx,
        parent_id=parent_id,
        terms=Terms(
            institution_id,
            student,
            "art",
            "Drawing",
            LESSONS_PER_CONTRACT,
            UNIT_PRICE_FEN,
            start,
            start + timedelta(days=60),
        ),
    )
    contracts.book_receipt(
        session,
        ctx,
        bank_id=bank_id,
        contract_id=contract.id,
        amount_fen=contract.total_fen,
        bank_reference=reference,
        payer=PayerType.PARENT,
    )
    return contract.id


class Bench:
    """One bench run against one scratch database."""

    def __init__(
        self, database_url: str, key_dir: Path, scale: int, progress: Progress | None = None
    ) -> None:
        if scale < 1:
            raise ValueError("the scale is a number of lessons, at least 1")
        self.scale = scale
        self.progress = progress or (lambda _message: None)
        self.institutions = min(INSTITUTIONS, math.ceil(scale / BATCH))
        per = [scale // self.institutions] * self.institutions
        for index in range(scale % self.institutions):
            per[index] += 1
        self.per_institution = per
        start_day = (datetime.now(UTC) - timedelta(days=30)).date()
        self.start_day = start_day
        self.clock = ManualClock(
            datetime(start_day.year, start_day.month, start_day.day, 1, tzinfo=UTC)
        )
        self.settings = Settings(
            environment=Environment.TEST,
            database_url=database_url,
            key_dir=key_dir,
            log_name=LOG_NAME,
        )
        self.ledger = Ledger.open(self.settings, clock=self.clock)
        dialect = self.ledger.engine.dialect.name
        self.figures = Figures(
            database=dialect,
            scale=scale,
            institutions=self.institutions,
            contracts=sum(math.ceil(n / LESSONS_PER_CONTRACT) for n in per),
            machine=machine(),
        )

    def close(self) -> None:
        self.ledger.close()

    # --- phases ---------------------------------------------------------------------------

    def setup(self) -> _World:
        """Bank, institutions, one parent per institution, one paid contract per 60 lessons."""
        ctx = self.ledger.escrow
        started = time.perf_counter()
        with self.ledger.sessions.begin() as session:
            bank = parties.register_bank(session, ctx, name="Bench Custody Bank", actor=ACTOR).id
        world = _World(bank, [], {})
        for number, lessons_here in enumerate(self.per_institution):
            with self.ledger.sessions.begin() as session:
                institution = new_institution(session, ctx, bank_id=bank, tag=str(number))
                parent = parties.register_parent(
                    session, ctx, name=f"Parent {number}", phone=None, actor=ACTOR
                ).id
                owned = [
                    paid_contract(
                        session,
                        ctx,
                        parent_id=parent,
                        institution_id=institution,
                        bank_id=bank,
                        start=self.start_day,
                        reference=f"BENCH-{number}-{index}",
                    )
                    for index in range(math.ceil(lessons_here / LESSONS_PER_CONTRACT))
                ]
            world.institutions.append(institution)
            world.contracts[institution] = owned
            if number % 100 == 99:
                self.progress(f"setup: {number + 1} of {self.institutions} institutions")
        self.figures.setup_seconds = time.perf_counter() - started
        return world

    def ingest(self, world: _World) -> None:
        """Every institution reports its lessons, 1,000 per call, in the evening of day one."""
        ctx = self.ledger.escrow
        self.clock.advance(hours=10)  # 18:00 in Shanghai: classes have ended
        delivered = self.clock.now() - timedelta(minutes=30)
        latencies: list[float] = []
        started = time.perf_counter()
        for institution, lessons_here in zip(world.institutions, self.per_institution, strict=True):
            owned = world.contracts[institution]
            reports = [
                LessonReport(owned[n // LESSONS_PER_CONTRACT], f"L{n}", delivered, "T1")
                for n in range(lessons_here)
            ]
            for first in range(0, len(reports), BATCH):
                began = time.perf_counter()
                with self.ledger.sessions.begin() as session:
                    lessons.report_lessons(
                        session,
                        ctx,
                        institution_id=institution,
                        reports=reports[first : first + BATCH],
                    )
                latencies.append(time.perf_counter() - began)
            self.figures.ingest_lessons += lessons_here
            if len(latencies) % 100 == 0:
                self.progress(f"ingest: {self.figures.ingest_lessons:,} lessons")
        elapsed = time.perf_counter() - started
        self.figures.ingest_seconds = elapsed
        self.figures.ingest_lessons_per_s = self.figures.ingest_lessons / elapsed
        self.figures.ingest_batch_p50_ms = _percentile(latencies, 0.5) * 1000
        self.figures.ingest_batch_p99_ms = _percentile(latencies, 0.99) * 1000

    def analyze(self) -> None:
        """PostgreSQL: refresh the planner's statistics after a bulk phase (not timed).

        Autovacuum would do it within minutes of a million-row load; the bench measures the next
        phase at once, and with statistics of nearly empty tables the planner picks poor plans.
        """
        if self.figures.database != "postgresql":
            return
        with self.ledger.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("ANALYZE"))

    def settle(self) -> None:
        """Confirm every lesson by silence on one business date, then settle that date (T+1)."""
        ctx = self.ledger.escrow
        with self.ledger.readers() as session:
            closes = session.scalar(select(func.max(Lesson.confirm_by)))
        assert closes is not None, "no lessons were reported"
        self.clock.set(closes + timedelta(minutes=1))
        started = time.perf_counter()
        swept = run_sweeps(self.ledger.sessions, ctx)
        self.figures.confirm_seconds = time.perf_counter() - started
        self.figures.confirm_lessons = swept.confirmed
        confirmed_on: date = ctx.today()
        next_day = confirmed_on + timedelta(days=1)
        self.clock.set(
            datetime(next_day.year, next_day.month, next_day.day, 2, tzinfo=ctx.zone).astimezone(
                UTC
            )
        )
        self.progress(f"settle: {swept.confirmed:,} lessons confirmed on {confirmed_on}")
        started = time.perf_counter()
        report = settle(self.ledger.sessions, ctx)
        self.figures.settle_seconds = time.perf_counter() - started
        if report.failed:
            raise RuntimeError(
                f"settlement failed for {len(report.failed)} institutions: {report.failed}"
            )
        self.figures.settle_lessons = report.lessons
        self.figures.settle_batches = len(report.created)

    def verify(self) -> None:
        """``verify_database`` in a child process, its memory sampled as it runs; then the floor.

        Memory is the peak over the run of the child's PSS plus that of any worker it forks
        (``/proc/PID/smaps_rollup``): proportional set size counts a page shared by the two
        processes once, where adding their peak RSS would count it twice.
        """
        child = subprocess.Popen(
            [sys.executable, "-c", "from api.bench import verify_child; verify_child()"],
            env={**os.environ, "ESCROW_BENCH_DATABASE_URL": self.settings.database_url},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        peak_pss = 0
        while child.poll() is None:
            peak_pss = max(peak_pss, _pss_of_tree(child.pid))
            time.sleep(0.02)
        stdout, stderr = child.communicate()
        if child.returncode != 0:
            raise RuntimeError(f"the verify child failed:\n{stderr[-2000:]}")
        result = json.loads(stdout.strip().splitlines()[-1])
        figures = self.figures
        figures.verify_ok = result["ok"]
        figures.verify_entries = result["entries"]
        figures.verify_seconds = result["seconds"]
        figures.verify_entries_per_s = result["entries"] / result["seconds"]
        figures.verify_peak_rss_mb = result["peak_rss_bytes"] / 2**20
        figures.verify_peak_mb = peak_pss / 2**20 if peak_pss else figures.verify_peak_rss_mb
        entries, hashing = sha256_floor(self.ledger.engine)
        figures.floor_entries_per_s = entries / hashing
        figures.verify_floor_ratio = figures.verify_entries_per_s / figures.floor_entries_per_s

    def proofs(self) -> None:
        """Inclusion proofs for random leaves at the final size: generation (from the stored
        tree, leaf hash included, as the audit endpoint serves it) and verification."""
        rng = random.Random(8)
        generate: list[float] = []
        check: list[float] = []
        with self.ledger.readers() as session:
            tree = merkle_store.StoredTree(session)
            size = self.ledger.log.head(session).size
            root = tree.root(size)
            samples = min(PROOF_SAMPLES, size)
            for index in rng.sample(range(size), samples):
                began = time.perf_counter()
                leaf = session.scalar(select(LogEntry.hash).where(LogEntry.seq == index))
                proof = tree.inclusion_proof(index, size)
                generated = time.perf_counter()
                assert leaf is not None
                if not verifier.verify_inclusion(index, size, bytes(leaf), proof, root):
                    raise RuntimeError(f"the inclusion proof of leaf {index} does not verify")
                checked = time.perf_counter()
                generate.append(generated - began)
                check.append(checked - generated)
        figures = self.figures
        figures.proof_tree_size = size
        figures.proof_samples = samples
        figures.proof_p50_ms = _percentile(generate, 0.5) * 1000
        figures.proof_p99_ms = _percentile(generate, 0.99) * 1000
        figures.proof_verify_p50_ms = _percentile(check, 0.5) * 1000
        figures.proofs_per_s = samples / (sum(generate) + sum(check))

    def http(self, seconds: float) -> None:
        """Single-lesson reports and balance reads against a real uvicorn (``api.bench_http``)."""
        from api.bench_http import measure_http

        http = measure_http(self.settings, seconds=seconds)
        self.figures.http = http.to_json()
        self.figures.http_report_p99_ms = http.report_p99_ms
        self.figures.http_balance_rps = http.balance_rps


def _pss_of_tree(pid: int) -> int:
    """PSS in bytes of a process and its descendants (0 where /proc cannot tell: not Linux)."""
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        try:
            for line in Path(f"/proc/{current}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
                    break
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue  # the process ended between two reads
    return total


def verify_child() -> None:
    """Entry point of the verify child process: one JSON line with the run and its peak RSS."""
    engine = make_engine(os.environ["ESCROW_BENCH_DATABASE_URL"])
    try:
        started = time.perf_counter()
        report = verify_database(engine)
        seconds = time.perf_counter() - started
    finally:
        engine.dispose()
    # Linux reports KiB. On large logs verify_database forks a worker for half the replay: the
    # run's peak is counted as both processes' peaks added (they may not coincide: an upper bound).
    peak = (
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        + resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    ) * 1024
    sys.stdout.write(
        json.dumps(
            {
                "ok": report.ok,
                "entries": report.entries,
                "seconds": seconds,
                "peak_rss_bytes": peak,
                "first_problem": report.first.to_json() if report.first else None,
            }
        )
        + "\n"
    )


def scratch_database() -> tuple[str, tempfile.TemporaryDirectory[str]]:
    """A temporary SQLite file (and the folder that owns it, removed when it is cleaned up)."""
    folder = tempfile.TemporaryDirectory(prefix="escrow-bench-")
    return f"sqlite:///{folder.name}/bench.db", folder


def ensure_empty(database_url: str) -> None:
    """Refuse a database that already holds a log: the bench writes a million lessons into it."""
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            has_log = engine.dialect.has_table(conn, "log_entries")
            entries = (
                conn.execute(select(func.count()).select_from(LogEntry)).scalar_one()
                if has_log
                else 0
            )
    finally:
        engine.dispose()
    if entries:
        raise ValueError(
            f"{make_url(database_url).render_as_string(hide_password=True)} already holds "
            f"{entries} log entries; the bench needs an empty scratch database"
        )


def run(
    database_url: str | None,
    scale: int = DEFAULT_SCALE,
    *,
    http_seconds: float | None = 10.0,
    progress: Progress | None = None,
) -> Figures:
    """Run every phase in order on ``database_url`` (an empty database) or a scratch SQLite file.

    ``http_seconds=None`` skips the HTTP phase.
    """
    scratch = None
    if database_url is None:
        database_url, scratch = scratch_database()
    else:
        ensure_empty(database_url)
    keys = tempfile.TemporaryDirectory(prefix="escrow-bench-keys-")
    note = progress or (lambda _message: None)
    try:
        bench = Bench(database_url, Path(keys.name), scale, progress)
        try:
            note(f"setup: {bench.institutions} institutions, {bench.figures.contracts} contracts")
            world = bench.setup()
            note(f"ingest: {scale:,} lessons in batches of {BATCH:,}")
            bench.ingest(world)
            bench.analyze()
            bench.settle()
            bench.analyze()
            note("verify: full replay in a child process, then the SHA-256 floor")
            bench.verify()
            note("proofs: inclusion proofs at the final size")
            bench.proofs()
            if http_seconds is not None:
                note(f"http: {http_seconds:g} s of single-lesson reports, then balance reads")
                bench.http(http_seconds)
            return bench.figures
        finally:
            bench.close()
    finally:
        keys.cleanup()
        if scratch is not None:
            scratch.cleanup()
