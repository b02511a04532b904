"""The core of tuition-escrow: money, the double-entry journal and the hash-chained event log.

Nothing here imports from ``api`` or ``settlement``; they build on this package, never the reverse.
"""
