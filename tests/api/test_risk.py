"""Risk grades and alerts over HTTP (regulators) and from the command line (`escrow risk`)."""

from __future__ import annotations

import json
from datetime import date

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from api.cli import app
from ledger.models import LogEntry
from ledger.risk import grade_all
from tests.api.conftest import Api
from tests.escrow.world import World, shanghai

runner = CliRunner()
DAY = "2026-09-01"


def _refund_a_quarter(world: World, institution: str, **terms: object) -> None:
    contract = world.paid_contract(institution, lessons=20, **terms)  # type: ignore[arg-type]
    world.approve(world.request_refund(contract, 5))


@pytest.fixture
def graded(api: Api) -> Api:
    """On 1 Sep the school (haishu) refunds a quarter of what it owes: C; the academy (yinzhou,
    academic) the same: D; the two others are quiet: A."""
    world = api.world
    _refund_a_quarter(world, world.school)
    _refund_a_quarter(world, world.academy, unit=5_000, class_size=20)
    world.set_clock(shanghai(2026, 9, 2, 2))
    grade_all(world.ledger.sessions, world.ctx, date(2026, 9, 1))
    return api


def test_current_grades_of_the_jurisdiction_with_reasons(graded: Api) -> None:
    world = graded.world
    everything = graded.get("regulator", "/v1/regulator/risk")
    assert everything.status_code == 200, everything.text
    grades = {item["institution_id"]: item for item in everything.json()["items"]}
    assert {k: v["grade"] for k, v in grades.items()} == {
        world.school: "C",
        world.academy: "D",
        world.beijing: "A",
        world.advance: "A",
    }
    school = grades[world.school]
    assert school["business_date"] == DAY
    assert school["score"] == 50
    assert [r["rule"] for r in school["reasons"]] == ["refund_share", "refund_surge"]
    assert school["reasons"][0] == {
        "rule": "refund_share",
        "value": 25,
        "threshold": 10,
        "comparison": ">=",
        "unit": "percent",
        "points": 20,
    }
    assert school["signals"]["liability_fen"] == 15 * 15_000
    red = graded.get("regulator", "/v1/regulator/risk", grade="D").json()["items"]
    assert [item["institution_id"] for item in red] == [world.academy]
    district = graded.get("district_regulator", "/v1/regulator/risk").json()["items"]
    assert {item["institution_id"] for item in district} == {world.school, world.advance}


def test_only_the_latest_grade_is_current_and_the_history_keeps_every_day(graded: Api) -> None:
    world = graded.world
    world.set_clock(shanghai(2026, 9, 3, 2))
    grade_all(world.ledger.sessions, world.ctx)  # 2 Sep
    current = graded.get("regulator", "/v1/regulator/risk").json()["items"]
    assert {item["business_date"] for item in current} == {"2026-09-02"}
    history = graded.get("regulator", f"/v1/regulator/risk/{world.school}")
    assert history.status_code == 200, history.text
    days = [(item["business_date"], item["grade"]) for item in history.json()["items"]]
    assert days == [(DAY, "C"), ("2026-09-02", "C")]
    page = graded.get("regulator", f"/v1/regulator/risk/{world.school}", limit=1).json()
    assert len(page["items"]) == 1
    assert page["next_cursor"]
    since = graded.get("regulator", f"/v1/regulator/risk/{world.school}", since="2026-09-02")
    assert [item["business_date"] for item in since.json()["items"]] == ["2026-09-02"]


def test_a_district_regulator_gets_404_outside_its_district(graded: Api) -> None:
    world = graded.world
    foreign = graded.get("district_regulator", f"/v1/regulator/risk/{world.academy}")
    missing = graded.get("district_regulator", "/v1/regulator/risk/ins_0000000000000000")
    assert foreign.status_code == missing.status_code == 404
    assert foreign.json()["type"] == missing.json()["type"]
    assert graded.get("district_regulator", f"/v1/regulator/risk/{world.school}").status_code == 200


def _alerts(api: Api, who: str, **params: object) -> list[dict[str, object]]:
    response = api.get(who, "/v1/regulator/alerts", **params)
    assert response.status_code == 200, response.text
    items: list[dict[str, object]] = response.json()["items"]
    return items


def test_alerts_are_listed_acknowledged_once_and_filtered(graded: Api) -> None:
    world = graded.world
    alerts = {a["institution_id"]: a for a in _alerts(graded, "regulator")}
    assert {k: (a["from_grade"], a["to_grade"]) for k, a in alerts.items()} == {
        world.school: (None, "C"),
        world.academy: (None, "D"),
    }
    assert [a["institution_id"] for a in _alerts(graded, "district_regulator")] == [world.school]
    academy_alert = str(alerts[world.academy]["id"])
    outside = graded.post(
        "district_regulator",
        f"/v1/regulator/alerts/{academy_alert}/acknowledge",
        {"note": "not mine"},
    )
    assert outside.status_code == 404
    done = graded.post(
        "regulator", f"/v1/regulator/alerts/{academy_alert}/acknowledge", {"note": "inspection"}
    )
    assert done.status_code == 200, done.text
    body = done.json()
    assert body["alert"]["acknowledged"] is True
    assert body["alert"]["acknowledged_by"] == f"regulator:{world.regulator}"
    assert body["alert"]["note"] == "inspection"
    assert body["receipt"]["seq"] > 0
    again = graded.post(
        "regulator", f"/v1/regulator/alerts/{academy_alert}/acknowledge", {"note": "again"}
    )
    assert again.status_code == 409
    assert [a["id"] for a in _alerts(graded, "regulator", acknowledged="true")] == [academy_alert]
    assert [a["institution_id"] for a in _alerts(graded, "regulator", acknowledged="false")] == [
        world.school
    ]
    events = graded.get("regulator", "/v1/regulator/events", type="risk.").json()["items"]
    assert [e["type"] for e in events].count("risk.alert_acknowledged") == 1
    assert [e["type"] for e in events].count("risk.graded") == 4


def _env(world: World) -> dict[str, str]:
    settings = world.ledger.settings
    return {
        "ESCROW_DATABASE_URL": world.ledger.engine.url.render_as_string(hide_password=False),
        "ESCROW_KEY_DIR": str(settings.key_dir),
        "ESCROW_LOG_NAME": settings.log_name,
        "ESCROW_POLICY_DIR": str(settings.policy_dir),
    }


def _graded_entries(world: World) -> int:
    with world.read() as session:
        return int(
            session.scalar(
                select(func.count()).select_from(LogEntry).where(LogEntry.type == "risk.graded")
            )
            or 0
        )


def test_escrow_risk_grades_the_date_once_and_prints_the_reasons(world: World) -> None:
    _refund_a_quarter(world, world.school)
    first = runner.invoke(app, ["risk", "--date", DAY, "--json"], env=_env(world))
    assert first.exit_code == 0, first.output
    document = json.loads(first.output)
    assert document["business_date"] == DAY
    grades = {g["institution_id"]: g for g in document["grades"]}
    assert grades[world.school]["grade"] == "C"
    assert [r["rule"] for r in grades[world.school]["reasons"]] == ["refund_share", "refund_surge"]
    assert len(document["alerts"]) == 1
    assert _graded_entries(world) == 4
    table = runner.invoke(app, ["risk", "--date", DAY], env=_env(world))
    assert table.exit_code == 0, table.output
    assert "refund_share 25 >= 10 percent (+20)" in table.output
    assert "graded now: 0, already graded: 4" in table.output
    assert _graded_entries(world) == 4
