"""Escrow operations: parties, contracts, receipts, lessons, refunds, supervision.

Each operation is a function ``(session, ctx, ...)`` that takes the log lock first, reads and checks
what it needs, changes the projections and appends exactly one log entry per state change, all in
the caller's transaction. Nothing here commits. Tenant scoping is part of every signature: a parent
acts on their own contracts, an institution on its own, a bank on the institutions it holds, a
regulator within its jurisdiction; anything else is ``NotFound``.
"""
