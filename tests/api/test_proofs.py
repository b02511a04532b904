"""Checkpoints and proofs over HTTP: what a parent keeps, and what a bank or regulator checks.

Every proof here is checked with ``ledger.verifier`` alone (the offline verifier), against the
checkpoint's signed root and the log key published at ``/v1/audit/public-key``, never against
values the same response asserts about itself.
"""

from __future__ import annotations

import base64
import json
from itertools import combinations_with_replacement
from typing import Any

from sqlalchemy import select

from ledger import verifier
from ledger.checkpoints import SignedCheckpoint
from ledger.entities import Contract
from ledger.entities import Receipt as BankReceipt
from ledger.models import LogEntry
from tests.api.conftest import Api


def _log_key(api: Api) -> verifier.VerifierKey:
    response = api.get(None, "/v1/audit/public-key")
    assert response.status_code == 200
    return verifier.VerifierKey.parse(response.json()["verifier_key"])


def _checkpoint(api: Api) -> dict[str, Any]:
    response = api.post("regulator", "/v1/audit/checkpoints")
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def _signed_root(note_text: str, key: verifier.VerifierKey) -> tuple[int, bytes]:
    note = verifier.Note.parse(note_text)
    assert note.signed_by(key)
    body = verifier.Checkpoint.parse(note.body)
    assert body.origin == key.name
    return body.size, body.root


def _log_size(api: Api) -> int:
    with api.world.read() as session:
        return len(list(session.scalars(select(LogEntry.seq))))


def _stored_checkpoints(api: Api) -> int:
    with api.world.read() as session:
        return len(list(session.scalars(select(SignedCheckpoint.id))))


def test_the_latest_checkpoint_is_public_as_json_and_as_a_signed_note(api: Api) -> None:
    missing = api.get(None, "/v1/audit/checkpoints/latest")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    issued = _checkpoint(api)
    latest = api.get(None, "/v1/audit/checkpoints/latest")
    assert latest.status_code == 200
    assert latest.json() == issued
    assert issued["reason"] == "request"
    size, root = _signed_root(issued["note"], _log_key(api))
    assert (size, base64.b64encode(root).decode()) == (issued["size"], issued["root"])
    assert issued["cosignatures"] == 0
    # No cosignature: witnessed only when the policy asks for none (the default quorum, 0).
    assert issued["witnessed"] is (api.world.ledger.settings.witness_quorum == 0)

    note = api.get(None, "/v1/audit/checkpoints/latest", format="note")
    assert note.status_code == 200
    assert note.headers["content-type"].startswith("text/plain")
    assert note.text == issued["note"]
    assert api.get(None, "/v1/audit/checkpoints/latest", format="xml").status_code == 422


def test_a_regulator_request_is_idempotent_and_always_fresh(api: Api) -> None:
    first = api.post("regulator", "/v1/audit/checkpoints", key="cp-1")
    again = api.post("regulator", "/v1/audit/checkpoints", key="cp-1")
    assert again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    other = api.post("regulator", "/v1/audit/checkpoints", key="cp-2").json()
    assert other["id"] != first.json()["id"]
    assert other["size"] == first.json()["size"]
    assert _stored_checkpoints(api) == 2
    assert api.post("bank", "/v1/audit/checkpoints").status_code == 403
    assert api.post("admin", "/v1/audit/checkpoints").status_code == 403


def test_the_checkpoint_list_pages_by_issue_order(api: Api) -> None:
    world = api.world
    issued = []
    for _n in range(5):
        world.paid_contract(world.school, lessons=10, unit=4_000, class_size=20)
        issued.append(_checkpoint(api)["id"])
    seen: list[int] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = api.get("bank", "/v1/audit/checkpoints", **params)
        assert page.status_code == 200, page.text
        seen += [item["id"] for item in page.json()["items"]]
        pages += 1
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == issued
    assert pages == 3
    sizes = [item["size"] for item in api.get("admin", "/v1/audit/checkpoints").json()["items"]]
    assert sizes == sorted(sizes)
    assert len(set(sizes)) == 5
    assert api.get("regulator", "/v1/audit/checkpoints").status_code == 200
    assert api.get("parent", "/v1/audit/checkpoints").status_code == 403
    assert api.get(None, "/v1/audit/checkpoints").status_code == 401
    forged = api.get("bank", "/v1/audit/checkpoints", cursor="bm90LWEtY3Vyc29y")
    assert forged.status_code == 422


def test_consistency_proofs_verify_between_every_pair_of_checkpoints(api: Api) -> None:
    world = api.world
    key = _log_key(api)
    held = []
    for n in range(4):
        contract = world.paid_contract(world.school, lessons=10, unit=4_000, class_size=20)
        world.report(contract, n + 1)
        held.append(_signed_root(_checkpoint(api)["note"], key))
    for (old, old_root), (new, new_root) in combinations_with_replacement(held, 2):
        for who in ("bank", "regulator"):
            response = api.get(who, "/v1/audit/proofs/consistency", old=old, new=new)
            assert response.status_code == 200, response.text
            body = response.json()
            proof = [base64.b64decode(p) for p in body["proof"]]
            # Checked against the roots the caller already holds, not the ones returned.
            assert verifier.verify_consistency(old, new, old_root, new_root, proof)
            assert body["new_checkpoint"] is not None
            if old < new:
                assert not verifier.verify_consistency(old, new, new_root, new_root, proof)
    log_size = _log_size(api)
    assert api.get("bank", "/v1/audit/proofs/consistency", old=1, new=log_size).status_code == 200
    for bad in ({"old": 3, "new": 2}, {"old": 1, "new": log_size + 1}, {"old": -1, "new": 2}):
        response = api.get("bank", "/v1/audit/proofs/consistency", **bad)
        assert response.status_code == 422, (bad, response.text)
        assert response.headers["content-type"] == "application/problem+json"
    assert api.get("bank", "/v1/audit/proofs/consistency", old=1).status_code == 422
    assert api.get("admin", "/v1/audit/proofs/consistency", old=1, new=2).status_code == 403


