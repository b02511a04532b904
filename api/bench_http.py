"""The HTTP half of ``escrow bench``: single-lesson reports and balance reads against a real uvicorn.

Issue 8's targets are for one worker process on loopback: lesson reports (one lesson per POST,
with an ``Idempotency-Key``, as an institution's system sends them after each class) at 200
requests/s with p99 latency under 25 ms, and a parent's balance reads at 1,500 requests/s or more.

The reports are sent **open loop**: request ``i`` is due at ``start + i / rate`` whatever happened
to the earlier ones, and its latency counts from that due time, not from when the client got round
to sending it. A closed-loop client would wait out a stall and send less, hiding exactly the queueing
a burst of reports causes (coordinated omission). The balance reads measure capacity instead: a fixed
number of connections each send their next request as soon as the previous one is answered.

The server runs in its own process (``escrow serve``), so the client's work is not charged to it;
on a 2-core machine the two share the CPU, which is the situation the targets are stated for. The
server's own CPU time per request is reported beside the rates: on a shared machine it is the figure
that moves least. The
data (institution, parents, paid contracts, tokens) is created through the service layer with the
real clock, so it lands after anything an earlier, manually clocked part of the bench wrote.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from api.bench import ACTOR, LESSONS_PER_CONTRACT, new_institution, paid_contract
from ledger.access import Role, create_token
from ledger.config import Settings
from ledger.escrow import parties
from ledger.runtime import Ledger

WARMUP_REPORTS = 20
WARMUP_READS = 200
BALANCE_CONCURRENCY = 8
BALANCE_PATH = "/v1/parent/contracts"
REPORT_PATH = "/v1/institution/lessons"
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
SERVER_LOG_LEVEL = "warning"
"""No access log line per request: at 1,500 requests/s that is a measurable share of one core."""


@dataclass(frozen=True)
class HttpFigures:
    """What the HTTP bench measured; latencies in milliseconds."""

    report_rate_target: float
    """Reports per second the open-loop client was asked to send."""
    report_sent: int
    report_ok: int
    report_errors: int
    """Non-2xx answers and transport failures."""
    report_rps: float
    """Successful reports per second over the run (first due time to last answer)."""
    report_p50_ms: float
    report_p99_ms: float
    report_max_ms: float
    balance_concurrency: int
    """Connections of the closed-loop balance client."""
    balance_ok: int
    balance_errors: int
    balance_rps: float
    balance_p50_ms: float
    balance_p99_ms: float
    report_server_cpu_ms: float | None
    """Server process CPU time per report (user + system; None where /proc is missing): unlike
    the latencies, it barely moves when other work shares the machine."""
    balance_server_cpu_ms: float | None
    first_error: str | None
    """The first failure seen, for the operator (and the smoke test) to read."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Fixture:
    """What the clients need: tokens and one report body per lesson to send."""

    institution_token: str
    parent_token: str
    reports: list[bytes]


@dataclass
class _Tally:
    latencies: list[float]
    ok: int = 0
    errors: int = 0
    first_error: str | None = None

    def failed(self, what: str) -> None:
        self.errors += 1
        if self.first_error is None:
            self.first_error = what


def measure_http(
    settings: Settings,
    *,
    seconds: float = 10.0,
    rate: float = 200.0,
    concurrency: int = BALANCE_CONCURRENCY,
) -> HttpFigures:
    """Serve ``settings``' (migrated) database with uvicorn, then send ``seconds`` of lesson
    reports at ``rate`` per second and ``seconds`` of balance reads over ``concurrency``
    connections; the data it needs is created first, beside whatever the database holds."""
    if seconds <= 0 or rate <= 0 or concurrency < 1:
        raise ValueError("seconds and rate must be positive, concurrency at least 1")
    count = max(1, math.ceil(seconds * rate))
    fixture = _prepare(settings, count + WARMUP_REPORTS)
    with _server(settings) as (host, port, pid):
        return asyncio.run(_measure(host, port, pid, fixture, count, rate, seconds, concurrency))


# --- data ------------------------------------------------------------------------------------


