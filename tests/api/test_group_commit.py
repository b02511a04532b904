"""Group commit: requests queued behind a write share one transaction, each in its own savepoint.

A request that fails answers its own error and leaves the others of its group committed; a replay
inside the group sees the record written before it; a failing commit fails the whole group.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import BaseModel
from sqlalchemy import func, select

from api.writes import GroupCommit, IdempotencyKeyReused, Tx, _Job
from ledger.access import Principal, Role
from ledger.errors import InvalidRequest
from ledger.models import LogEntry
from ledger.verify import verify_database
from tests.escrow.world import World

PRINCIPAL = Principal(Role.ADMIN, "tests", "tok")


class Done(BaseModel):
    seq: int


def _record(name: str) -> Callable[[Tx], Done]:
    def work(tx: Tx) -> Done:
        return Done(seq=tx.ctx.record(tx.session, "test.grouped", "admin:tests", {"n": name}).seq)

    return work


def _refuse(tx: Tx) -> Done:
    tx.ctx.record(tx.session, "test.grouped", "admin:tests", {"n": "rolled back"})
    raise InvalidRequest("refused after writing an entry: its savepoint takes the entry back")


def _job(key: str, digest: bytes, work: Callable[[Tx], BaseModel]) -> _Job:
    return _Job(PRINCIPAL, key, digest, work, 201, None)


def _entries(world: World) -> int:
    with world.ledger.readers() as session:
        return int(session.scalar(select(func.count()).select_from(LogEntry)) or 0)


def test_queued_requests_commit_together_and_fail_alone(world: World) -> None:
    group = GroupCommit(world.ledger)
    groups: list[int] = []
    lead = group._lead

    def counting_lead() -> None:
        groups.append(len(group._queue))
        lead()

    group._lead = counting_lead  # type: ignore[method-assign]
    release = threading.Event()

    def blocking(tx: Tx) -> Done:
        release.wait(10)
        return _record("first")(tx)

    queued = [
        _job("k-b", b"b", _record("b")),
        _job("k-c", b"c", _refuse),
        _job("k-b", b"b", _record("never run: a replay of b")),
        _job("k-b", b"other", _record("never run: key reused")),
        _job("k-f", b"f", _record("f")),
    ]
    jobs = [_job("k-a", b"a", blocking), *queued]
    answers: dict[int, Any] = {}

    def submit(index: int) -> None:
        try:
            answers[index] = group.submit(jobs[index])
        except Exception as error:  # noqa: BLE001 - the answer under test
            answers[index] = error

    before = _entries(world)
    threads = [threading.Thread(target=submit, args=(index,)) for index in range(len(jobs))]
    threads[0].start()
    while not group._leader.locked():
        time.sleep(0.001)
    for index, thread in enumerate(threads[1:], start=1):
        thread.start()
        while len(group._queue) < index:  # queue them in order behind the blocked leader
            time.sleep(0.001)
    release.set()
    for thread in threads:
        thread.join(10)

    assert groups[:2] == [1, 5]  # the leader alone, then everything that queued behind it
    assert answers[0].status_code == 201
    assert answers[1].status_code == 201
    assert isinstance(answers[2], InvalidRequest)
    assert answers[3].status_code == 201
    assert answers[3].headers["Idempotent-Replayed"] == "true"
    assert answers[3].body == answers[1].body
    assert isinstance(answers[4], IdempotencyKeyReused)
    assert answers[5].status_code == 201
    assert _entries(world) == before + 3  # a, b and f; the refused entry was rolled back
    assert verify_database(world.ledger.engine).ok


def test_a_failed_commit_fails_every_request_of_the_group(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    group = GroupCommit(world.ledger)
    before = _entries(world)
    real = group.ledger.sessions

    class FailingCommit:
        def begin(self) -> Any:
            session = real()
            context = session.begin()

            class Wrapped:
                def __enter__(self) -> Any:
                    context.__enter__()
                    return session

                def __exit__(self, *exc: object) -> None:
                    if exc[0] is None:
                        session.rollback()
                        session.close()
                        raise OSError("disk full")
                    context.__exit__(*exc)
                    session.close()

            return Wrapped()

    monkeypatch.setattr(group.ledger, "sessions", FailingCommit())
    with pytest.raises(OSError, match="disk full"):
        group.submit(_job("k-x", b"x", _record("x")))
    monkeypatch.setattr(group.ledger, "sessions", real)
    assert _entries(world) == before
    # the key was not used: the same request succeeds once the disk is back
    assert group.submit(_job("k-x", b"x", _record("x"))).status_code == 201