def test_inclusion_proofs_verify_for_any_entry(api: Api) -> None:
    world = api.world
    world.paid_contract(world.school, lessons=10, unit=4_000, class_size=20)
    size, root = _signed_root(_checkpoint(api)["note"], _log_key(api))
    with world.read() as session:
        hashes = {seq: bytes(h) for seq, h in session.execute(select(LogEntry.seq, LogEntry.hash))}
    for seq in range(size):
        response = api.get("regulator", "/v1/audit/proofs/inclusion", seq=seq)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["tree_size"] == size
        assert body["checkpoint"] is not None
        assert bytes.fromhex(body["leaf_hash"]) == hashes[seq]
        path = [base64.b64decode(p) for p in body["audit_path"]]
        assert verifier.verify_inclusion(seq, size, hashes[seq], path, root)
        assert not verifier.verify_inclusion(seq, size, hashes[(seq + 1) % size], path, root)
    small = api.get("bank", "/v1/audit/proofs/inclusion", seq=2, size=3).json()
    assert small["checkpoint"] is None
    assert small["tree_size"] == 3
    for bad in ({"seq": size, "size": size}, {"seq": 0, "size": _log_size(api) + 1}, {"seq": -1}):
        assert api.get("bank", "/v1/audit/proofs/inclusion", **bad).status_code == 422, bad


def _verify_bundle(bundle: dict[str, Any], log_key: verifier.VerifierKey) -> None:
    """What ``escrow verify --proof`` does, with the log key pinned from elsewhere."""
    assert bundle["format"] == "tuition-escrow/inclusion-proof/v1"
    entry = bundle["entry"]
    leaf = verifier.leaf_hash(entry["body"].encode())
    assert leaf.hex() == entry["hash"]
    assert json.loads(entry["body"])["seq"] == entry["seq"]
    size, root = _signed_root(bundle["checkpoint"], log_key)
    assert size == bundle["tree_size"]
    path = [base64.b64decode(p) for p in bundle["audit_path"]]
    assert verifier.verify_inclusion(entry["seq"], size, leaf, path, root)
    assert bundle["log_keys"] == [log_key.encode()]
    assert bundle["witness_keys"] == []
    assert bundle["witness_quorum"] >= 0


def test_a_parent_gets_a_self_contained_bundle_that_verifies_offline(api: Api) -> None:
    world = api.world
    contract_id = world.paid_contract(world.school, lessons=10, unit=4_000, class_size=20)
    (lesson,) = world.report(contract_id, 1)
    world.confirm(lesson.id)
    with world.read() as session:
        contract = session.get(Contract, contract_id)
        assert contract is not None
        receipt = session.scalars(
            select(BankReceipt).where(BankReceipt.contract_id == contract_id)
        ).one()
        seqs = [contract.created_seq, receipt.seq, lesson.reported_seq]
    log_key = _log_key(api)
    assert _stored_checkpoints(api) == 0

    bundle = api.get("parent", f"/v1/parent/proofs/{receipt.seq}")
    assert bundle.status_code == 200, bundle.text
    _verify_bundle(bundle.json(), log_key)
    assert _stored_checkpoints(api) == 1  # none covered the entry: one was issued for it
    for seq in seqs:
        again = api.get("parent", f"/v1/parent/proofs/{seq}").json()
        _verify_bundle(again, log_key)
        assert again["checkpoint"] == bundle.json()["checkpoint"]
    assert _stored_checkpoints(api) == 1  # the latest checkpoint already covers them

    # A tampered bundle fails: another entry's body under this audit path.
    tampered = bundle.json()
    tampered["entry"]["body"] = tampered["entry"]["body"].replace('"seq":', '"seq": ', 1)
    leaf = verifier.leaf_hash(tampered["entry"]["body"].encode())
    size, root = _signed_root(tampered["checkpoint"], log_key)
    path = [base64.b64decode(p) for p in tampered["audit_path"]]
    assert not verifier.verify_inclusion(receipt.seq, size, leaf, path, root)


def test_another_familys_entries_answer_404_like_missing_ones(api: Api) -> None:
    world = api.world
    theirs = world.paid_contract(
        world.academy,
        lessons=10,
        unit=4_000,
        class_size=20,
        parent=world.other_parent,
        student=world.other_student,
    )
    mine = world.paid_contract(world.school, lessons=10, unit=4_000, class_size=20)
    their_seq = world.get(Contract, theirs).created_seq
    my_seq = world.get(Contract, mine).created_seq
    for who, seq in (("parent", their_seq), ("other_parent", my_seq), ("parent", 0)):
        response = api.get(who, f"/v1/parent/proofs/{seq}")
        assert response.status_code == 404, (who, seq, response.text)
    missing = api.get("parent", "/v1/parent/proofs/999999")
    foreign = api.get("parent", f"/v1/parent/proofs/{their_seq}")
    assert missing.json()["type"] == foreign.json()["type"]
    assert missing.json()["title"] == foreign.json()["title"]
    assert api.get("other_parent", f"/v1/parent/proofs/{their_seq}").status_code == 200
    assert api.get("parent", "/v1/parent/proofs/-1").status_code == 422
    assert api.get("bank", f"/v1/parent/proofs/{my_seq}").status_code == 403
