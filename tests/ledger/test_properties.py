"""Property: random sequences of balanced entries keep every journal invariant, and replay equals state.

A Hypothesis state machine appends random entries (single and in batches), some of which overdraw a
non-negative account and must be refused whole. A pure-Python model predicts every outcome; after each
step the stored balances and the log size must equal the model, and at the end of every run
``verify_database`` must rebuild exactly the stored state.
"""

from __future__ import annotations

from collections import defaultdict

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from sqlalchemy import select

from ledger.accounts import AccountCode
from ledger.errors import InsufficientFunds
from ledger.journal import Posting
from ledger.log import Event
from ledger.models import Account
from ledger.money import Money
from ledger.runtime import Ledger
from ledger.verify import verify_database

INSTITUTIONS = ("inst-a", "inst-b")
CONTRACTS = ("ctr-1", "ctr-2", "ctr-3")
ACCOUNTS = tuple(
    [
        f"{kind}:{i}"
        for i in INSTITUTIONS
        for kind in ("escrow", "pending", "releasable", "payable", "refund_payable", "advance")
    ]
    + [f"contract:{c}" for c in CONTRACTS]
)
amounts = st.integers(min_value=1, max_value=50_000)


@st.composite
def entries(draw: st.DrawFn) -> Event:
    """A balanced entry of 2-5 legs over random accounts: free legs plus one balancing leg."""
    legs = draw(
        st.lists(
            st.tuples(st.sampled_from(ACCOUNTS), amounts, st.booleans()), min_size=1, max_size=4
        )
    )
    postings = [
        Posting.debit(code, Money(fen)) if debit else Posting.credit(code, Money(fen))
        for code, fen, debit in legs
    ]
    total = sum(p.amount.amount for p in postings)
    if total == 0:
        return Event("prop.entry", "system", {"legs": len(postings)}, tuple(postings))
    balancing = Posting(draw(st.sampled_from(ACCOUNTS)), Money(-total))
    return Event("prop.entry", "system", {"legs": len(postings) + 1}, (*postings, balancing))


def receipts() -> st.SearchStrategy[Event]:
    """Money arriving for a contract: always acceptable, so runs build up real balances."""
    return st.builds(
        lambda inst, ctr, fen: Event(
            "prop.receipt",
            "bank:b",
            {"amount": fen},
            (
                Posting.debit(f"escrow:{inst}", Money(fen)),
                Posting.credit(f"contract:{ctr}", Money(fen)),
            ),
        ),
        st.sampled_from(INSTITUTIONS),
        st.sampled_from(CONTRACTS),
        amounts,
    )


def _sign(code: str) -> int:
    return AccountCode.parse(code).cls.type.normal_side.sign


class JournalMachine(RuleBasedStateMachine):
    ledger: Ledger

    def __init__(self) -> None:
        super().__init__()
        with self.ledger.readers() as session:
            self.size = self.ledger.log.head(session).size
            self.model: dict[str, int] = defaultdict(int)  # normal-side balances
            for code, bal in session.execute(select(Account.code, Account.balance)):
                self.model[code] = bal

    def _predict(self, events: list[Event]) -> dict[str, int] | None:
        """The balances after the batch, or None if any entry overdraws (whole batch refused)."""
        model = dict(self.model)
        for entry in events:
            for posting in entry.postings:
                code = posting.account
                model[code] = model.get(code, 0) + _sign(code) * posting.amount.amount
            if any(model[p.account] < 0 for p in entry.postings):
                return None
        return model

    def _append(self, events: list[Event]) -> None:
        expected = self._predict(events)
        try:
            with self.ledger.sessions.begin() as session:
                self.ledger.log.append_many(session, events)
        except InsufficientFunds:
            assert expected is None, "an acceptable batch was refused"
            event("batch refused")
            return
        assert expected is not None, "an overdrawing batch was accepted"
        event("batch accepted")
        self.model = defaultdict(int, expected)
        self.size += len(events)

    @rule(event=receipts())
    def receive(self, event: Event) -> None:
        self._append([event])

    @rule(event=entries())
    def post(self, event: Event) -> None:
        self._append([event])

    @rule(batch=st.lists(st.one_of(entries(), receipts()), min_size=1, max_size=6))
    def post_batch(self, batch: list[Event]) -> None:
        self._append(batch)

    @invariant()
    def stored_state_equals_the_model(self) -> None:
        with self.ledger.readers() as session:
            assert self.ledger.log.head(session).size == self.size
            stored = {
                code: bal for code, bal in session.execute(select(Account.code, Account.balance))
            }
        assert stored == {code: bal for code, bal in self.model.items() if code in stored}
        assert all(bal == 0 for code, bal in self.model.items() if code not in stored)
        assert all(bal >= 0 for bal in stored.values())
        # Double entry: debit-positive sums over all accounts cancel out.
        assert sum(_sign(code) * bal for code, bal in stored.items()) == 0

    def teardown(self) -> None:
        report = verify_database(self.ledger.engine, invariants=False)
        assert report.ok, report.problems


def test_random_entries_keep_every_invariant_and_replay_equals_state(ledger: Ledger) -> None:
    JournalMachine.ledger = ledger
    run_state_machine_as_test(
        JournalMachine,
        settings=settings(
            max_examples=25,
            stateful_step_count=15,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