def _prepare(settings: Settings, lessons: int) -> _Fixture:
    """An institution with enough paid contracts for ``lessons`` reports, a parent to read a
    balance, and a token for each, all through the service layer on the real clock."""
    ledger = Ledger.open(settings)
    try:
        ctx = ledger.escrow
        with ledger.sessions.begin() as s:
            bank = parties.register_bank(s, ctx, name="bench bank", actor=ACTOR).id
            institution = new_institution(s, ctx, bank_id=bank, tag="http")
        now = ledger.clock.now()
        start = ctx.local_date(now)
        contract_ids: list[str] = []
        reader = ""
        for _ in range(math.ceil(lessons / LESSONS_PER_CONTRACT)):
            with ledger.sessions.begin() as s:
                parent = parties.register_parent(
                    s, ctx, name="bench parent", phone=None, actor=ACTOR
                ).id
                contract = paid_contract(
                    s,
                    ctx,
                    parent_id=parent,
                    institution_id=institution,
                    bank_id=bank,
                    start=start,
                    reference=f"BENCH-HTTP-{len(contract_ids)}",
                )
                contract_ids.append(contract)
                reader = reader or parent
        with ledger.sessions.begin() as s:
            _, institution_token = create_token(
                s, ctx, role=Role.INSTITUTION.value, principal_id=institution, actor=ACTOR
            )
            _, parent_token = create_token(
                s, ctx, role=Role.PARENT.value, principal_id=reader, actor=ACTOR
            )
    finally:
        ledger.close()
    # Taught today, after the course started and before any report is sent.
    delivered = now.isoformat()
    batch = uuid.uuid4().hex[:8]
    reports = [
        json.dumps(
            {
                "contract_id": contract_ids[i // LESSONS_PER_CONTRACT],
                "ref": f"bench-{batch}-{i}",
                "delivered_at": delivered,
                "teacher_id": "T-bench",
            }
        ).encode()
        for i in range(lessons)
    ]
    return _Fixture(institution_token, parent_token, reports)


# --- server ----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _server_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        ESCROW_DATABASE_URL=settings.database_url,
        ESCROW_KEY_DIR=str(settings.key_dir),
        ESCROW_LOG_NAME=settings.log_name,
        ESCROW_ENVIRONMENT=settings.environment.value,
        ESCROW_TIMEZONE=settings.timezone,
        ESCROW_POLICY_PROFILE=settings.policy_profile,
        ESCROW_SCHEDULER="false",
    )
    if settings.policy_dir is not None:
        env["ESCROW_POLICY_DIR"] = str(settings.policy_dir)
    return env


