"""``python -m api`` runs the ``escrow`` command line."""

from api.cli import main

main()
