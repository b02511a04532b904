"""Work driven by the clock: T+1 settlement, deadline sweeps, the working-day calendar.

Imports point downward only: ``settlement`` may use ``ledger`` but never ``api``.
"""