@contextmanager
def _server(settings: Settings) -> Iterator[tuple[str, int, int]]:
    """``escrow serve`` on a free loopback port, ready; stopped with SIGTERM on the way out."""
    port = _free_port()
    command = [
        sys.executable,
        "-m",
        "api",
        "serve",
        "--no-scheduler",
        "--no-migrate",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        SERVER_LOG_LEVEL,
    ]
    base_url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as output:
        process = subprocess.Popen(
            command, env=_server_env(settings), stdout=output, stderr=subprocess.STDOUT
        )
        try:
            _wait_ready(process, base_url, output)
            yield "127.0.0.1", port, process.pid
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def _wait_ready(process: subprocess.Popen[bytes], base_url: str, output: Any) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output.seek(0)
            text = output.read().decode(errors="replace")[-4000:]
            raise RuntimeError(f"escrow serve exited with {process.returncode}:\n{text}")
        try:
            with urllib.request.urlopen(f"{base_url}/readyz", timeout=2.0) as answer:
                if answer.status == 200:
                    return
        except OSError:  # refused while starting; HTTPError (503) until the schema is current
            pass
        time.sleep(0.1)
    raise RuntimeError(f"escrow serve was not ready within {READY_TIMEOUT_S:.0f} s")


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far, from /proc (None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _per_request_ms(before: float | None, after: float | None, requests: int) -> float | None:
    if before is None or after is None or requests == 0:
        return None
    return round((after - before) * 1000 / requests, 3)


# --- clients ---------------------------------------------------------------------------------


def _percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of sorted values (0 for none)."""
    if not ordered:
        return 0.0
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


class _Connections:
    """Keep-alive HTTP/1.1 connections to the server, and one request at a time on each.

    A minimal client on purpose: httpx spends about a millisecond of CPU per request, so on the
    two cores the server shares with it, it could not send the 1,500 reads/s the target asks for
    and the figure would measure the client. Requests are prebuilt bytes; a response is read by
    its Content-Length (which every answer of this API carries).
    """

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.opened: list[asyncio.StreamWriter] = []

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        """Send one request; its status and body (an OSError or ValueError on failure).

        A kept-alive connection the server closed meanwhile (uvicorn drops idle ones after 5 s)
        fails before any answer arrives: the request is then sent again on a new connection, as
        any HTTP client does (a report's Idempotency-Key makes that safe in any case).
        """
        while self.idle:
            reader, writer = self.idle.pop()
            try:
                return await self._exchange(reader, writer, raw)
            except (ConnectionError, asyncio.IncompleteReadError) as error:
                if isinstance(error, asyncio.IncompleteReadError) and error.partial:
                    raise
        reader, writer = await asyncio.open_connection(self.host, self.port)
        self.opened.append(writer)
        return await self._exchange(reader, writer, raw)

    async def _exchange(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: bytes
    ) -> tuple[int, bytes]:
        try:
            writer.write(raw)
            head = await reader.readuntil(b"\r\n\r\n")
            status_line, *header_lines = head.decode("latin-1").split("\r\n")
            status = int(status_line.split(" ", 2)[1])
            length: int | None = None
            keep = True
            for line in header_lines:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    length = int(value)
                elif name == "connection" and value.strip().lower() == "close":
                    keep = False
            if length is None:
                raise ValueError(f"an answer without Content-Length: {status_line}")
            body = await reader.readexactly(length)
        except BaseException:
            writer.close()
            raise
        if keep:
            self.idle.append((reader, writer))
        else:
            writer.close()
        return status, body

    async def close(self) -> None:
        for writer in self.opened:
            writer.close()
        for writer in self.opened:
            try:
                await writer.wait_closed()
            except OSError:
                pass


def _raw(method: str, path: str, host: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def _measure(
    host: str,
    port: int,
    pid: int,
    fixture: _Fixture,
    count: int,
    rate: float,
    seconds: float,
    concurrency: int,
) -> HttpFigures:
    connections = _Connections(host, port)
    where = f"{host}:{port}"
    # Each report under its own Idempotency-Key: every one is a new effect.
    posts = [
        _raw(
            "POST",
            REPORT_PATH,
            where,
            {
                "Authorization": f"Bearer {fixture.institution_token}",
                "Content-Type": "application/json",
                "Idempotency-Key": str(uuid.uuid4()),
            },
            body,
        )
        for body in fixture.reports
    ]
    read = _raw("GET", BALANCE_PATH, where, {"Authorization": f"Bearer {fixture.parent_token}"})
    try:
        # Warm-up (not counted): the server's first requests import and compile lazily.
        warm = _Tally([])
        for raw in posts[:WARMUP_REPORTS]:
            await _send(connections, "POST", raw, time.perf_counter(), warm)
        await _closed_loop(connections, read, WARMUP_READS, None, concurrency, warm)
        if warm.errors:
            raise RuntimeError(f"the warm-up requests failed: {warm.first_error}")

        reports = _Tally([])
        cpu_start = _cpu_seconds(pid)
        started = time.perf_counter()
        tasks: list[asyncio.Task[None]] = []
        for i, raw in enumerate(posts[WARMUP_REPORTS : WARMUP_REPORTS + count]):
            due = started + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(_send(connections, "POST", raw, due, reports)))
        await asyncio.gather(*tasks)
        report_seconds = time.perf_counter() - started
        cpu_reports = _cpu_seconds(pid)

        reads = _Tally([])
        begun = time.perf_counter()
        await _closed_loop(connections, read, None, begun + seconds, concurrency, reads)
        read_seconds = time.perf_counter() - begun
        cpu_reads = _cpu_seconds(pid)
    finally:
        await connections.close()

    report_latencies = sorted(reports.latencies)
    read_latencies = sorted(reads.latencies)
    return HttpFigures(
        report_rate_target=rate,
        report_sent=count,
        report_ok=reports.ok,
        report_errors=reports.errors,
        report_rps=round(reports.ok / report_seconds, 1),
        report_p50_ms=round(_percentile(report_latencies, 50) * 1000, 2),
        report_p99_ms=round(_percentile(report_latencies, 99) * 1000, 2),
        report_max_ms=round((report_latencies[-1] if report_latencies else 0.0) * 1000, 2),
        balance_concurrency=concurrency,
        balance_ok=reads.ok,
        balance_errors=reads.errors,
        balance_rps=round(reads.ok / read_seconds, 1),
        balance_p50_ms=round(_percentile(read_latencies, 50) * 1000, 2),
        balance_p99_ms=round(_percentile(read_latencies, 99) * 1000, 2),
        report_server_cpu_ms=_per_request_ms(cpu_start, cpu_reports, reports.ok + reports.errors),
        balance_server_cpu_ms=_per_request_ms(cpu_reports, cpu_reads, reads.ok + reads.errors),
        first_error=reports.first_error or reads.first_error,
    )


async def _send(
    connections: _Connections, method: str, raw: bytes, since: float, tally: _Tally
) -> None:
    """One request; a non-2xx answer or a failure is an error, latency counts from ``since``."""
    try:
        status, body = await connections.request(raw)
    except (OSError, ValueError, asyncio.IncompleteReadError) as error:
        tally.failed(f"{method}: {type(error).__name__}: {error}")
        return
    tally.latencies.append(time.perf_counter() - since)
    if 200 <= status < 300:
        tally.ok += 1
    else:
        tally.failed(f"{method}: {status} {body[:500].decode(errors='replace')}")


async def _closed_loop(
    connections: _Connections,
    raw: bytes,
    total: int | None,
    until: float | None,
    concurrency: int,
    tally: _Tally,
) -> None:
    """``concurrency`` clients reading the parent's balance back to back, for ``total``
    requests or until ``until`` (perf_counter time)."""
    remaining = [total]

    async def client() -> None:
        while until is None or time.perf_counter() < until:
            if remaining[0] is not None:
                if remaining[0] <= 0:
                    return
                remaining[0] -= 1
            await _send(connections, "GET", raw, time.perf_counter(), tally)

    await asyncio.gather(*(client() for _ in range(concurrency)))
