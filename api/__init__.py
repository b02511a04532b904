"""The interfaces of tuition-escrow: the FastAPI application and the ``escrow`` command line."""
