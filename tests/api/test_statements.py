"""Statements over HTTP and the command line: upload, report, refusals, breaks, tenancy."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from api.cli import app
from tests.api.conftest import Api
from tests.api.test_cli_settlement import _env
from tests.escrow.world import World
from tests.settlement.statement_files import (
    EXPECTED_BREAKS,
    EXPECTED_RESULTS,
    Day,
    build_day,
    camt053,
    csv_statement,
)
from tests.settlement.test_reconcile import ACADEMY_CSV, BILLION_LAUGHS, EXTERNAL_ENTITY

XML = "application/xml"
CSV = "text/csv"


@pytest.fixture
def day(api: Api) -> Day:
    return build_day(api.world)


def _upload(
    api: Api, who: str, data: bytes, media: str = XML, key: str | None = None
) -> httpx.Response:
    headers = {**api.headers(who, key or str(uuid.uuid4())), "Content-Type": media}
    return api.client.post("/v1/bank/statements", content=data, headers=headers)


def _kinds(report: dict[str, Any]) -> set[str]:
    return {b["kind"] for b in report["breaks"]}


def _statements(api: Api, who: str = "bank") -> list[dict[str, Any]]:
    response = api.get(who, "/v1/bank/statements")
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def test_upload_answers_the_report_naming_every_break(api: Api, day: Day) -> None:
    data = camt053(day)
    first = _upload(api, "bank", data, key="stmt-1")
    assert first.status_code == 201, first.text
    report = first.json()
    assert report["created"] is True
    assert [line["result"] for line in report["lines"]] == EXPECTED_RESULTS
    assert _kinds(report) == EXPECTED_BREAKS
    assert report["difference_fen"] == day.closing_fen - day.ledger_closing_fen
    assert report["open_breaks"] == 5
    assert report["results"]["matched"] == 4
    assert report["receipt"]["seq"] == report["imported_seq"]
    # the same key replays; the same file under a new key answers the stored report
    replay = _upload(api, "bank", data, key="stmt-1")
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json() == report
    again = _upload(api, "bank", data)
    assert again.status_code == 200
    assert again.json()["created"] is False
    assert again.json()["id"] == report["id"]
    # the same key with another file is a conflict
    assert _upload(api, "bank", csv_statement(day), key="stmt-1").status_code == 409
    listed = _statements(api)
    assert [s["id"] for s in listed] == [report["id"]]
    one = api.get("bank", f"/v1/bank/statements/{report['id']}")
    assert one.status_code == 200
    assert one.json()["lines"] == report["lines"]
    assert one.json()["breaks"] == report["breaks"]


def test_csv_upload(api: Api, day: Day) -> None:
    response = _upload(api, "bank", csv_statement(day), CSV + "; charset=utf-8")
    assert response.status_code == 201, response.text
    assert response.json()["format"] == "csv"
    assert _kinds(response.json()) == EXPECTED_BREAKS


@pytest.mark.parametrize(
    ("who", "build", "media", "status", "problem"),
    [
        ("bank", lambda d: b"<Document><BkToCstmrStmt>", XML, 422, "statement-malformed"),
        ("bank", lambda d: BILLION_LAUGHS, XML, 422, "statement-unsafe-xml"),
        ("bank", lambda d: EXTERNAL_ENTITY, XML, 422, "statement-unsafe-xml"),
        ("bank", lambda d: camt053(d, currency="EUR"), XML, 422, "statement-currency"),
        ("bank", lambda d: b"a,b\n", CSV, 422, "statement-malformed"),
        ("other_bank", camt053, XML, 404, "not-found"),
        ("other_bank", csv_statement, CSV, 404, "not-found"),
        ("bank", lambda d: b"<" + b"x" * 1_048_576, XML, 413, "body-too-large"),
        ("bank", lambda d: b"x" * 1_000_001, CSV, 413, "statement-too-large"),
        ("bank", camt053, "application/json", 415, "unsupported-media-type"),
    ],
    ids=[
        "malformed",
        "billion-laughs",
        "external-entity",
        "eur",
        "bad-csv",
        "other-banks-account-xml",
        "other-banks-account-csv",
        "over-1-mib",
        "over-the-statement-limit",
        "json",
    ],
)
def test_refused_uploads_store_nothing(
    api: Api, day: Day, who: str, build: Any, media: str, status: int, problem: str
) -> None:
    response = _upload(api, who, build(day), media)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"].endswith("/" + problem)
    assert _statements(api) == []
    assert _statements(api, "other_bank") == []


def test_resolving_a_break_over_http(api: Api, day: Day) -> None:
    report = _upload(api, "bank", camt053(day)).json()
    target = report["breaks"][0]["id"]
    # another bank's break is not found, exactly like a missing one
    foreign = api.post("other_bank", f"/v1/bank/breaks/{target}/resolve", {"note": "x"})
    assert foreign.status_code == 404
    assert api.get("other_bank", f"/v1/bank/statements/{report['id']}").status_code == 404
    done = api.post("bank", f"/v1/bank/breaks/{target}/resolve", {"note": "booked on 3 Sep"})
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "resolved"
    assert done.json()["resolution"]["actor"] == f"bank:{api.world.bank}"
    assert done.json()["receipt"]["seq"] == done.json()["resolution"]["seq"]
    twice = api.post("regulator", f"/v1/regulator/breaks/{target}/resolve", {"note": "again"})
    assert twice.status_code == 409
    assert twice.json()["type"].endswith("/break-already-resolved")
    shown = api.get("bank", f"/v1/bank/statements/{report['id']}").json()
    assert shown["open_breaks"] == 4
    assert {b["id"]: b["status"] for b in shown["breaks"]}[target] == "resolved"
    events = api.get("regulator", "/v1/regulator/events", type="reconciliation.break_resolved")
    assert events.status_code == 200, events.text
    assert [e["payload"]["break"] for e in events.json()["items"]] == [target]


def test_regulators_see_open_breaks_of_their_institutions_only(api: Api, day: Day) -> None:
    school = _upload(api, "bank", camt053(day)).json()
    academy = _upload(api, "bank", ACADEMY_CSV, CSV).json()
    assert academy["institution_id"] == api.world.academy

    def listed(who: str) -> set[str]:
        response = api.get(who, "/v1/regulator/breaks")
        assert response.status_code == 200, response.text
        return {b["id"] for b in response.json()["items"]}

    school_breaks = {b["id"] for b in school["breaks"]}
    academy_breaks = {b["id"] for b in academy["breaks"]}
    assert listed("regulator") == school_breaks | academy_breaks
    assert listed("district_regulator") == school_breaks
    outside = min(academy_breaks)
    assert api.get("district_regulator", f"/v1/regulator/breaks/{outside}").status_code == 404
    response = api.post(
        "district_regulator", f"/v1/regulator/breaks/{outside}/resolve", {"note": "x"}
    )
    assert response.status_code == 404
    resolved = api.post("regulator", f"/v1/regulator/breaks/{outside}/resolve", {"note": "ok"})
    assert resolved.status_code == 200, resolved.text
    assert outside not in listed("regulator")
    assert api.get("regulator", f"/v1/regulator/breaks/{outside}").json()["status"] == "resolved"


runner = CliRunner()


def test_escrow_reconcile_prints_the_report(world: World, tmp_path: Any) -> None:
    day = build_day(world)
    path = tmp_path / "statement.xml"
    path.write_bytes(camt053(day))
    result = runner.invoke(app, ["reconcile", str(path), "--bank", world.bank], env=_env(world))
    assert result.exit_code == 0, result.output
    for word in ("amount_mismatch", "unmatched_bank", "duplicate", "unmatched_ledger"):
        assert word in result.output
    assert "balance_difference" in result.output
    again = runner.invoke(
        app, ["reconcile", str(path), "--bank", world.bank, "--json"], env=_env(world)
    )
    assert again.exit_code == 0, again.output
    document = json.loads(again.stdout)
    assert document["created"] is False
    assert {b["kind"] for b in document["breaks"]} == EXPECTED_BREAKS
    bad = tmp_path / "laughs.xml"
    bad.write_bytes(BILLION_LAUGHS)
    refused = runner.invoke(app, ["reconcile", str(bad), "--bank", world.bank], env=_env(world))
    assert refused.exit_code == 2
    assert "statement-unsafe-xml" in refused.output
